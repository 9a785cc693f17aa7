"""SetCriterion: losses against values worked out by hand, deep supervision and normalisation."""

import math

import pytest
import torch
from torch import nn

import seg_zoo.modeling.criterion as criterion_module
from seg_zoo.modeling.criterion import SetCriterion
from seg_zoo.modeling.matcher import HungarianMatcher


class FixedMatcher(nn.Module):
    """Returns the same given assignment for every call."""

    def __init__(self, indices):
        super().__init__()
        self.indices = [(torch.tensor(q), torch.tensor(t)) for q, t in indices]
        self.calls = 0

    def forward(self, outputs, targets):
        self.calls += 1
        return self.indices


def make_criterion(matcher, num_classes=2, eos_coef=0.1, num_points=12, losses=("labels", "masks")):
    return SetCriterion(
        num_classes=num_classes,
        matcher=matcher,
        weight_dict={"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0},
        eos_coef=eos_coef,
        losses=list(losses),
        num_points=num_points,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
    )


def test_empty_weight_is_a_persistent_buffer():
    criterion = make_criterion(HungarianMatcher(2.0, 5.0, 5.0, num_points=16), num_classes=3)
    # Official checkpoints hold `criterion.empty_weight`, so it must be in the state_dict.
    assert list(criterion.state_dict()) == ["empty_weight"]
    torch.testing.assert_close(criterion.empty_weight, torch.tensor([1.0, 1.0, 1.0, 0.1]))


def test_classification_loss_with_no_object_weight_by_hand():
    # One image, two queries, classes {0, 1} + no-object (2); query 0 matched to a class-1 target.
    logits = [[0.5, 2.0, -1.0], [1.0, 0.0, 0.5]]
    outputs = {"pred_logits": torch.tensor([logits]), "pred_masks": torch.zeros(1, 2, 4, 4)}
    targets = [{"labels": torch.tensor([1]), "masks": torch.zeros(1, 4, 4)}]
    criterion = make_criterion(FixedMatcher([([0], [0])]), losses=["labels"])
    losses = criterion(outputs, targets)

    def nll(row, cls):
        return -math.log(math.exp(row[cls]) / sum(math.exp(v) for v in row))

    # Weighted mean: each query's NLL times its target class weight, over the sum of weights.
    expected = (1.0 * nll(logits[0], 1) + 0.1 * nll(logits[1], 2)) / (1.0 + 0.1)
    assert set(losses) == {"loss_ce"}
    assert losses["loss_ce"].item() == pytest.approx(expected, rel=1e-6)


def test_mask_losses_by_hand_on_known_points(monkeypatch):
    """The point picker is replaced by the four pixel centres of the 2x2 masks."""
    pixel_centres = torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    seen = {}

    def fake_picker(logits, uncertainty_func, num_points, oversample_ratio, importance_ratio):
        seen.update(
            shape=tuple(logits.shape), args=(num_points, oversample_ratio, importance_ratio)
        )
        return pixel_centres.expand(logits.shape[0], -1, -1)

    monkeypatch.setattr(criterion_module, "get_uncertain_point_coords_with_randomness", fake_picker)

    pred_masks = torch.tensor([[[[2.0, -1.0], [0.0, 1.0]], [[5.0, 5.0], [5.0, 5.0]]]])
    outputs = {"pred_logits": torch.zeros(1, 2, 3), "pred_masks": pred_masks}
    # Two targets; only query 0 <-> target 1 is matched, and the loss is divided by 2 masks.
    targets = [
        {
            "labels": torch.tensor([0, 1]),
            "masks": torch.tensor([[[0, 0], [0, 0]], [[1, 0], [0, 1]]]).bool(),
        }
    ]
    criterion = make_criterion(FixedMatcher([([0], [1])]), num_points=4, losses=["masks"])
    losses = criterion(outputs, targets)
    assert seen == {"shape": (1, 1, 2, 2), "args": (4, 3.0, 0.75)}

    bce = (
        math.log(1 + math.exp(-2))
        + math.log(1 + math.exp(-1))
        + math.log(1 + math.exp(-1))
        + math.log(2)
    ) / 4
    s = [1 / (1 + math.exp(-v)) for v in (2.0, -1.0, 0.0, 1.0)]
    dice = 1 - (2 * (s[0] + s[3]) + 1) / (sum(s) + 2 + 1)
    assert losses["loss_mask"].item() == pytest.approx(bce / 2, rel=1e-6)
    assert losses["loss_dice"].item() == pytest.approx(dice / 2, rel=1e-6)


def test_mask_losses_by_hand_where_point_positions_do_not_matter():
    """Zero logits against empty masks sample to 0 everywhere, zero padding included."""
    num_points = 50
    outputs = {
        "pred_logits": torch.zeros(2, 3, 3),
        "pred_masks": torch.zeros(2, 3, 6, 6, requires_grad=True),
    }
    targets = [
        {"labels": torch.tensor([0, 1]), "masks": torch.zeros(2, 12, 12, dtype=torch.bool)},
        # A smaller target, padded by the criterion to 12 x 12.
        {"labels": torch.tensor([1]), "masks": torch.zeros(1, 8, 10, dtype=torch.bool)},
    ]
    matcher = HungarianMatcher(2.0, 5.0, 5.0, num_points=num_points)
    losses = make_criterion(matcher, num_points=num_points)(outputs, targets)
    # Three matched masks over three target masks: each contributes one mask's loss / 3.
    assert losses["loss_mask"].item() == pytest.approx(math.log(2), rel=1e-6)
    assert losses["loss_dice"].item() == pytest.approx(1 - 1 / (0.5 * num_points + 1), rel=1e-6)
    sum(losses.values()).backward()
    assert outputs["pred_masks"].grad is not None


def test_deep_supervision_names_and_values():
    torch.manual_seed(0)

    def layer_outputs():
        return {"pred_logits": torch.randn(2, 4, 3), "pred_masks": torch.randn(2, 4, 8, 8)}

    final, aux = layer_outputs(), [layer_outputs(), layer_outputs()]
    targets = [
        {"labels": torch.tensor([0, 1]), "masks": torch.rand(2, 16, 16) > 0.5},
        {"labels": torch.tensor([1]), "masks": torch.rand(1, 16, 16) > 0.5},
    ]
    matcher = HungarianMatcher(2.0, 5.0, 5.0, num_points=0)
    criterion = make_criterion(matcher, num_points=64)
    losses = criterion({**final, "aux_outputs": aux}, targets)
    names = ["loss_ce", "loss_mask", "loss_dice"]
    assert set(losses) == {f"{n}{s}" for n in names for s in ("", "_0", "_1")}
    # Every layer is matched and classified on its own predictions.
    for suffix, layer in [("", final), ("_0", aux[0]), ("_1", aux[1])]:
        alone = criterion(layer, targets)
        assert losses[f"loss_ce{suffix}"].item() == pytest.approx(alone["loss_ce"].item())
    for value in losses.values():
        assert value.dim() == 0 and torch.isfinite(value)


def test_images_without_targets():
    outputs = {
        "pred_logits": torch.randn(2, 3, 3, requires_grad=True),
        "pred_masks": torch.randn(2, 3, 4, 4, requires_grad=True),
    }
    no_targets = {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 8, 8)}
    criterion = make_criterion(HungarianMatcher(2.0, 5.0, 5.0, num_points=16), num_points=16)

    # A batch with no target at all: every query is "no object", mask losses are zero.
    losses = criterion(outputs, [no_targets, no_targets])
    expected_ce = torch.nn.functional.cross_entropy(
        outputs["pred_logits"].reshape(-1, 3), torch.full((6,), 2)
    )
    assert losses["loss_ce"].item() == pytest.approx(expected_ce.item(), rel=1e-6)
    assert losses["loss_mask"].item() == 0 and losses["loss_dice"].item() == 0
    sum(losses.values()).backward()

    # One image with targets, one without.
    with_targets = {"labels": torch.tensor([1]), "masks": torch.ones(1, 8, 8, dtype=torch.bool)}
    losses = criterion(outputs, [no_targets, with_targets])
    assert all(torch.isfinite(v) for v in losses.values())


def test_num_masks_is_averaged_over_workers_and_clamped(monkeypatch):
    criterion = make_criterion(FixedMatcher([]))
    targets = [{"labels": torch.tensor([0, 1, 1])}, {"labels": torch.tensor([0])}]
    assert criterion._average_num_masks(targets, "cpu") == 4.0
    assert criterion._average_num_masks([{"labels": torch.zeros(0)}], "cpu") == 1.0

    # Pretend to be one of two workers, the other one holding 6 masks.
    dist = criterion_module.dist
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce", lambda tensor: tensor.add_(6))
    assert criterion._average_num_masks(targets, "cpu") == 5.0
    assert criterion._average_num_masks([{"labels": torch.zeros(0)}], "cpu") == 3.0
    monkeypatch.setattr(dist, "all_reduce", lambda tensor: tensor.add_(0))
    assert criterion._average_num_masks([{"labels": torch.zeros(0)}], "cpu") == 1.0
