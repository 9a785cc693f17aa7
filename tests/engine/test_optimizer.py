"""Parameter groups and full-model gradient clipping, against hand-worked expectations."""

import copy

import pytest
import torch
from detectron2.config import get_cfg
from torch import nn

from seg_zoo import add_seg_zoo_config
from seg_zoo.engine import build_optimizer, get_param_groups


class Toy(nn.Module):
    """One of each kind of parameter the rules distinguish."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
        self.backbone.relative_position_bias_table = nn.Parameter(torch.zeros(5, 2))
        self.head = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        self.query_feat = nn.Embedding(2, 3)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)
        self.shared = self.head  # the same parameters reachable twice


def _groups(model):
    groups = get_param_groups(
        model,
        base_lr=1.0,
        weight_decay=0.05,
        weight_decay_norm=0.001,
        weight_decay_embed=0.002,
        backbone_multiplier=0.1,
    )
    return {g["name"]: (g["lr"], g["weight_decay"]) for g in groups}


def test_param_groups_follow_the_mask2former_rules():
    expected = {
        "backbone.0.weight": (0.1, 0.05),
        "backbone.0.bias": (0.1, 0.05),
        "backbone.1.weight": (0.1, 0.001),
        "backbone.1.bias": (0.1, 0.001),
        "backbone.relative_position_bias_table": (0.1, 0.0),
        "head.weight": (1.0, 0.05),
        "head.bias": (1.0, 0.05),
        "norm.weight": (1.0, 0.001),
        "norm.bias": (1.0, 0.001),
        "query_feat.weight": (1.0, 0.002),
    }
    got = _groups(Toy())
    assert got.keys() == expected.keys()  # frozen left out, shared listed once
    for name, (lr, decay) in expected.items():
        assert got[name] == pytest.approx((lr, decay)), name


def _cfg(optimizer="ADAMW", clip=True, clip_type="full_model", clip_value=0.5):
    cfg = get_cfg()
    add_seg_zoo_config(cfg)
    cfg.SOLVER.OPTIMIZER = optimizer
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.WEIGHT_DECAY = 0.0
    cfg.SOLVER.MOMENTUM = 0.9
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = clip
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = clip_value
    return cfg


@pytest.mark.parametrize("name", ["SGD", "ADAMW"])
def test_full_model_clipping_equals_clip_then_step(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    reference = copy.deepcopy(model)
    x = torch.randn(16, 4) * 10

    optimizer = build_optimizer(_cfg(name), model)
    model(x).square().sum().backward()
    total_before = torch.sqrt(sum(p.grad.square().sum() for p in model.parameters()))
    assert total_before > 0.5  # the test only means something if clipping bites
    optimizer.step()

    # Independent reference: clip the global norm by hand, then a plain torch optimizer.
    reference(x).square().sum().backward()
    grads = [p.grad for p in reference.parameters()]
    scale = 0.5 / (torch.sqrt(sum(g.square().sum() for g in grads)) + 1e-6)
    for g in grads:
        g.mul_(scale)
    if name == "SGD":
        plain = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    else:
        plain = torch.optim.AdamW(reference.parameters(), lr=0.1, weight_decay=0.0)
    plain.step()
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q)


def test_no_clipping_when_disabled_and_detectron2_clipping_otherwise():
    model = nn.Linear(2, 2)
    opt = build_optimizer(_cfg(clip=False), model)
    assert type(opt) is torch.optim.AdamW
    opt = build_optimizer(_cfg(clip_type="full_model"), model)
    assert "FullModelGradClip" in type(opt).__name__
    opt = build_optimizer(_cfg(clip_type="norm"), model)  # detectron2's per-parameter clipping
    assert "FullModelGradClip" not in type(opt).__name__ and type(opt) is not torch.optim.AdamW


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER is 'LAMB'"):
        build_optimizer(_cfg(optimizer="LAMB"), nn.Linear(2, 2))
