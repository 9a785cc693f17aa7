"""Converters of ImageNet backbone checkpoints into the names seg_zoo's detectron2 backbones load.

Each converter is a pure function, state_dict in and state_dict out, with every rename and
shape adaptation written out (the ``checkpoint_filter_fn`` habit of timm):

- :func:`convert_swin_to_d2`: Microsoft's official Swin (V1) ImageNet checkpoints and timm Swin
  checkpoints -> ``D2SwinTransformer`` names.
- :func:`convert_torchvision_resnet_to_d2`: torchvision ResNet -> detectron2 ``ResNet`` names.

:func:`load_checkpoint_file` reads the input files safely and :func:`save_d2_checkpoint` writes
detectron2's model-zoo ``.pkl`` layout; ``tools/convert-*.py`` are thin command lines over them.

Output names carry no ``backbone.`` prefix by default: the written ``.pkl`` is marked
``matching_heuristics``, so detectron2's checkpointer finds them under ``backbone.`` (MaskFormer)
as well as under ``backbone.bottom_up.`` (an FPN around the same backbone).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "convert_swin_to_d2",
    "convert_torchvision_resnet_to_d2",
    "interpolate_absolute_pos_embed",
    "interpolate_relative_position_bias_table",
    "convert_file",
    "load_source_state_dict",
    "unwrap_state_dict",
    "save_d2_checkpoint",
    "swin_window_size_of_table",
]

logger = logging.getLogger(__name__)

Log = Callable[[str], None]


# --------------------------------------------------------------------------------------------
# Reading and writing files
# --------------------------------------------------------------------------------------------
def unwrap_state_dict(obj, source: str) -> dict[str, Tensor]:
    """The state_dict inside a loaded checkpoint, with every value checked to be a tensor.

    Microsoft's Swin releases store ``{"model": state_dict}`` and training scripts often
    ``{"state_dict": ...}``; timm and torchvision files are the bare state_dict.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
    for wrapper in ("model", "state_dict"):
        if isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    state_dict = {}
    for key, value in obj.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise ValueError(
                f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor; "
                "is this a model checkpoint?"
            )
        state_dict[key] = value
    if not state_dict:
        raise ValueError(f"{source}: the checkpoint holds no tensors")
    return state_dict


def load_source_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a ``.pth``/``.pt``/``.bin`` (torch) or ``.safetensors`` checkpoint into a state_dict.

    Torch files go through :func:`seg_zoo.model_zoo.safe_load.load_torch_file`
    (``torch.load(weights_only=True)``: a pickle from the internet could otherwise run code).
    Every failure (missing, truncated, corrupt, not a checkpoint) raises an error whose
    message starts with the file name.
    """
    from .safe_load import CheckpointLoadError, load_torch_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ImportError(
                f"{path}: reading .safetensors needs `pip install safetensors`"
            ) from e
        try:
            obj = load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own SafetensorError and OSError
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
        return unwrap_state_dict(obj, str(path))
    try:
        obj = load_torch_file(path)
    except CheckpointLoadError as e:
        raise ValueError(str(e)) from e
    return unwrap_state_dict(obj, str(path))


def save_d2_checkpoint(
    state_dict: Mapping[str, Tensor | np.ndarray],
    path: str | os.PathLike,
    *,
    author: str = "seg_zoo",
) -> None:
    """Write detectron2's model-zoo ``.pkl`` layout: numpy arrays, ``matching_heuristics`` on.

    detectron2's ``DetectionCheckpointer`` recognises the file by its ``model`` and ``__author__``
    entries and, with ``matching_heuristics``, matches names by suffix, so backbone names load
    into whatever module path the backbone has in the full model.
    """
    model = {}
    for key, value in state_dict.items():
        if isinstance(value, Tensor):
            value = value.detach().cpu().numpy()
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{key}: expected a tensor or numpy array, got {type(value).__name__}")
        model[key] = value
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    # Written aside and renamed, so an interrupted run never leaves a truncated .pkl behind.
    with open(tmp, "wb") as f:
        pickle.dump({"model": model, "__author__": author, "matching_heuristics": True}, f)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Swin
# --------------------------------------------------------------------------------------------
def swin_window_size_of_table(table: Tensor, name: str = "relative_position_bias_table") -> int:
    """Window side W of a (2W-1)^2 x num_heads relative position bias table."""
    if table.dim() != 2:
        raise ValueError(f"{name}: expected ((2W-1)^2, num_heads), got shape {tuple(table.shape)}")
    side = math.isqrt(table.shape[0])
    if side * side != table.shape[0] or side % 2 == 0:
        raise ValueError(
            f"{name}: {table.shape[0]} rows is not (2W-1)^2 for any window size W "
            f"(shape {tuple(table.shape)})"
        )
    return (side + 1) // 2


def interpolate_relative_position_bias_table(table: Tensor, window_size: int) -> Tensor:
    """Resample a ((2W-1)^2, heads) bias table to another window size, bicubically.

    The rows are a (2W-1) x (2W-1) grid of offsets, row-major. As in Microsoft's fine-tuning
    code, the grid is resized with ``align_corners=False``: the centre of one odd-sized grid
    then maps exactly onto the centre of the other, so the bias of the zero offset (a token
    and itself) is kept, and the other offsets are stretched proportionally.
    """
    src = swin_window_size_of_table(table)
    if src == window_size:
        return table
    heads = table.shape[1]
    s_in, s_out = 2 * src - 1, 2 * window_size - 1
    grid = table.T.reshape(1, heads, s_in, s_in).float()  # (1, heads, 2W-1, 2W-1)
    grid = F.interpolate(grid, size=(s_out, s_out), mode="bicubic", align_corners=False)
    return grid.reshape(heads, s_out * s_out).T.contiguous().to(table.dtype)


def interpolate_absolute_pos_embed(pos_embed: Tensor, grid_size: tuple[int, int] | None) -> Tensor:
    """Absolute position embedding as ``D2SwinTransformer`` stores it: (1, C, Gh, Gw).

    Microsoft's classification model stores (1, Gh*Gw, C) on a square grid; it is reshaped,
    then resized bicubically when ``grid_size`` differs from the checkpoint's.
    """
    if pos_embed.dim() == 3:
        _, length, channels = pos_embed.shape
        side = math.isqrt(length)
        if side * side != length:
            raise ValueError(
                f"absolute_pos_embed: {length} positions is not a square grid "
                f"(shape {tuple(pos_embed.shape)})"
            )
        pos_embed = pos_embed.transpose(1, 2).reshape(1, channels, side, side)
    elif pos_embed.dim() != 4:
        raise ValueError(
            f"absolute_pos_embed: expected (1, L, C) or (1, C, H, W), got {tuple(pos_embed.shape)}"
        )
    if grid_size is not None and tuple(pos_embed.shape[-2:]) != tuple(grid_size):
        dtype = pos_embed.dtype
        pos_embed = F.interpolate(
            pos_embed.float(), size=tuple(grid_size), mode="bicubic", align_corners=False
        ).to(dtype)
    return pos_embed.contiguous()


# Per-block parameters that keep their name (both layouts use Microsoft's names inside a block).
_SWIN_BLOCK_PARAM = re.compile(
    r"layers\.\d+\.blocks\.\d+\."
    r"(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$"
)
_SWIN_TABLE = re.compile(r"(layers\.\d+\.blocks\.\d+\.attn)\.relative_position_bias_table$")
_SWIN_INDEX = re.compile(r"layers\.\d+\.blocks\.\d+\.attn\.relative_position_index$")
_SWIN_ATTN_MASK = re.compile(r"layers\.\d+\.blocks\.\d+\.attn_mask$")
_SWIN_DOWNSAMPLE = re.compile(
    r"layers\.(\d+)\.downsample\.(norm\.weight|norm\.bias|reduction\.weight)$"
)
_SWIN_STEM = re.compile(r"patch_embed\.(proj|norm)\.(weight|bias)$")


def _swin_downsample_shift(keys: list[str]) -> int:
    """0 for Microsoft's layout (merging ends stage i), -1 for timm >= 0.9 (it starts stage i+1).

    Microsoft's stage 0 always holds a patch merging, timm's never does; the last stage holds
    one only in timm's layout. The classifier cannot tell them apart: headless files exist.
    """
    stages = {int(m.group(1)) for k in keys if (m := _SWIN_DOWNSAMPLE.match(k))}
    if not stages:
        return 0  # a single stage: nothing to move
    num_layers = 1 + max(int(k.split(".")[1]) for k in keys if k.startswith("layers."))
    if 0 in stages and num_layers - 1 not in stages:
        return 0
    if 0 not in stages and num_layers - 1 in stages:
        return -1
    raise ValueError(
        f"cannot tell the Swin checkpoint layout: patch merging found in stages "
        f"{sorted(stages)} of {num_layers} (Microsoft's has it in 0..{num_layers - 2}, "
        f"timm's in 1..{num_layers - 1})"
    )


def convert_swin_to_d2(
    state_dict: Mapping[str, Tensor],
    *,
    window_size: int | None = None,
    pretrain_img_size: int | None = None,
    prefix: str = "",
    log: Log = logger.info,
) -> dict[str, Tensor]:
    """Convert a Swin (V1) ImageNet state_dict to the names ``D2SwinTransformer`` loads.

    Accepts Microsoft's official checkpoints (1K/22K, window 7/12; pass the file's ``"model"``
    entry or the whole dict) and timm's (>= 0.9: patch merging at the start of the next stage,
    ``head.fc``, no index buffers; also ``layers_<i>`` names of its feature-extraction
    wrappers).

    Args:
        state_dict: the source weights.
        window_size: window side of the target model (``MODEL.SWIN.WINDOW_SIZE``); the bias
            tables are resized bicubically when it differs from the checkpoint's. None keeps it.
        pretrain_img_size: ``MODEL.SWIN.PRETRAIN_IMG_SIZE`` of the target, which sizes its
            absolute position embedding (only models with ``ape``); None keeps the checkpoint's.
        prefix: put before every output name (e.g. ``"backbone."`` for a plain ``load_state_dict``
            into a MaskFormer model; leave empty for a ``matching_heuristics`` .pkl).
        log: receives one line per group of dropped, moved or resized entries.

    Returns:
        A new state_dict. Every target entry is present except the output norms
        ``norm0..norm3``, which the classification model does not have. The relative position
        index is rebuilt for the target window (timm files lack it; a resized table needs a
        new one). Dropped: the classifier ``head``, the final ``norm`` (replaced by the per-stage
        output norms) and the shifted-window ``attn_mask`` buffers (the backbone rebuilds them
        for each input size).
    """
    # Imported here: the converter is otherwise free of the model, and this is its definition.
    from seg_zoo.modeling.backbone.swin import relative_position_index

    if window_size is not None and (not isinstance(window_size, int) or window_size < 1):
        raise ValueError(f"window_size must be a positive int, got {window_size!r}")
    source = unwrap_state_dict(state_dict, "Swin state_dict")
    keys = []
    renamed = {}
    for key, value in source.items():
        new = key[len("module.") :] if key.startswith("module.") else key
        new = re.sub(r"^layers_(\d+)\.", r"layers.\1.", new)
        renamed[new] = value
        keys.append(new)

    if not any(_SWIN_TABLE.match(k) for k in keys):
        raise ValueError(
            "not a Swin checkpoint: no layers.<i>.blocks.<j>.attn.relative_position_bias_table; "
            f"first keys: {keys[:5]}"
        )
    shift = _swin_downsample_shift(keys)

    out: dict[str, Tensor] = {}
    dropped: dict[str, list[str]] = {"classifier": [], "attn_mask": [], "index": []}
    unknown = []
    resized_tables = []
    for key, value in renamed.items():
        if key.startswith("head.") or key in ("norm.weight", "norm.bias"):
            dropped["classifier"].append(key)
        elif _SWIN_ATTN_MASK.match(key):
            dropped["attn_mask"].append(key)
        elif _SWIN_INDEX.match(key):
            dropped["index"].append(key)
        elif m := _SWIN_TABLE.match(key):
            src = swin_window_size_of_table(value, key)
            target = window_size or src
            if target != src:
                value = interpolate_relative_position_bias_table(value, target)
                resized_tables.append((key, src, target))
            out[key] = value
            out[f"{m.group(1)}.relative_position_index"] = relative_position_index((target, target))
        elif m := _SWIN_DOWNSAMPLE.match(key):
            out[f"layers.{int(m.group(1)) + shift}.downsample.{m.group(2)}"] = value
        elif key == "absolute_pos_embed":
            value = interpolate_absolute_pos_embed(value, None)  # (1, C, Gh, Gw)
            if pretrain_img_size is not None:
                patch = renamed["patch_embed.proj.weight"].shape[-1]
                grid = (pretrain_img_size // patch, pretrain_img_size // patch)
                if tuple(value.shape[-2:]) != grid:
                    log(f"absolute_pos_embed: grid {tuple(value.shape[-2:])} resized to {grid}")
                    value = interpolate_absolute_pos_embed(value, grid)
            out[key] = value
        elif _SWIN_BLOCK_PARAM.match(key) or _SWIN_STEM.match(key):
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"not a Swin V1 checkpoint that D2SwinTransformer can load: {len(unknown)} "
            f"unrecognised entries, e.g. {unknown[:8]} (Swin V2's cpb_mlp/logit_scale are "
            "not supported)"
        )

    if shift:
        log("timm layout: moved patch merging from the start of stage i+1 to the end of stage i")
    if dropped["classifier"]:
        log(f"dropped the classification head and final norm: {dropped['classifier']}")
    if dropped["attn_mask"]:
        log(
            f"dropped {len(dropped['attn_mask'])} stale attn_mask buffers (rebuilt for each "
            f"input size by the backbone): {dropped['attn_mask']}"
        )
    if dropped["index"]:
        log(
            f"replaced {len(dropped['index'])} relative_position_index buffers by ones built for "
            f"the target window: {dropped['index']}"
        )
    elif any(_SWIN_TABLE.match(k) for k in out):
        log("relative_position_index: absent in the checkpoint (timm), built for the target window")
    if resized_tables:
        key, src, target = resized_tables[0]
        log(
            f"relative_position_bias_table: {len(resized_tables)} tables resized bicubically from "
            f"window {src} ({(2 * src - 1) ** 2} rows) to window {target} "
            f"({(2 * target - 1) ** 2} rows)"
        )
    return {prefix + k: v for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# ResNet
# --------------------------------------------------------------------------------------------
_BN_FIELDS = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_TV_STEM_CONV = re.compile(r"conv1\.weight$")
_TV_STEM_BN = re.compile(rf"bn1\.{_BN_FIELDS}$")
_TV_CONV = re.compile(r"layer([1-4])\.(\d+)\.conv([1-3])\.weight$")
_TV_BN = re.compile(rf"layer([1-4])\.(\d+)\.bn([1-3])\.{_BN_FIELDS}$")
_TV_SHORTCUT_CONV = re.compile(r"layer([1-4])\.(\d+)\.downsample\.0\.weight$")
_TV_SHORTCUT_BN = re.compile(rf"layer([1-4])\.(\d+)\.downsample\.1\.{_BN_FIELDS}$")


def convert_torchvision_resnet_to_d2(
    state_dict: Mapping[str, Tensor],
    *,
    prefix: str = "",
    log: Log = logger.info,
) -> dict[str, Tensor]:
    """Convert a torchvision ResNet (18..152) state_dict to detectron2's ``ResNet`` names.

    ``layer<k>`` becomes ``res<k+1>``, the stem ``conv1``/``bn1`` becomes ``stem.conv1`` and
    ``stem.conv1.norm``, ``bn<j>`` of a block becomes ``conv<j>.norm`` and ``downsample.{0,1}``
    becomes ``shortcut`` / ``shortcut.norm``. BatchNorm statistics go to the buffers of the
    same names in ``FrozenBN`` (weight, bias, running_mean, running_var). Dropped: ``fc`` (the
    classifier) and ``num_batches_tracked`` (FrozenBN has no such buffer).

    torchvision's ResNet strides in the 3x3 conv, so the detectron2 model needs
    ``MODEL.RESNETS.STRIDE_IN_1X1 False``, and it expects RGB input normalized by ImageNet's
    mean/std (``INPUT.FORMAT "RGB"``, ``MODEL.PIXEL_MEAN/STD``), as Mask2Former's R50 configs set.
    """
    source = unwrap_state_dict(state_dict, "ResNet state_dict")
    out: dict[str, Tensor] = {}
    dropped, unknown = [], []
    for key, value in source.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            dropped.append(key)
            continue
        if _TV_STEM_CONV.match(key):
            new = "stem.conv1.weight"
        elif m := _TV_STEM_BN.match(key):
            new = f"stem.conv1.norm.{m.group(1)}"
        elif m := _TV_CONV.match(key):
            new = f"res{int(m.group(1)) + 1}.{m.group(2)}.conv{m.group(3)}.weight"
        elif m := _TV_BN.match(key):
            new = f"res{int(m.group(1)) + 1}.{m.group(2)}.conv{m.group(3)}.norm.{m.group(4)}"
        elif m := _TV_SHORTCUT_CONV.match(key):
            new = f"res{int(m.group(1)) + 1}.{m.group(2)}.shortcut.weight"
        elif m := _TV_SHORTCUT_BN.match(key):
            new = f"res{int(m.group(1)) + 1}.{m.group(2)}.shortcut.norm.{m.group(3)}"
        else:
            unknown.append(key)
            continue
        out[prefix + new] = value
    if unknown:
        raise ValueError(
            f"not a torchvision ResNet checkpoint: {len(unknown)} unrecognised entries, "
            f"e.g. {unknown[:8]}"
        )
    if not any(k.endswith("stem.conv1.weight") for k in out):
        raise ValueError("not a torchvision ResNet checkpoint: no conv1.weight")
    if dropped:
        fc = [k for k in dropped if k.startswith("fc.")]
        log(
            f"dropped the classifier {fc} and {len(dropped) - len(fc)} BatchNorm "
            "num_batches_tracked counters (FrozenBN keeps no counter)"
        )
    return out


def convert_file(input_path: str, output_path: str, convert, *, author: str) -> int:
    """The command-line tools' body: read ``input_path``, ``convert`` it, write a .pkl.

    Returns the process exit status; a bad input prints ``error: <file>: <why>`` to stderr
    (nothing is written) instead of raising.
    """
    import sys

    try:
        converted = convert(load_source_state_dict(input_path))
    except (OSError, ValueError, ImportError) as e:
        msg = str(e)
        if input_path not in msg:
            msg = f"{input_path}: {msg}"
        print(f"error: {msg}", file=sys.stderr)
        return 1
    save_d2_checkpoint(converted, output_path, author=author)
    print(f"wrote {len(converted)} tensors to {output_path}")
    return 0
