"""mmsegmentation UperNet checkpoints with a Swin backbone -> seg_zoo's ``UperNet``.

The Swin paper's ADE20K models (SwinTransformer/Swin-Transformer-Semantic-Segmentation, built on
mmseg 0.11) are mmcv checkpoints: ``{"meta": ..., "state_dict": ..., ["optimizer": ...]}`` with

- ``backbone.*``: the Swin Transformer, whose names ``D2SwinTransformer`` shares (both come from
  the official Swin code), including the ``norm0..3`` output norms;
- ``decode_head.*``: mmseg's ``UPerHead`` (``psp_modules``, ``bottleneck``, ``lateral_convs``,
  ``fpn_convs``, ``fpn_bottleneck``, ``conv_seg``);
- ``auxiliary_head.*``: mmseg's ``FCNHead`` (``convs``, ``conv_seg``).

seg_zoo's heads keep mmseg's module names, and each mmcv ``ConvModule`` (``conv`` + ``bn`` +
ReLU) is one detectron2 ``Conv2d`` with its norm inside, so the conversion is a rename:
``decode_head.`` -> ``sem_seg_head.``, ``auxiliary_head.`` -> ``aux_head.``,
``<module>.conv.weight`` -> ``<module>.weight``, ``<module>.bn.`` -> ``<module>.norm.``.
Every input name is checked against what the seg_zoo model has, so a checkpoint of another
mmseg model (a ResNet-V1c backbone, an FCN head with ``concat_input``) is refused by name here
instead of loading half its weights. ``tools/convert-mmseg-upernet-to-d2.py`` is the command line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping

from torch import Tensor

__all__ = ["check_upernet_num_classes", "convert_mmseg_upernet_state_dict"]

logger = logging.getLogger(__name__)

Log = Callable[[str], None]

# D2SwinTransformer's names (= the official Swin segmentation backbone's).
_SWIN_NAMES = re.compile(
    r"^(patch_embed\.(proj|norm)\.(weight|bias)|absolute_pos_embed|norm[0-3]\.(weight|bias)|"
    r"layers\.\d+\.downsample\.(reduction\.weight|norm\.(weight|bias))|"
    r"layers\.\d+\.blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\."
    r"(weight|bias)|"
    r"layers\.\d+\.blocks\.\d+\.attn\.(relative_position_bias_table|relative_position_index))$"
)
# Buffers some Swin versions saved and the model recomputes.
_SWIN_STALE = re.compile(r"(^|\.)attn_mask$")
# One mmcv ConvModule: conv weight (a bias only without a norm) and its BatchNorm.
_CONV_MODULE = (
    r"(conv\.(weight|bias)|bn\.(weight|bias|running_mean|running_var|num_batches_tracked))"
)
_UPERHEAD_NAMES = re.compile(
    r"^((psp_modules\.\d+\.1|bottleneck|lateral_convs\.\d+|fpn_convs\.\d+|fpn_bottleneck)\."
    + _CONV_MODULE
    + r"|conv_seg\.(weight|bias))$"
)
_FCNHEAD_NAMES = re.compile(r"^(convs\.\d+\." + _CONV_MODULE + r"|conv_seg\.(weight|bias))$")

_HEADS = {  # mmseg prefix: (seg_zoo prefix, allowed names, what it must be)
    "decode_head.": ("sem_seg_head.", _UPERHEAD_NAMES, "mmseg's UPerHead"),
    "auxiliary_head.": ("aux_head.", _FCNHEAD_NAMES, "mmseg's FCNHead without concat_input"),
}


def _head_name(name: str) -> str:
    """``<module>.conv.weight`` -> ``<module>.weight``; ``<module>.bn.x`` -> ``<module>.norm.x``."""
    name = re.sub(r"\.conv\.(weight|bias)$", r".\1", name)
    return re.sub(r"\.bn\.", ".norm.", name)


def convert_mmseg_upernet_state_dict(
    state_dict: Mapping[str, Tensor], *, source: str = "checkpoint", log: Log | None = None
) -> dict[str, Tensor]:
    """An mmseg Swin + UperNet (+ FCN auxiliary head) state_dict in seg_zoo's ``UperNet`` names.

    Raises ``ValueError`` naming ``source`` and the first entries that have no place in the
    seg_zoo model (another backbone or head type); the auxiliary head is optional.
    """
    log = log or logger.info
    if "backbone.patch_embed.proj.weight" not in state_dict:
        resnet = any(k.startswith(("backbone.stem.", "backbone.conv1.")) for k in state_dict)
        raise ValueError(
            f"{source}: no backbone.patch_embed.proj.weight, so not a Swin backbone"
            + (
                " (it looks like mmseg's ResNet; its deep-stem ResNet-V1c is not detectron2's "
                "ResNet, which seg_zoo's ResNet UperNet uses)"
                if resnet
                else ""
            )
        )
    if "decode_head.fpn_bottleneck.conv.weight" not in state_dict:
        raise ValueError(f"{source}: no decode_head.fpn_bottleneck.conv.weight: not an UPerHead")
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    stale: list[str] = []
    for key, value in state_dict.items():
        if key.startswith("backbone."):
            name = key[len("backbone.") :]
            if _SWIN_STALE.search(name):
                stale.append(key)
            elif _SWIN_NAMES.match(name):
                out[key] = value
            else:
                unknown.append(key)
            continue
        for prefix, (new_prefix, names, _) in _HEADS.items():
            if key.startswith(prefix):
                name = key[len(prefix) :]
                if names.match(name):
                    out[new_prefix + _head_name(name)] = value
                else:
                    unknown.append(key)
                break
        else:
            unknown.append(key)
    if unknown:
        kinds = "; ".join(f"{p}* must be {what}" for p, (_, _, what) in _HEADS.items())
        raise ValueError(
            f"{source}: {len(unknown)} entries seg_zoo's Swin UperNet has no place for, e.g. "
            f"{unknown[:5]} (backbone.* must be a Swin Transformer; {kinds})"
        )
    if stale:
        log(f"{source}: dropped {len(stale)} stored attn_mask buffers (recomputed by the model)")
    return out


def check_upernet_num_classes(state_dict: Mapping[str, Tensor], num_classes: int, path: str) -> int:
    """Raise a ValueError when ``decode_head.conv_seg`` has another class count than the config."""
    weight = state_dict.get("decode_head.conv_seg.weight")
    if weight is None:
        raise ValueError(f"{path}: no decode_head.conv_seg.weight: not an mmseg UperNet checkpoint")
    found = int(weight.shape[0])
    if found != num_classes:
        raise ValueError(
            f"{path}: the checkpoint's UperNet classifier has {found} classes but the config has "
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES {num_classes}"
        )
    return found
