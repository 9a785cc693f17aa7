"""EMA of the weights (seg_zoo.engine.ema) and the linear-decay schedule, against hand values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seg_zoo.engine.checkpoint import Checkpointer
from seg_zoo.engine.ema import ModelEMA
from seg_zoo.engine.lr_scheduler import linear_decay_factor


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))


def test_update_follows_the_formula():
    model = small_model()
    w0 = model[0].weight.detach().clone()
    ema = ModelEMA(model, decay=0.9)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.state["0.weight"], 0.9 * w0 + 0.1)
    with torch.no_grad():
        model[0].weight.fill_(3.0)
    ema.update(model)
    torch.testing.assert_close(ema.state["0.weight"], 0.9 * (0.9 * w0 + 0.1) + 0.1 * 3.0)
    # integer buffers are copied, float buffers (BN statistics) averaged
    model[1].num_batches_tracked.fill_(7)
    model[1].running_mean.fill_(2.0)
    ema.update(model)
    assert int(ema.state["1.num_batches_tracked"]) == 7
    torch.testing.assert_close(ema.state["1.running_mean"], torch.full((2,), 0.2))


def test_applied_swaps_and_restores():
    model = small_model()
    ema = ModelEMA(model, decay=0.5)
    raw = model[0].weight.detach().clone()
    ema.state["0.weight"].fill_(-4.0)
    with ema.applied(model):
        assert (model[0].weight == -4.0).all()
    torch.testing.assert_close(model[0].weight, raw)


def test_bad_decay_and_mismatched_state():
    with pytest.raises(ValueError, match="MODEL_EMA.DECAY must be in"):
        ModelEMA(small_model(), decay=1.0)
    ema = ModelEMA(small_model(), decay=0.9)
    with pytest.raises(KeyError, match="missing"):
        ema.load_state_dict({"0.weight": torch.zeros(2, 2)})
    bad = {k: v.clone() for k, v in ema.state.items()}
    bad["0.weight"] = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"ema_state\['0.weight'\] has shape \(3, 2\)"):
        ema.load_state_dict(bad)


def test_checkpoint_round_trip_and_use_ema(tmp_path):
    model = small_model()
    ema = ModelEMA(model, decay=0.9)
    ema.state["0.weight"].fill_(5.0)
    Checkpointer(model, str(tmp_path), ema_state=ema).save("ckpt")
    raw = model[0].weight.detach().clone()

    fresh = small_model()
    with torch.no_grad():
        fresh[0].weight.zero_()
    fresh_ema = ModelEMA(fresh, decay=0.9)
    Checkpointer(fresh, str(tmp_path), ema_state=fresh_ema).load(str(tmp_path / "ckpt.pth"))
    torch.testing.assert_close(fresh[0].weight, raw)  # the raw weights into the model
    assert fresh_ema.loaded and (fresh_ema.state["0.weight"] == 5.0).all()

    evaluated = small_model()
    Checkpointer(evaluated, use_ema=True).load(str(tmp_path / "ckpt.pth"))
    assert (evaluated[0].weight == 5.0).all()  # the EMA weights into the model


def test_linear_decay_schedule_by_hand():
    # official WarmUpAndDecay('linear'): warm-up from 0, then base -> base * end at max_iter
    assert linear_decay_factor(0, 10, 110, 0.1) == 0.0
    assert linear_decay_factor(5, 10, 110, 0.1) == 0.5
    assert linear_decay_factor(10, 10, 110, 0.1) == 1.0
    assert linear_decay_factor(60, 10, 110, 0.1) == pytest.approx(0.55)
    assert linear_decay_factor(110, 10, 110, 0.1) == pytest.approx(0.1)
    assert linear_decay_factor(0, 0, 100, 0.02) == 1.0
    assert linear_decay_factor(200, 0, 100, 0.02) == pytest.approx(0.02)


def test_trainer_builds_the_linear_schedule():
    from seg_zoo.config import load_config
    from seg_zoo.engine.lr_scheduler import build_lr_scheduler

    cfg = load_config(
        "configs/synthetic/pix2seq_d_R18_tiny_panoptic.yaml",
        ["SOLVER.LR_SCHEDULER_NAME", "WarmupLinearDecayLR", "SOLVER.WARMUP_ITERS", "2",
         "SOLVER.MAX_ITER", "6", "SOLVER.LINEAR_LR_END_FACTOR", "0.5", "SOLVER.BASE_LR", "1.0"],
    )  # fmt: skip
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5])


def test_evaluates_with_ema_needs_both_keys():
    from detectron2.config import get_cfg

    from seg_zoo.config import add_seg_zoo_config
    from seg_zoo.engine import evaluates_with_ema

    cfg = get_cfg()
    add_seg_zoo_config(cfg)
    for enabled, with_ema, expected in [
        (True, True, True),
        (True, False, False),
        (False, True, False),
    ]:
        cfg.MODEL_EMA.ENABLED, cfg.MODEL_EMA.EVAL_WITH_EMA = enabled, with_ema
        assert evaluates_with_ema(cfg) is expected
