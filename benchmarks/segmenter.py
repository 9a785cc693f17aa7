"""End-to-end inference benchmark of Segmenter (Seg-T/S/B-Mask/16 at 512, Seg-L-Mask/16 at 640).

What it measures, for each model, in one run (random weights: the cost does not depend on them):
  * the model's core path on a batch: ``Segmenter.predict_logits`` on a normalised (N, 3, S, S)
    tensor, S the model's window (512; 640 for Seg-L), i.e. what the meta-architecture's
    inference runs for an image the size of its window: ViT backbone, Mask Transformer decoder,
    bilinear upsampling of the patch logits to the input size (the patch padding and crop it
    also does are no-ops at these sizes). Batch 8 under bf16 autocast on CUDA (the issue's
    setting), batch 1 in fp32 on the CPU by default.
  * the meta-architecture's ``forward`` at batch 1 on a list of one dataset dict (a uint8
    image with "height"/"width"), under ``torch.inference_mode()``: on top of the core path it
    pays normalisation, the sliding-window glue (one window here), the resize to the requested
    size and the softmax.

Both are timed as the median of the timed runs after warm-up runs, with
``torch.cuda.synchronize()`` around each on CUDA, and reported as ms per image and images/s.
The three modes below are timed in interleaved rounds (one run of each per round), so a change
of load on a shared machine falls on all of them rather than on one.

Every figure is taken three times, in the same run, on the same inputs:
  * seg_zoo: the model as built from ``configs/ade20k/semantic-segmentation/segmenter/``.
  * timm + decoder: timm's ``VisionTransformer`` of the same size, holding seg_zoo's encoder
    weights (the parameter names are timm's), its patch tokens from ``forward_features``
    reshaped to a map, then the *same* Mask Transformer instance and the same upsampling. For
    the list-of-dicts row the timm encoder replaces ``model.backbone`` for the duration.
  * explicit attention: seg_zoo's model in :func:`reference_mode`, where every ViT attention
    (the encoder's blocks and the decoder's, which are the same ``Attention`` class) builds the
    attention matrix explicitly, ``softmax(q @ k^T * scale) @ v``, as the official Segmenter
    code does, instead of calling ``F.scaled_dot_product_attention``. It stands in for the
    official implementation (which cannot live in this repository).

The table gives ratios reference / seg_zoo (> 1: seg_zoo is faster). On CUDA the core rows of
Seg-B-Mask/16 and Seg-L-Mask/16 are checked against the issue's targets (one H100, batch 8,
bf16 autocast): <= 1.35 and <= 6 ms per image (the official code: 4.05 and 18.4 ms); the
verdict is only given at batch 8 under bf16, and on another GPU it is indicative only.

Run counts: CUDA 5 warm-up + 20 timed runs; CPU 1 + 3; ``--quick``: CUDA 3 + 5, CPU 1 + 1.

Usage:
    python benchmarks/segmenter.py                          # CPU: T and S, batch 1, fp32
    python benchmarks/segmenter.py --device cuda            # T/S/B/L, batch 8, bf16 autocast
    python benchmarks/segmenter.py --quick --threads 2      # fewer runs
    python benchmarks/segmenter.py --models base --batch-size 2 --dtype bf16 --skip-forward
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn

# Runs from a checkout without installing seg_zoo; _common.py lies next to this file, whose
# folder is not on sys.path when the tests load the file by path.
BENCHMARKS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.join(BENCHMARKS_DIR, "..")
sys.path[:0] = [REPO_ROOT, BENCHMARKS_DIR]

import _common  # noqa: E402

# Names of this script's own API as well (in __all__), hence imported unqualified.
from _common import DTYPES, make_images, make_inference_input, time_call, time_modes  # noqa: E402
from detectron2.config import CfgNode, get_cfg  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from timm.models.vision_transformer import VisionTransformer as TimmVisionTransformer  # noqa: E402

from seg_zoo import add_seg_zoo_config  # noqa: E402

# The module whose Attention class reference mode patches (encoder and decoder blocks use it).
_VIT_MODULE = importlib.import_module("seg_zoo.modeling.backbone.vit")

__all__ = [
    "CONFIGS",
    "DTYPES",
    "H100_TARGETS_MS",
    "TINY_OPTS",
    "Row",
    "TimmBackbone",
    "build_benchmark_cfg",
    "build_segmenter",
    "build_timm_vit",
    "explicit_attention_forward",
    "format_table",
    "main",
    "make_images",
    "make_inference_input",
    "reference_core_logits",
    "reference_mode",
    "run_benchmark",
    "seg_zoo_core_logits",
    "in_reference_mode",
    "time_call",
    "time_modes",
    "timm_backbone",
    "with_timm_backbone",
]

_CONFIG_DIR = "configs/ade20k/semantic-segmentation/segmenter"
# model -> (display name, config relative to the repository root, image side = window size).
CONFIGS = {
    "tiny": ("Seg-T-Mask/16", f"{_CONFIG_DIR}/seg_tiny_mask.yaml", 512),
    "small": ("Seg-S-Mask/16", f"{_CONFIG_DIR}/seg_small_mask.yaml", 512),
    "base": ("Seg-B-Mask/16", f"{_CONFIG_DIR}/seg_base_mask.yaml", 512),
    "large": ("Seg-L-Mask/16", f"{_CONFIG_DIR}/seg_large_mask_640.yaml", 640),
}
CPU_DEFAULT_MODELS = ("tiny", "small")

# The targets on one H100 (batch 8, bf16 autocast, full model), ms per image, and what
# the official implementation measures there.
H100_TARGETS_MS = {"base": 1.35, "large": 6.0}
OFFICIAL_H100_MS = {"base": 4.05, "large": 18.4}
TARGET_BATCH, TARGET_DTYPE = 8, "bf16"

# A ViT small enough for the smoke test (one block of width 64 on 64x64 images, 5 classes),
# laid over the Seg-T config; the hidden --tiny flag runs it.
TINY_OPTS = [
    "MODEL.VIT.EMBED_DIM",
    "64",
    "MODEL.VIT.DEPTH",
    "1",
    "MODEL.VIT.NUM_HEADS",
    "2",
    "MODEL.VIT.PRETRAIN_IMG_SIZE",
    "64",
    "MODEL.SEGMENTER.N_LAYERS",
    "1",
    "MODEL.SEGMENTER.WINDOW_SIZE",
    "64",
    "MODEL.SEGMENTER.WINDOW_STRIDE",
    "64",
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
    "5",
]
TINY_SIZE = 64


# ---------------------------------------------------------------------------------------------
# Reference mode: attention computed the way the official Segmenter code does
# ---------------------------------------------------------------------------------------------


def explicit_attention_forward(self, x: torch.Tensor) -> torch.Tensor:
    """``Attention.forward`` with the (L, L) attention matrix built explicitly.

    Same weights and layout as seg_zoo's ``Attention`` (timm's qkv order); the matrix product,
    softmax and second product are separate kernels, so the matrix is materialised.
    """
    n, length, dim = x.shape
    head_dim = dim // self.num_heads
    # (N, L, 3*D) -> (3, N, heads, L, D/heads)
    qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    attn = (q @ k.transpose(-2, -1)) * head_dim**-0.5  # (N, heads, L, L)
    attn = attn.softmax(dim=-1)
    if self.training and self.attn_drop > 0:
        attn = F.dropout(attn, self.attn_drop)
    x = (attn @ v).transpose(1, 2).reshape(n, length, dim)
    return self.proj_drop(self.proj(x))


@contextlib.contextmanager
def reference_mode() -> Iterator[None]:
    """Run seg_zoo's ViT attention as explicit matrix products (see the module docstring).

    Patches ``Attention.forward`` of ``seg_zoo.modeling.backbone.vit`` for the duration of the
    block, so every instance (encoder and Mask Transformer blocks) is affected; weights and
    everything else are untouched, and the original method is restored on exit.
    """
    attention = _VIT_MODULE.Attention
    original = attention.forward
    try:
        attention.forward = explicit_attention_forward
        yield
    finally:
        attention.forward = original


# ---------------------------------------------------------------------------------------------
# Models and inputs
# ---------------------------------------------------------------------------------------------


def build_benchmark_cfg(model: str, device: str = "cpu", opts: Sequence[str] = ()) -> CfgNode:
    """The repository's config of ``model`` ("tiny" | "small" | "base" | "large"), random init.

    ``opts`` are KEY VALUE overrides applied last (the smoke test shrinks the model with them).
    """
    if model not in CONFIGS:
        raise ValueError(f"unknown model {model!r}; choose from {sorted(CONFIGS)}")
    path = os.path.join(REPO_ROOT, CONFIGS[model][1])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file for {model} not found: {path}")
    if len(opts) % 2:
        raise ValueError(f"opts must be KEY VALUE pairs, got an odd number: {list(opts)}")
    cfg = get_cfg()
    add_seg_zoo_config(cfg)
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = ""  # random init: no download, and weights change no timing
    cfg.merge_from_list(list(opts))
    if cfg.MODEL.META_ARCHITECTURE != "Segmenter" or cfg.MODEL.BACKBONE.NAME != (
        "build_vit_backbone"
    ):
        raise ValueError(
            f"{path}: expected MODEL.META_ARCHITECTURE 'Segmenter' with backbone "
            f"'build_vit_backbone', got {cfg.MODEL.META_ARCHITECTURE!r} / "
            f"{cfg.MODEL.BACKBONE.NAME!r}"
        )
    return cfg


def build_segmenter(cfg: CfgNode, seed: int = 0) -> nn.Module:
    """``build_model(cfg)`` with a fixed seed, in eval mode."""
    torch.manual_seed(seed)
    model = build_model(cfg)
    return model.eval()


def build_timm_vit(backbone: nn.Module) -> TimmVisionTransformer:
    """timm's ``VisionTransformer`` of the backbone's size, holding the backbone's weights.

    Sized for the backbone's position-embedding grid (``pretrain_img_size``), so it takes
    images of exactly that size; class token, no classifier, the backbone's LayerNorm eps.
    """
    if backbone.dist_token is not None:
        raise ValueError("build_timm_vit: distilled (DeiT) backbones are not benchmarked")
    block = backbone.blocks[0]
    embed_dim = backbone.embed_dim
    vit = TimmVisionTransformer(
        img_size=backbone.pretrain_grid[0] * backbone.patch_size,
        patch_size=backbone.patch_size,
        embed_dim=embed_dim,
        depth=len(backbone.blocks),
        num_heads=block.attn.num_heads,
        mlp_ratio=block.mlp.fc1.out_features / embed_dim,
        qkv_bias=block.attn.qkv.bias is not None,
        num_classes=0,
        class_token=True,
        norm_layer=functools.partial(nn.LayerNorm, eps=backbone.norm.eps),
        weight_init="skip",  # the weights are copied next
    )
    # Same parameter names (seg_zoo's ViT uses timm's): a strict load checks it.
    vit.load_state_dict(backbone.state_dict(), strict=True)
    param = next(backbone.parameters())
    return vit.to(device=param.device, dtype=param.dtype).eval()


class TimmBackbone(nn.Module):
    """timm's ViT as a stand-in for seg_zoo's backbone: (N, 3, H, W) -> {feature: (N, D, h, w)}."""

    def __init__(self, vit: TimmVisionTransformer, feature: str = "vit"):
        super().__init__()
        self.vit = vit
        self.feature = feature

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.vit.forward_features(images)[:, self.vit.num_prefix_tokens :]  # (N, h*w, D)
        patch = self.vit.patch_embed.patch_size
        h, w = images.shape[-2] // patch[0], images.shape[-1] // patch[1]
        return {self.feature: tokens.transpose(1, 2).reshape(images.shape[0], -1, h, w)}


@contextlib.contextmanager
def timm_backbone(model: nn.Module, vit: TimmVisionTransformer) -> Iterator[None]:
    """Swap ``model.backbone`` for timm's ViT for the duration of the block."""
    original = model.backbone
    feature = model.sem_seg_head.in_feature
    try:
        model.backbone = TimmBackbone(vit, feature)
        yield
    finally:
        model.backbone = original


def seg_zoo_core_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """seg_zoo's core path: the meta-architecture's own ``predict_logits`` (N, K, H, W)."""
    return model.predict_logits(images)


def reference_core_logits(
    vit: TimmVisionTransformer, head: nn.Module, images: torch.Tensor, feature: str = "vit"
) -> torch.Tensor:
    """timm tokens -> the given Mask Transformer -> bilinear upsampling to the input size."""
    if images.shape[-2:] != tuple(vit.patch_embed.img_size):
        raise ValueError(
            f"reference_core_logits: images {tuple(images.shape)} do not match the timm ViT's "
            f"img_size {tuple(vit.patch_embed.img_size)}"
        )
    features = TimmBackbone(vit, feature)(images)
    logits = head(features)  # (N, K, h, w)
    return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------------------
# Measurements (the timing itself is _common.time_modes)
# ---------------------------------------------------------------------------------------------


def in_reference_mode(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run inside :func:`reference_mode` (entered and left at every call)."""

    def call():
        with reference_mode():
            return fn()

    return call


def with_timm_backbone(
    model: nn.Module, vit: TimmVisionTransformer, fn: Callable[[], object]
) -> Callable[[], object]:
    """``fn`` run with timm's ViT as ``model.backbone`` (swapped and restored at every call)."""

    def call():
        with timm_backbone(model, vit):
            return fn()

    return call


def _max_abs_diff(a, b) -> float:
    if isinstance(a, list):  # meta-arch outputs: [{"sem_seg": (K, H, W)}]
        return max(_max_abs_diff(x["sem_seg"], y["sem_seg"]) for x, y in zip(a, b))
    return float((a.float() - b.float()).abs().max())


# ---------------------------------------------------------------------------------------------
# The run and its table
# ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    model: str  # key of CONFIGS
    path: str  # "core" (predict_logits on a batch) or "forward" (meta-arch, list of dicts)
    size: int
    batch: int
    dtype: str
    ours_ms: float  # per call (the whole batch)
    timm_ms: float | None = None
    explicit_ms: float | None = None
    timm_diff: float | None = None  # max |logits (probabilities for "forward") - seg_zoo's|
    explicit_diff: float | None = None

    def per_image(self, ms: float | None) -> float | None:
        return None if ms is None else ms / self.batch


def _fmt_diff(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def _target(row: Row, device: str) -> str:
    if row.path != "core" or row.model not in H100_TARGETS_MS or not device.startswith("cuda"):
        return "-"
    target = H100_TARGETS_MS[row.model]
    if row.batch != TARGET_BATCH or row.dtype != TARGET_DTYPE:
        return f"<= {target} (bs{TARGET_BATCH} {TARGET_DTYPE} only)"
    verdict = "PASS" if row.per_image(row.ours_ms) <= target else "FAIL"
    return f"<= {target} {verdict}"


_PATH_LABELS = {"core": "core (backbone+decoder+upsample)", "forward": "meta-arch forward(list)"}


def format_table(rows: Sequence[Row], device: str, notes: Sequence[str] = ()) -> str:
    """A Markdown table of the rows (ratios are reference / seg_zoo), then the notes."""
    lines = [
        "| model | path | size | batch | dtype | seg_zoo ms/img | seg_zoo img/s "
        "| timm+decoder ms/img | timm+decoder img/s | explicit-attn ms/img | explicit-attn img/s "
        "| timm/seg_zoo | explicit/seg_zoo | max abs diff timm / explicit | H100 target ms/img |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ours, ref_timm, ref_exp = (r.per_image(m) for m in (r.ours_ms, r.timm_ms, r.explicit_ms))
        cells = [CONFIGS[r.model][0], _PATH_LABELS[r.path], f"{r.size}x{r.size}", str(r.batch)]
        cells.append(r.dtype)
        for ms in (ours, ref_timm, ref_exp):
            cells += [_common.fmt_number(ms), _common.fmt_rate(ms, 1)]
        cells += [_common.fmt_ratio(ref_ms, r.ours_ms) for ref_ms in (r.timm_ms, r.explicit_ms)]
        cells.append(f"{_fmt_diff(r.timm_diff)} / {_fmt_diff(r.explicit_diff)}")
        cells.append(_target(r, device))
        lines.append("| " + " | ".join(cells) + " |")
    lines.extend(notes)
    if device.startswith("cuda"):
        lines.append(
            "Issue targets on one H100, batch 8, bf16 autocast, core path: "
            + "; ".join(
                f"{CONFIGS[m][0]} <= {t} ms/img (official: {OFFICIAL_H100_MS[m]} ms)"
                for m, t in H100_TARGETS_MS.items()
            )
            + "."
        )
    return "\n".join(lines)


def _measure_model(
    name: str,
    cfg: CfgNode,
    side: int,
    batch_size: int,
    dtype: str,
    warmup: int,
    repeats: int,
    device: str,
    skip_forward: bool,
    skip_reference: bool,
    log: Callable[[str], None],
) -> list[Row]:
    """The rows of one model: its core path, then (unless skipped) its batch-1 forward."""
    model = build_segmenter(cfg)
    vit = build_timm_vit(model.backbone) if not skip_reference else None
    head, feature = model.sem_seg_head, model.sem_seg_head.in_feature

    def measure(row: Row, ours: Callable[[], object], timm_ref: Callable[[], object]) -> Row:
        calls = {"ours": ours}
        if vit is not None:
            calls.update(timm=timm_ref, explicit=in_reference_mode(ours))
        results = time_modes(calls, warmup, repeats, device, dtype)
        row.ours_ms, ours_out = results["ours"]
        if vit is not None:
            row.timm_ms, row.explicit_ms = results["timm"][0], results["explicit"][0]
            row.timm_diff = _max_abs_diff(results["timm"][1], ours_out)
            row.explicit_diff = _max_abs_diff(results["explicit"][1], ours_out)
        log(
            f"{CONFIGS[name][0]} {row.path} bs{row.batch} {side}: seg_zoo {row.ours_ms:.2f} ms, "
            f"timm {_common.fmt_number(row.timm_ms)} ms, "
            f"explicit {_common.fmt_number(row.explicit_ms)} ms (per call)"
        )
        return row

    images = make_images(batch_size, side, device)
    rows = [
        measure(
            Row(name, "core", side, batch_size, dtype, 0.0),
            lambda: seg_zoo_core_logits(model, images),
            lambda: reference_core_logits(vit, head, images, feature),
        )
    ]
    if not skip_forward:
        inputs = make_inference_input(side)
        rows.append(
            measure(
                Row(name, "forward", side, 1, dtype, 0.0),
                lambda: model(inputs),
                with_timm_backbone(model, vit, lambda: model(inputs)),
            )
        )
    return rows


def run_benchmark(
    device: str = "cpu",
    models: Sequence[str] = CPU_DEFAULT_MODELS,
    batch_size: int = 1,
    dtype: str = "fp32",
    warmup: int = 1,
    repeats: int = 3,
    skip_forward: bool = False,
    skip_reference: bool = False,
    opts: Sequence[str] = (),
    size: int | None = None,
    log: Callable[[str], None] = print,
) -> list[Row]:
    """Measure every model's core path (and its batch-1 forward) in the three modes.

    ``size`` overrides the image side (default: each model's window size); ``opts`` are
    config overrides (the smoke test's tiny ViT).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = []
    for name in models:
        cfg = build_benchmark_cfg(name, device, opts)
        side = size or cfg.MODEL.SEGMENTER.WINDOW_SIZE
        rows += _measure_model(
            name,
            cfg,
            side,
            batch_size,
            dtype,
            warmup,
            repeats,
            device,
            skip_forward,
            skip_reference,
            log,
        )
        if device.startswith("cuda"):
            torch.cuda.empty_cache()  # the model is gone: free its memory for the next one
    return rows


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _common.new_parser(__doc__)
    parser.add_argument(
        "--models",
        nargs="+",
        choices=sorted(CONFIGS),
        default=None,
        help="default: all four on CUDA, tiny and small on the CPU",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="core-path batch (CUDA 8, CPU 1)"
    )
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default=None,
        help="autocast dtype, fp32 = no autocast (CUDA bf16, CPU fp32)",
    )
    parser.add_argument("--amp", action="store_true", help="same as --dtype bf16")
    parser.add_argument("--quick", action="store_true", help="CUDA 3+5 runs, CPU 1+1")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up runs")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--skip-forward", action="store_true", help="no list-of-dicts rows")
    parser.add_argument("--skip-reference", action="store_true")
    # The smoke test's one-block ViT on 64x64 images (not a benchmark).
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _common.check_args(
        parser, args, positive=("batch_size", "repeats", "threads"), non_negative=("warmup",)
    )
    if args.amp and args.dtype not in (None, "bf16"):
        parser.error(f"--amp means --dtype bf16, but --dtype {args.dtype} was given")
    return args


def main(argv: Sequence[str] | None = None) -> str:
    """Run the Segmenter benchmark from the command line; prints and returns the Markdown table."""
    args = _parse_args(argv)
    warmup, repeats = _common.run_settings(
        args, quick={"cpu": (1, 1), "cuda": (3, 5)}, full={"cpu": (1, 3), "cuda": (5, 20)}
    )
    cpu = args.device == "cpu"
    models = args.models or (list(CPU_DEFAULT_MODELS) if cpu else list(CONFIGS))
    batch_size = args.batch_size or (1 if cpu else TARGET_BATCH)
    dtype = "bf16" if args.amp else (args.dtype or ("fp32" if cpu else TARGET_DTYPE))
    opts, size = (TINY_OPTS, TINY_SIZE) if args.tiny else ((), None)
    if args.tiny:
        models = args.models or ["tiny"]

    rows = run_benchmark(
        device=args.device,
        models=models,
        batch_size=batch_size,
        dtype=dtype,
        warmup=warmup,
        repeats=repeats,
        skip_forward=args.skip_forward,
        skip_reference=args.skip_reference,
        opts=opts,
        size=size,
    )
    where = _common.describe_device(args.device)
    notes = [
        f"torch {torch.__version__}, timm {timm.__version__}, {where}; medians of {repeats} "
        f"timed run(s) after {warmup} warm-up; random init; ms/img = ms per call / batch; "
        "the three modes' timed runs are interleaved (one of each per round).",
        "max abs diff: vs seg_zoo's output of the same row (logits for core, softmax "
        "probabilities for forward).",
    ]
    if args.tiny:
        notes.append("--tiny: one-block width-64 ViT on 64x64 images (smoke test, not a result).")
    table = format_table(rows, args.device, notes)
    print(table)
    return table


if __name__ == "__main__":
    main()
