"""HungarianMatcher against costs worked out by hand and a brute-force search over assignments.

The brute-force reference recomputes every cost with Python loops over queries, targets and
points (and its own bilinear interpolation), then tries every injective assignment.
"""

import itertools
import math

import pytest
import torch

from seg_zoo.modeling.matcher import HungarianMatcher, batch_dice_cost, batch_sigmoid_ce_cost


def slow_bilinear(image: list, x: float, y: float) -> float:
    """grid_sample(align_corners=False, padding_mode="zeros") at one [0, 1]-normalised point."""
    height, width = len(image), len(image[0])
    px, py = x * width - 0.5, y * height - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    fx, fy = px - x0, py - y0
    value = 0.0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            row, col = y0 + dy, x0 + dx
            if 0 <= row < height and 0 <= col < width:
                value += wy * wx * image[row][col]
    return value


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def slow_cost_matrix(pred_logits, pred_masks, labels, tgt_masks, points, weights):
    """(Q, T) nested list of w_class * -p(c) + w_mask * BCE + w_dice * dice, one pair at a time."""
    w_class, w_mask, w_dice = weights
    cost = []
    for q in range(pred_logits.shape[0]):
        exps = [math.exp(v) for v in pred_logits[q].tolist()]
        pred_values = [slow_bilinear(pred_masks[q].tolist(), x, y) for x, y in points]
        row = []
        for t in range(len(labels)):
            tgt_values = [slow_bilinear(tgt_masks[t].tolist(), x, y) for x, y in points]
            prob = exps[labels[t]] / sum(exps)
            bce = 0.0
            for m, g in zip(pred_values, tgt_values):
                bce += -(g * math.log(sigmoid(m)) + (1 - g) * math.log(1 - sigmoid(m)))
            bce /= len(points)
            probs = [sigmoid(m) for m in pred_values]
            inter = sum(p * g for p, g in zip(probs, tgt_values))
            dice = 1 - (2 * inter + 1) / (sum(probs) + sum(tgt_values) + 1)
            row.append(w_class * -prob + w_mask * bce + w_dice * dice)
        cost.append(row)
    return cost


def brute_force_assignment(cost):
    """Cheapest injective map of targets to queries, by trying all of them."""
    num_queries, num_targets = len(cost), len(cost[0])
    best = min(
        itertools.permutations(range(num_queries), num_targets),
        key=lambda queries: sum(cost[q][t] for t, q in enumerate(queries)),
    )
    # Same convention as the matcher: sorted by query index.
    pairs = sorted((q, t) for t, q in enumerate(best))
    return [q for q, _ in pairs], [t for _, t in pairs]


def random_case(generator, num_queries, num_classes, num_targets, pred_size, tgt_size):
    pred_logits = torch.randn(num_queries, num_classes + 1, generator=generator) * 2
    pred_masks = torch.randn(num_queries, *pred_size, generator=generator) * 3
    labels = torch.randint(num_classes, (num_targets,), generator=generator)
    tgt_masks = torch.rand(num_targets, *tgt_size, generator=generator) > 0.5
    return pred_logits, pred_masks, labels, tgt_masks


def pixel_centres(height, width):
    return [((j + 0.5) / width, (i + 0.5) / height) for i in range(height) for j in range(width)]


def test_cost_on_one_query_one_target_2x2_by_hand():
    pred_logits = torch.tensor([[1.0, 0.0, -1.0]])  # 2 classes + no-object
    pred_masks = torch.tensor([[[2.0, -1.0], [0.0, 1.0]]])
    labels = torch.tensor([0])
    tgt_masks = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    points = torch.tensor([[[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]])

    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=3.0, num_points=4)
    cost = matcher.cost_matrix(pred_logits, pred_masks, labels, tgt_masks, points)

    prob = math.e / (math.e + 1 + math.exp(-1))
    # Pixels with target 1 have logits 2 and 1; those with target 0 have -1 and 0.
    bce = (
        math.log(1 + math.exp(-2))
        + math.log(1 + math.exp(-1))
        + math.log(1 + math.exp(-1))
        + math.log(2)
    ) / 4
    s = [sigmoid(v) for v in (2.0, -1.0, 0.0, 1.0)]
    dice = 1 - (2 * (s[0] + s[3]) + 1) / (sum(s) + 2 + 1)
    assert cost.shape == (1, 1)
    assert cost.dtype == torch.float32
    assert cost.item() == pytest.approx(2.0 * -prob + 5.0 * bce + 3.0 * dice, rel=1e-6)

    flat_pred = pred_masks.reshape(1, 4)
    flat_tgt = tgt_masks.reshape(1, 4)
    assert batch_sigmoid_ce_cost(flat_pred, flat_tgt).item() == pytest.approx(bce, rel=1e-6)
    assert batch_dice_cost(flat_pred, flat_tgt).item() == pytest.approx(dice, rel=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force_on_pixel_centres(seed):
    """num_points=0: costs measured at every target pixel centre, so no randomness."""
    gen = torch.Generator().manual_seed(seed)
    weights = (2.0, 5.0, 5.0)
    pred_logits, pred_masks, labels, tgt_masks = random_case(gen, 4, 5, 3, (3, 4), (5, 6))
    matcher = HungarianMatcher(*weights, num_points=0)
    outputs = {"pred_logits": pred_logits[None], "pred_masks": pred_masks[None]}
    [(query_idx, tgt_idx)] = matcher(outputs, [{"labels": labels, "masks": tgt_masks}])

    points = pixel_centres(5, 6)
    slow = slow_cost_matrix(
        pred_logits, pred_masks, labels.tolist(), tgt_masks.double(), points, weights
    )
    expected_queries, expected_targets = brute_force_assignment(slow)
    assert query_idx.dtype == tgt_idx.dtype == torch.int64
    assert query_idx.tolist() == expected_queries
    assert tgt_idx.tolist() == expected_targets


def test_matches_brute_force_on_sampled_points():
    """Each image draws its own points, torch.rand(1, num_points, 2), in batch order."""
    gen = torch.Generator().manual_seed(7)
    weights = (1.0, 3.0, 2.0)
    num_points = 24
    cases = [random_case(gen, 4, 3, 3, (4, 4), (8, 8)) for _ in range(2)]
    outputs = {
        "pred_logits": torch.stack([c[0] for c in cases]),
        "pred_masks": torch.stack([c[1] for c in cases]),
    }
    targets = [{"labels": c[2], "masks": c[3]} for c in cases]
    matcher = HungarianMatcher(*weights, num_points=num_points)

    torch.manual_seed(0)
    indices = matcher(outputs, targets)
    torch.manual_seed(0)
    points = [torch.rand(1, num_points, 2)[0].tolist() for _ in cases]

    for (pred_logits, pred_masks, labels, tgt_masks), pts, (query_idx, tgt_idx) in zip(
        cases, points, indices
    ):
        slow = slow_cost_matrix(
            pred_logits, pred_masks, labels.tolist(), tgt_masks.double(), pts, weights
        )
        assert (query_idx.tolist(), tgt_idx.tolist()) == brute_force_assignment(slow)


def test_image_without_targets():
    gen = torch.Generator().manual_seed(3)
    pred_logits, pred_masks, labels, tgt_masks = random_case(gen, 4, 3, 2, (4, 4), (4, 4))
    outputs = {
        "pred_logits": torch.stack([pred_logits, pred_logits]),
        "pred_masks": torch.stack([pred_masks, pred_masks]),
    }
    targets = [
        {
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, 4, 4, dtype=torch.bool),
        },
        {"labels": labels, "masks": tgt_masks},
    ]
    matcher = HungarianMatcher(2.0, 5.0, 5.0, num_points=0)
    (empty_q, empty_t), (query_idx, tgt_idx) = matcher(outputs, targets)
    assert empty_q.shape == empty_t.shape == (0,)
    assert empty_q.dtype == empty_t.dtype == torch.int64

    alone = matcher({"pred_logits": pred_logits[None], "pred_masks": pred_masks[None]}, targets[1:])
    assert query_idx.tolist() == alone[0][0].tolist()
    assert tgt_idx.tolist() == alone[0][1].tolist()
    assert len(query_idx) == 2

    # With sampled points too.
    sampled = HungarianMatcher(2.0, 5.0, 5.0, num_points=16)(outputs, targets)
    assert sampled[0][0].numel() == 0 and len(sampled[1][0]) == 2


def test_half_precision_inputs_under_autocast_match_in_float32():
    gen = torch.Generator().manual_seed(11)
    pred_logits, pred_masks, labels, tgt_masks = random_case(gen, 6, 4, 3, (4, 4), (8, 8))
    targets = [{"labels": labels, "masks": tgt_masks}]
    half = {
        "pred_logits": pred_logits[None].bfloat16(),
        "pred_masks": pred_masks[None].bfloat16(),
    }
    full = {k: v.float() for k, v in half.items()}
    matcher = HungarianMatcher(2.0, 5.0, 5.0, num_points=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ((q_half, t_half),) = matcher(half, targets)
    ((q_full, t_full),) = matcher(full, targets)
    assert q_half.tolist() == q_full.tolist() and t_half.tolist() == t_full.tolist()
