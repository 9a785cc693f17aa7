"""Optimizer of every seg_zoo method: parameter groups, backbone LR multiplier, clipping.

The recipe is Mask2Former's (Cheng et al. 2022, Sec. 4 / appendix): AdamW (or SGD) with the
backbone's learning rate scaled by ``SOLVER.BACKBONE_MULTIPLIER``, weight decay
``SOLVER.WEIGHT_DECAY_NORM`` on normalisation layers, ``SOLVER.WEIGHT_DECAY_EMBED`` on
``nn.Embedding`` tables, no decay on Swin's position tables, and gradient clipping by the norm
of ALL parameters together (``CLIP_TYPE: full_model``), which detectron2 does not offer.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

# Normalisation layers whose affine parameters get SOLVER.WEIGHT_DECAY_NORM. detectron2's
# NaiveSyncBatchNorm subclasses BatchNorm2d; FrozenBatchNorm2d has no parameters.
NORM_MODULE_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)

# Parameter names (the last component) that are position tables rather than weights: decaying
# them toward zero would erase the learned geometry.
NO_DECAY_PARAM_NAMES: tuple[str, ...] = ("relative_position_bias_table", "absolute_pos_embed")


def get_param_groups(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float,
    weight_decay_embed: float,
    backbone_multiplier: float,
) -> list[dict[str, Any]]:
    """One parameter group per trainable parameter, with its own lr and weight decay.

    A parameter shared by two modules is listed once (the first module that owns it decides).
    "backbone" anywhere in the owning module's dotted name selects the backbone multiplier (as
    the official recipe does), so wrapped models (``module.backbone...``) are handled the same.
    """
    groups: list[dict[str, Any]] = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            lr = base_lr
            decay = weight_decay
            if "backbone" in module_name:
                lr = base_lr * backbone_multiplier
            if param_name in NO_DECAY_PARAM_NAMES:
                decay = 0.0
            if isinstance(module, NORM_MODULE_TYPES):
                decay = weight_decay_norm
            if isinstance(module, nn.Embedding):
                decay = weight_decay_embed
            groups.append(
                {
                    "params": [param],
                    "lr": lr,
                    "weight_decay": decay,
                    # Kept for logs and tests; torch ignores unknown group keys.
                    "name": f"{module_name}.{param_name}" if module_name else param_name,
                }
            )
    return groups


def with_full_model_grad_clipping(optimizer_cls: type[torch.optim.Optimizer], max_norm: float):
    """Subclass ``optimizer_cls`` so that ``step()`` first clips the global gradient norm."""

    class FullModelGradClip(optimizer_cls):  # type: ignore[misc, valid-type]
        def step(self, closure=None):
            params = itertools.chain.from_iterable(g["params"] for g in self.param_groups)
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            return super().step(closure=closure)

    FullModelGradClip.__name__ = f"FullModelGradClip{optimizer_cls.__name__}"
    FullModelGradClip.__qualname__ = FullModelGradClip.__name__
    return FullModelGradClip


_OPTIMIZERS = {
    # name -> (class, extra keyword arguments read from cfg.SOLVER)
    "SGD": (torch.optim.SGD, lambda s: {"momentum": s.MOMENTUM, "nesterov": s.NESTEROV}),
    "ADAMW": (torch.optim.AdamW, lambda s: {}),
}


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer ``train_net.py`` uses, from ``cfg.SOLVER``."""
    from detectron2.solver.build import maybe_add_gradient_clipping

    solver = cfg.SOLVER
    name = solver.OPTIMIZER.upper()
    if name not in _OPTIMIZERS:
        raise ValueError(
            f"SOLVER.OPTIMIZER is {solver.OPTIMIZER!r}; seg_zoo knows {sorted(_OPTIMIZERS)}"
        )
    optimizer_cls, extra = _OPTIMIZERS[name]
    groups = get_param_groups(
        model,
        base_lr=solver.BASE_LR,
        weight_decay=solver.WEIGHT_DECAY,
        weight_decay_norm=solver.WEIGHT_DECAY_NORM,
        weight_decay_embed=solver.WEIGHT_DECAY_EMBED,
        backbone_multiplier=solver.BACKBONE_MULTIPLIER,
    )
    if not groups:
        raise ValueError("the model has no trainable parameters: nothing to optimize")

    clip = solver.CLIP_GRADIENTS
    full_model = clip.ENABLED and clip.CLIP_TYPE == "full_model"
    if full_model and clip.CLIP_VALUE > 0.0:
        optimizer_cls = with_full_model_grad_clipping(optimizer_cls, clip.CLIP_VALUE)
    optimizer = optimizer_cls(groups, lr=solver.BASE_LR, **extra(solver))
    if not full_model:
        # detectron2's per-parameter "value"/"norm" clipping (a no-op when disabled).
        optimizer = maybe_add_gradient_clipping(cfg, optimizer)
    return optimizer
