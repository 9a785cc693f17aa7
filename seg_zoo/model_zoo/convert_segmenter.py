"""Official Segmenter checkpoints (github.com/rstrudel/segmenter) -> seg_zoo's ``Segmenter``.

An official release is a directory with ``checkpoint.pth`` (``{"model": state_dict, ...}``, names
``encoder.*`` for the ViT and ``decoder.*`` for the decoder) and ``variant.yml`` (how the model
was built: ``net_kwargs`` with ``backbone``, ``d_model``, ``n_heads``, ``n_layers``,
``patch_size``, ``image_size``, ``n_cls``, ``normalization`` and ``decoder``; ``inference_kwargs``
with ``window_size`` and ``window_stride``).

seg_zoo's ViT keeps timm's names and its decoders keep the official ones, so the weights only
change prefix (``encoder.`` -> ``backbone.``, ``decoder.`` -> ``sem_seg_head.``); the ImageNet
classifier the encoder still carries is dropped. The variant becomes a config:
:func:`config_from_variant`. ``tools/convert-segmenter-to-d2.py`` is the command line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from torch import Tensor

__all__ = [
    "check_num_classes",
    "config_from_variant",
    "convert_segmenter_state_dict",
    "decoder_kind",
    "vit_dims_from_backbone_name",
]

logger = logging.getLogger(__name__)

Log = Callable[[str], None]

# The encoder's ImageNet classifier (DeiT has a second one for the distillation token); the
# segmentation model has no use for it, so it is not loaded.
_ENCODER_CLASSIFIER = re.compile(r"^encoder\.(head|head_dist|pre_logits|fc_norm)\.")

_BLOCK_PARAMS = r"blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)"
# Every name the seg_zoo ViT backbone has, so an unfamiliar encoder entry is reported here
# rather than as an "unexpected key" warning when the converted file is loaded.
_ENCODER_NAMES = re.compile(
    r"^(cls_token|dist_token|pos_embed|patch_embed\.proj\.(weight|bias)|norm\.(weight|bias)|"
    + _BLOCK_PARAMS
    + r")$"
)
# The names of SegmenterLinearDecoder and SegmenterMaskTransformer (the official ones).
_LINEAR_NAMES = re.compile(r"^head\.(weight|bias)$")
_MASK_NAMES = re.compile(
    r"^(cls_emb|proj_patch|proj_classes|proj_dec\.(weight|bias)|decoder_norm\.(weight|bias)|"
    r"mask_norm\.(weight|bias)|" + _BLOCK_PARAMS + r")$"
)

# timm sizes of the backbones the official configs name.
_VIT_SIZES = {  # name: (EMBED_DIM, DEPTH, NUM_HEADS)
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}
_BACKBONE_NAME = re.compile(
    r"^(?P<family>vit|deit)_(?P<size>tiny|small|base|large)(?P<distilled>_distilled)?"
    r"_patch(?P<patch>\d+)_(?P<res>\d+)$"
)

# The two normalisations of the official code, on detectron2's 0-255 pixel scale (RGB).
_NORMALIZATION = {
    "vit": ([127.5, 127.5, 127.5], [127.5, 127.5, 127.5]),  # mean = std = 0.5
    "deit": ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375]),  # ImageNet
}

# Official decoder name -> seg_zoo head (MODEL.SEM_SEG_HEAD.NAME)
_HEADS = {"linear": "SegmenterLinearDecoder", "mask_transformer": "SegmenterMaskTransformer"}


def decoder_kind(state_dict: Mapping[str, Tensor], source: str = "checkpoint") -> str:
    """``"linear"`` or ``"mask_transformer"``: which official decoder wrote ``decoder.*``."""
    if "decoder.cls_emb" in state_dict:
        return "mask_transformer"
    if "decoder.head.weight" in state_dict:
        return "linear"
    raise ValueError(
        f"{source}: neither decoder.cls_emb (Mask Transformer) nor decoder.head.weight (linear "
        "decoder) is present; is this an official Segmenter checkpoint? "
        f"First keys: {sorted(state_dict)[:5]}"
    )


def convert_segmenter_state_dict(
    state_dict: Mapping[str, Tensor], *, source: str = "checkpoint", log: Log | None = None
) -> dict[str, Tensor]:
    """Rename an official Segmenter state_dict to the names of seg_zoo's ``Segmenter``.

    ``encoder.X`` -> ``backbone.X`` and ``decoder.X`` -> ``sem_seg_head.X``; the encoder's
    ImageNet classifier (``encoder.head*``) is dropped, with a message. Every other name is
    checked against the backbone's and the decoder's, so a checkpoint of another model fails
    here with the offending key named, not later as a partial load.
    """
    log = log or logger.info
    kind = decoder_kind(state_dict, source)
    decoder_names = _MASK_NAMES if kind == "mask_transformer" else _LINEAR_NAMES
    out: dict[str, Tensor] = {}
    dropped = []
    for key, value in state_dict.items():
        if _ENCODER_CLASSIFIER.match(key):
            dropped.append(key)
            continue
        prefix, _, rest = key.partition(".")
        if prefix == "encoder" and _ENCODER_NAMES.match(rest):
            out["backbone." + rest] = value
        elif prefix == "decoder" and decoder_names.match(rest):
            out["sem_seg_head." + rest] = value
        else:
            raise ValueError(
                f"{source}: unexpected entry {key!r} (shape {tuple(value.shape)}) for a Segmenter "
                f"with a {kind} decoder; expected encoder.* ViT names and decoder.* names of "
                f"{_HEADS[kind]}"
            )
    if dropped:
        log(f"{source}: dropped the encoder's ImageNet classifier ({', '.join(sorted(dropped))})")
    return out


def check_num_classes(state_dict: Mapping[str, Tensor], num_classes: int, path: str) -> int:
    """Raise a ValueError when the checkpoint's class count differs from ``num_classes``.

    The class count K is read from ``decoder.cls_emb`` (1, K, d) or ``decoder.head.weight``
    (K, d) (or their ``sem_seg_head.`` names after conversion). Returns K.
    """
    for prefix in ("decoder.", "sem_seg_head."):
        for name, dim, ndim in (("cls_emb", 1, 3), ("head.weight", 0, 2)):
            key = prefix + name
            if key not in state_dict:
                continue
            shape = tuple(state_dict[key].shape)
            if len(shape) != ndim:
                raise ValueError(
                    f"{path}: {key} has shape {shape}; expected {ndim} dimensions "
                    f"({'(1, K, d)' if ndim == 3 else '(K, d)'})"
                )
            k = shape[dim]
            if k != num_classes:
                raise ValueError(
                    f"{path}: the checkpoint has {k} classes ({key} has shape {shape}) but the "
                    f"config has MODEL.SEM_SEG_HEAD.NUM_CLASSES {num_classes}; set "
                    f"MODEL.SEM_SEG_HEAD.NUM_CLASSES {k} to load it"
                )
            return k
    raise ValueError(
        f"{path}: no class head found (neither decoder.cls_emb nor decoder.head.weight)"
    )


def vit_dims_from_backbone_name(name: str) -> dict:
    """MODEL.VIT.* implied by an official backbone name such as ``vit_tiny_patch16_384`` or
    ``deit_base_distilled_patch16_384``."""
    m = _BACKBONE_NAME.match(str(name))
    if m is None:
        raise ValueError(
            f"net_kwargs.backbone {name!r} is not a known Segmenter backbone "
            "(vit_{tiny,small,base,large}_patch{8,16,32}_384 or deit_*[_distilled]_patch16_*)"
        )
    dim, depth, heads = _VIT_SIZES[m["size"]]
    return {
        "EMBED_DIM": dim,
        "DEPTH": depth,
        "NUM_HEADS": heads,
        "PATCH_SIZE": int(m["patch"]),
        "DISTILLED": m["distilled"] is not None,
    }


def _get(mapping: Mapping, key: str, where: str, source: str):
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise KeyError(f"{source}: {where}{key} is missing")
    return mapping[key]


def _square_size(value, key: str, source: str) -> int:
    """One side from an official size, written as an int or as [H, W]."""
    if isinstance(value, int):
        return value
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) for v in value)
    ):
        if value[0] != value[1]:
            raise ValueError(
                f"{source}: {key} {list(value)} is not square; seg_zoo's ViT position embedding "
                "(MODEL.VIT.PRETRAIN_IMG_SIZE) and sliding window are square"
            )
        return value[0]
    raise ValueError(f"{source}: {key} must be an int or [H, W], got {value!r}")


def config_from_variant(
    variant: Mapping,
    *,
    base_config_path: str | Path | None = None,
    weights: str = "",
    source: str = "variant.yml",
) -> dict:
    """A seg_zoo config (as a dict ready for ``yaml.safe_dump``) for an official variant.yml.

    With ``base_config_path`` (e.g. ``configs/ade20k/semantic-segmentation/segmenter/
    Base-Segmenter-ADE20K.yaml``) the config inherits the data pipeline and schedule from it via
    an absolute ``_BASE_``; without, it is standalone (model keys only, detectron2 defaults for the
    rest). Either way, every key that decides the network and its inference is written out.
    """
    net = _get(variant, "net_kwargs", "", source)
    backbone = _get(net, "backbone", "net_kwargs.", source)
    vit = vit_dims_from_backbone_name(backbone)
    # The variant's own sizes decide (they built the checkpoint); the name must agree with them.
    for key, cfg_key in (
        ("d_model", "EMBED_DIM"),
        ("n_layers", "DEPTH"),
        ("n_heads", "NUM_HEADS"),
        ("patch_size", "PATCH_SIZE"),
    ):
        if key in net and net[key] != vit[cfg_key]:
            raise ValueError(
                f"{source}: net_kwargs.{key} {net[key]} disagrees with backbone {backbone!r} "
                f"({vit[cfg_key]})"
            )
    image_size = _square_size(_get(net, "image_size", "net_kwargs.", source), "image_size", source)
    n_cls = _get(net, "n_cls", "net_kwargs.", source)
    if not isinstance(n_cls, int) or n_cls < 1:
        raise ValueError(f"{source}: net_kwargs.n_cls must be a positive int, got {n_cls!r}")

    normalization = net.get("normalization", variant.get("dataset_kwargs", {}).get("normalization"))
    if normalization not in _NORMALIZATION:
        raise ValueError(
            f"{source}: net_kwargs.normalization {normalization!r} is not one of "
            f"{sorted(_NORMALIZATION)}"
        )
    mean, std = _NORMALIZATION[normalization]

    decoder = _get(net, "decoder", "net_kwargs.", source)
    dec_name = _get(decoder, "name", "net_kwargs.decoder.", source)
    if dec_name not in _HEADS:
        raise ValueError(
            f"{source}: net_kwargs.decoder.name {dec_name!r} is not one of {sorted(_HEADS)}"
        )

    inference = variant.get("inference_kwargs") or {}
    window_size = _square_size(
        inference.get("window_size", image_size), "inference_kwargs.window_size", source
    )
    window_stride = _square_size(
        inference.get("window_stride", window_size), "inference_kwargs.window_stride", source
    )
    if "window_size" not in inference:
        logger.info("%s: no inference_kwargs.window_size; using image_size %d", source, image_size)

    segmenter = {
        "IN_FEATURE": "vit",
        "WINDOW_SIZE": window_size,
        "WINDOW_STRIDE": window_stride,
    }
    if dec_name == "mask_transformer":
        segmenter["N_LAYERS"] = int(decoder.get("n_layers", 2))
        segmenter["DROPOUT"] = float(decoder.get("dropout", 0.1))
        segmenter["DROP_PATH_RATE"] = float(decoder.get("drop_path_rate", 0.0))

    cfg: dict = {}
    if base_config_path is not None:
        base = Path(base_config_path).resolve()
        if not base.is_file():
            raise FileNotFoundError(f"base config {str(base)!r} does not exist")
        cfg["_BASE_"] = str(base)
    cfg["MODEL"] = {
        "META_ARCHITECTURE": "Segmenter",
        "WEIGHTS": str(weights),
        "PIXEL_MEAN": mean,
        "PIXEL_STD": std,
        "BACKBONE": {"NAME": "build_vit_backbone"},
        "VIT": {
            **vit,
            "MLP_RATIO": 4.0,
            "QKV_BIAS": True,
            "DROP_PATH_RATE": float(net.get("drop_path_rate", 0.1)),
            "DROP_RATE": float(net.get("dropout", 0.0)),
            "PRETRAIN_IMG_SIZE": image_size,
            # The official ViT uses torch's LayerNorm default and resizes its position
            # embedding bilinearly; outputs only match the official model with both.
            "NORM_EPS": 1e-5,
            "POS_EMBED_INTERPOLATION": "bilinear",
        },
        "SEM_SEG_HEAD": {"NAME": _HEADS[dec_name], "NUM_CLASSES": n_cls, "IGNORE_VALUE": 255},
        "SEGMENTER": segmenter,
    }
    # The official evaluation resizes the shorter side to inference_kwargs.im_size before the
    # sliding window; the released variants set it equal to the window size.
    cfg["INPUT"] = {"MIN_SIZE_TEST": window_size}
    return cfg
