"""timm ViT / DeiT ImageNet weights -> the state_dict of seg_zoo's ViT backbone.

seg_zoo's :class:`~seg_zoo.modeling.backbone.vit.VisionTransformer` keeps timm's parameter
names, so the conversion only drops the classifier and resizes the position embedding to the
grid the target model stores (``MODEL.VIT.PRETRAIN_IMG_SIZE // MODEL.VIT.PATCH_SIZE``). It is a
pure function, state_dict in and state_dict out, in the ``checkpoint_filter_fn`` habit of timm;
:func:`convert_timm_vit_file` reads the file with
:func:`seg_zoo.model_zoo.convert.load_source_state_dict`.

Handled: ``vit_{tiny,small,base,large}_patch16_384``, ``vit_base_patch8_384`` (and their 224
versions), DeiT (``deit_*_patch16_*``, with ``dist_token`` and ``head_dist`` when distilled),
as ``.pth`` or ``.safetensors``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping

from torch import Tensor

from seg_zoo.modeling.backbone.vit import resize_pos_embed

from .convert import load_source_state_dict, unwrap_state_dict

__all__ = ["convert_timm_vit", "convert_timm_vit_file"]

logger = logging.getLogger(__name__)

# Classifier parts of timm's ViT/DeiT that the backbone does not have. ``fc_norm`` exists
# (as weights) only in global-pool models; ``pre_logits.fc`` in old 21k checkpoints.
_CLASSIFIER_PREFIXES = ("head.", "head_dist.", "fc_norm.", "pre_logits.")

_BLOCK_SUFFIXES = (
    "norm1.weight",
    "norm1.bias",
    "attn.qkv.weight",
    "attn.qkv.bias",
    "attn.proj.weight",
    "attn.proj.bias",
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
)
_STEM_KEYS = (
    "patch_embed.proj.weight",
    "patch_embed.proj.bias",
    "cls_token",
    "dist_token",
    "pos_embed",
    "norm.weight",
    "norm.bias",
)


def _is_backbone_key(key: str) -> bool:
    if key in _STEM_KEYS:
        return True
    parts = key.split(".", 2)
    return (
        len(parts) == 3
        and parts[0] == "blocks"
        and parts[1].isdigit()
        and parts[2] in _BLOCK_SUFFIXES
    )


def convert_timm_vit(
    state_dict: Mapping[str, Tensor],
    *,
    pretrain_grid: int | tuple[int, int] | None = None,
    drop_head: bool = True,
    interpolation: str = "bicubic",
    log: Callable[[str], None] = logger.info,
) -> dict[str, Tensor]:
    """Convert a timm ViT/DeiT state_dict to what ``VisionTransformer`` loads with strict=True.

    Args:
        state_dict: timm's weights (a bare state_dict, or wrapped in ``"model"`` as DeiT's
            released files are); ``module.`` prefixes are removed.
        pretrain_grid: patch grid of the target ``pos_embed`` (an int for a square grid, e.g.
            512 // 16 = 32 for Segmenter at 512); None keeps the checkpoint's grid.
        drop_head: drop the classifier (``head``, ``head_dist``, ``fc_norm``,
            ``pre_logits``); with False they are kept (for a model that has them).
        interpolation: "bicubic" (timm) or "bilinear" (the official Segmenter conversion).
        log: receives one line per dropped group or resized tensor.

    Returns:
        A new dict; names are unchanged. Raises ValueError naming the key at fault for an
        entry that is not part of a ViT, or a ``pos_embed`` that is not on a square grid.
    """
    source = unwrap_state_dict(state_dict, "timm ViT state_dict")
    source = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in source.items()}
    if "pos_embed" not in source or "patch_embed.proj.weight" not in source:
        raise ValueError(
            "not a timm ViT checkpoint: no 'pos_embed' or 'patch_embed.proj.weight'; "
            f"first keys: {list(source)[:5]}"
        )
    num_prefix_tokens = ("cls_token" in source) + ("dist_token" in source)
    if "cls_token" not in source:
        raise ValueError(
            "timm ViT checkpoint without 'cls_token' (a no-class-token or global-pool model); "
            "seg_zoo's ViT always has a class token"
        )

    out: dict[str, Tensor] = {}
    dropped, unknown = [], []
    for key, value in source.items():
        if key.startswith(_CLASSIFIER_PREFIXES):
            if drop_head:
                dropped.append(key)
            else:
                out[key] = value
        elif _is_backbone_key(key):
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"not a plain timm ViT/DeiT checkpoint: {len(unknown)} unrecognised entries, e.g. "
            f"{unknown[:8]} (layer scale, register tokens and qk-norm are not supported)"
        )
    if dropped:
        log(f"dropped the ImageNet classifier (the backbone has none): {dropped}")

    pos_embed = out["pos_embed"]
    if pos_embed.dim() != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed: expected shape (1, L, D), got {tuple(pos_embed.shape)}")
    num_grid = pos_embed.shape[1] - num_prefix_tokens
    side = math.isqrt(max(num_grid, 0))
    if side * side != num_grid:
        raise ValueError(
            f"pos_embed: {num_grid} grid positions (after {num_prefix_tokens} prefix tokens) is "
            f"not a square grid (shape {tuple(pos_embed.shape)})"
        )
    if pretrain_grid is not None:
        grid = (pretrain_grid, pretrain_grid) if isinstance(pretrain_grid, int) else pretrain_grid
        grid = tuple(int(g) for g in grid)
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f"pretrain_grid must be a positive int or (h, w), got {pretrain_grid}")
        if grid != (side, side):
            out["pos_embed"] = resize_pos_embed(
                pos_embed, grid, num_prefix_tokens, old_grid_size=(side, side), mode=interpolation
            )
            log(
                f"pos_embed: grid {(side, side)} resized to {grid} ({interpolation}) "
                f"(shape {tuple(pos_embed.shape)} -> {tuple(out['pos_embed'].shape)})"
            )
    return out


def convert_timm_vit_file(path: str | os.PathLike, **kwargs) -> dict[str, Tensor]:
    """Read a timm ``.pth``/``.safetensors`` file and :func:`convert_timm_vit` it."""
    return convert_timm_vit(load_source_state_dict(path), **kwargs)
