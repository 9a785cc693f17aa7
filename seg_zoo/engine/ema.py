"""Exponential moving average (EMA) of a model's weights, as Pix2Seq-D trains and evaluates.

The official Pix2Seq-D keeps a second copy of every variable and, after each optimizer step,
sets ``ema = decay * ema + (1 - decay) * weight``; evaluation runs the EMA copy. Here the copy is
a dict of tensors (``ModelEMA``) beside the model rather than a second model, updated by
``EMAHook`` after every step, saved by the checkpointer under ``ema_state`` and swapped into the
model for evaluation (``ModelEMA.applied``). Everything in ``model.state_dict()`` is averaged
when it is floating point (BatchNorm statistics included, as the TF variables are); integer
buffers (``num_batches_tracked``) are copied.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from detectron2.engine import HookBase

logger = logging.getLogger(__name__)

__all__ = ["EMAHook", "ModelEMA", "evaluates_with_ema", "unwrap_model"]


def evaluates_with_ema(cfg) -> bool:
    """Whether evaluation uses the EMA weights: MODEL_EMA.ENABLED and MODEL_EMA.EVAL_WITH_EMA
    (the trainer's evaluations, ``train_net.py --eval-only`` and ``demo/demo.py`` all ask)."""
    return bool(cfg.MODEL_EMA.ENABLED and cfg.MODEL_EMA.EVAL_WITH_EMA)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers."""
    while isinstance(
        model, (torch.nn.parallel.DistributedDataParallel, torch.nn.parallel.DataParallel)
    ):
        model = model.module
    return model


class ModelEMA:
    """EMA of ``model.state_dict()``; ``state_dict()``/``load_state_dict()`` for checkpoints."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"MODEL_EMA.DECAY must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.state: dict[str, torch.Tensor] = {}
        self.reset(model)

    def reset(self, model: torch.nn.Module) -> None:
        """Start the average over from the model's current weights."""
        self.state = {k: v.detach().clone() for k, v in unwrap_model(model).state_dict().items()}
        self.loaded = False  # set by load_state_dict: the average came from a checkpoint

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for key, value in unwrap_model(model).state_dict().items():
            ema = self.state[key]
            if ema.is_floating_point():
                ema.lerp_(value.detach().to(ema.dtype), 1.0 - self.decay)
            else:
                ema.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.state)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.state) - set(state))
        unexpected = sorted(set(state) - set(self.state))
        if missing or unexpected:
            raise KeyError(
                f"ema_state of the checkpoint does not fit the model: missing {missing[:5]}"
                f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                f"{' ...' if len(unexpected) > 5 else ''}"
            )
        for key, value in state.items():
            if tuple(value.shape) != tuple(self.state[key].shape):
                raise ValueError(
                    f"ema_state[{key!r}] has shape {tuple(value.shape)}, the model's is "
                    f"{tuple(self.state[key].shape)}"
                )
            self.state[key].copy_(torch.as_tensor(value))
        self.loaded = True

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """The model with the EMA weights inside the block, its own weights restored after."""
        module = unwrap_model(model)
        saved = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict(self.state)
        try:
            yield model
        finally:
            module.load_state_dict(saved)


class EMAHook(HookBase):
    """Updates a ``ModelEMA`` after every training step."""

    def __init__(self, ema: ModelEMA, model: torch.nn.Module):
        self.ema = ema
        self.model = model

    def after_step(self):
        self.ema.update(self.model)
