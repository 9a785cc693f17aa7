"""Learning-rate schedules detectron2 and its DeepLab project do not have.

``WarmupLinearDecayLR`` is Pix2Seq-D's ``learning_rate_schedule='linear'`` (official
models/model_utils.py ``WarmUpAndDecay``): for the first ``SOLVER.WARMUP_ITERS`` iterations the
rate rises linearly from 0 (``lr * it / warmup``); afterwards it falls linearly from ``lr`` at the
end of the warm-up to ``lr * SOLVER.LINEAR_LR_END_FACTOR`` at ``SOLVER.MAX_ITER``. Every other
name goes to detectron2's DeepLab builder (WarmupPolyLR) and from there to detectron2's own.
"""

from __future__ import annotations

import torch
from detectron2.projects.deeplab import build_lr_scheduler as deeplab_build_lr_scheduler

__all__ = ["build_lr_scheduler", "linear_decay_factor"]


def linear_decay_factor(it: int, warmup: int, max_iter: int, end_factor: float) -> float:
    """Multiplier of the base rate at iteration ``it`` (0-based) of the official schedule."""
    if it < warmup:
        return it / warmup
    span = max(max_iter - warmup, 1)
    progress = min(it - warmup, span) / span
    return 1.0 - (1.0 - end_factor) * progress


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer):
    solver = cfg.SOLVER
    if solver.LR_SCHEDULER_NAME != "WarmupLinearDecayLR":
        return deeplab_build_lr_scheduler(cfg, optimizer)
    warmup, max_iter = solver.WARMUP_ITERS, solver.MAX_ITER
    end = solver.LINEAR_LR_END_FACTOR
    if not 0.0 <= end <= 1.0:
        raise ValueError(f"SOLVER.LINEAR_LR_END_FACTOR must be in [0, 1], got {end}")
    if not 0 <= warmup <= max_iter:
        raise ValueError(
            f"SOLVER.WARMUP_ITERS {warmup} must be between 0 and SOLVER.MAX_ITER {max_iter}"
        )
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: linear_decay_factor(it, warmup, max_iter, end)
    )
