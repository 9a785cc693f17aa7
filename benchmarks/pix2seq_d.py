"""Inference benchmark of Pix2Seq-D: the image encoder, one denoiser step, and sampling.

What it measures, on one model with random weights (the cost does not depend on them), on a
batch (N, 3, S, S) of normalised images (standard normal values), masks at S / MASK_STRIDE:
  * encoder: ``Pix2SeqD.encode(images)``, i.e. ResNet 'c4' + transformer encoder + the pyramid
    merge to the mask resolution; reported per image.
  * denoiser step: ``_to_prediction(_denoise(x_t, gamma, fused, tokens, None))`` on the batch,
    with the encoder's outputs computed beforehand (not timed), x_t standard normal and gamma
    of t = 0.5: one TransUNet pass and the softmax -> analog-bits expectation, i.e. what every
    sampling step costs on top of the DDIM arithmetic.
  * generate, 5 / 10 / 20 steps: ``Pix2SeqD.generate(images, iterations=k)``: the encoder
    once, then k DDIM steps, then the bits decoded to (class, identity) label maps at mask
    resolution (post-processing to the original resolution is not included).

The model is the official size (ResNet-50, 12-layer width-512 encoder, TransUNet width 128
with 6 width-512 transformer blocks, 16 bits in two 256-way softmaxes, 133 classes), built
from the COCO recipe ``configs/coco/panoptic-segmentation/pix2seq_d/Base-Pix2SeqD-COCO.yaml``
with frozen batch norm (``OFFICIAL_OPTS`` below; the encoder runs in eval mode either way).
Defaults: CUDA image 1024 (mask 512), batch 8, bf16 autocast; CPU image 256 (mask 128),
batch 1, fp32.

Reference, in the same run, on the same weights and images: :func:`reference_generate`, the
DDIM loop of the official ``Scheduler.generate`` written out here with a denoiser call that
runs the whole conditional model, image encoder included, at every step -- what a direct port
that calls the full model per step does. seg_zoo encodes each image once and reuses the
tokens and fused features in every step. Both draw the same starting noise (a generator
seeded with MODEL.PIX2SEQ_D.SAMPLER_SEED, 0 by default; with a negative value, the global RNG
after ``torch.manual_seed(--seed)``); the table says whether their label maps are identical. The
seg_zoo and reference runs are interleaved (one of each per round), so a change of load on a
shared machine falls on both. Ratios are reference / seg_zoo (> 1: seg_zoo faster).

Every figure is the median of the timed runs after warm-up runs, under
``torch.inference_mode()`` (and ``torch.autocast`` for bf16/fp16), with
``torch.cuda.synchronize()`` around each run on CUDA; ms per image = ms per call / batch.
Run counts: CUDA 3 warm-up + 10 timed; CPU 1 + 2; ``--quick``: CUDA 2 + 3, CPU 1 + 1.

Usage:
    python benchmarks/pix2seq_d.py                          # CPU: image 256, batch 1, fp32
    python benchmarks/pix2seq_d.py --device cuda            # image 1024, batch 8, bf16
    python benchmarks/pix2seq_d.py --quick --threads 2      # one timed run
    python benchmarks/pix2seq_d.py --steps 5 20 --image-size 512 --batch-size 2 --dtype bf16
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

# Runs from a checkout without installing seg_zoo; _common.py lies next to this file, whose
# folder is not on sys.path when the tests load the file by path.
BENCHMARKS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.join(BENCHMARKS_DIR, "..")
sys.path[:0] = [REPO_ROOT, BENCHMARKS_DIR]

import _common  # noqa: E402

# Names of this script's own API as well (in __all__), hence imported unqualified.
from _common import DTYPES, make_images, time_modes  # noqa: E402
from detectron2.config import CfgNode  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

from seg_zoo.config import load_config  # noqa: E402
from seg_zoo.modeling.pix2seq_d.bits import analog_bits_to_label_map  # noqa: E402

__all__ = [
    "CONFIG",
    "DTYPES",
    "OFFICIAL_OPTS",
    "TINY_CONFIG",
    "TINY_OPTS",
    "Row",
    "build_benchmark_cfg",
    "build_pix2seq_d",
    "count_encoder_calls",
    "denoiser_step",
    "format_table",
    "main",
    "make_images",
    "reference_generate",
    "run_benchmark",
    "seg_zoo_generate",
    "time_modes",
]

CONFIG = "configs/coco/panoptic-segmentation/pix2seq_d/Base-Pix2SeqD-COCO.yaml"

# The COCO recipe as it is, with frozen BN statistics in place of SyncBN (the encoder is run in
# eval mode either way, and SyncBN needs a process group) and no dataset (nothing is read).
OFFICIAL_OPTS = [
    "MODEL.RESNETS.NORM", "FrozenBN",
    "DATASETS.TRAIN", "()",
    "DATASETS.TEST", "()",
]  # fmt: skip

# The smoke test's model (the hidden --tiny flag): the unit tests' config, no dataset read.
TINY_CONFIG = "configs/synthetic/pix2seq_d_R18_smoke.yaml"
TINY_OPTS = ["DATASETS.TRAIN", "()", "DATASETS.TEST", "()"]
TINY_SIZE = 64

DEFAULT_STEPS = (5, 10, 20)
CUDA_DEFAULTS = {"image_size": 1024, "batch_size": 8, "dtype": "bf16"}
CPU_DEFAULTS = {"image_size": 256, "batch_size": 1, "dtype": "fp32"}
# t of the noise level at which the single denoiser step is timed (its cost does not depend on it).
STEP_T = 0.5


# ---------------------------------------------------------------------------------------------
# Model and inputs
# ---------------------------------------------------------------------------------------------


def build_benchmark_cfg(
    device: str = "cpu", opts: Sequence[str] = OFFICIAL_OPTS, config: str = CONFIG
) -> CfgNode:
    """``config`` (relative to the repository) with ``opts`` (KEY VALUE pairs) applied, on
    ``device``, random init."""
    if len(opts) % 2:
        raise ValueError(f"opts must be KEY VALUE pairs, got an odd number: {list(opts)}")
    path = os.path.join(REPO_ROOT, config)
    cfg = load_config(path, list(opts))
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = ""  # random init: no download, and weights change no timing
    if cfg.MODEL.META_ARCHITECTURE != "Pix2SeqD":
        raise ValueError(
            f"{path}: MODEL.META_ARCHITECTURE is {cfg.MODEL.META_ARCHITECTURE!r}, expected "
            "'Pix2SeqD'"
        )
    return cfg


def build_pix2seq_d(cfg: CfgNode, seed: int = 0) -> nn.Module:
    """``build_model(cfg)`` with a fixed seed, in eval mode."""
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def _check_images(model: nn.Module, images: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
    div = model.size_divisibility
    if images.shape[-2] % div or images.shape[-1] % div:
        raise ValueError(
            f"image size {tuple(images.shape[-2:])} is not a multiple of the model's "
            f"size_divisibility {div} (MODEL.PIX2SEQ_D.SIZE_DIVISIBILITY, encoder and U-Net grids)"
        )


@contextlib.contextmanager
def count_encoder_calls(model: nn.Module) -> Iterator[list[tuple[int, ...]]]:
    """Record the input shape of every ``model.encoder`` call made inside the block."""
    calls: list[tuple[int, ...]] = []

    def hook(_module, args):
        calls.append(tuple(args[0].shape))

    handle = model.encoder.register_forward_pre_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


# ---------------------------------------------------------------------------------------------
# The measured paths
# ---------------------------------------------------------------------------------------------


def denoiser_step(
    model: nn.Module, x_t: torch.Tensor, gamma: torch.Tensor, fused: torch.Tensor, tokens
) -> torch.Tensor:
    """One denoiser evaluation as the sampler makes it: analog x0 estimate (N, n_bits, h, w)."""
    return model._to_prediction(model._denoise(x_t, gamma, fused, tokens, None))


def seg_zoo_generate(
    model: nn.Module, images: torch.Tensor, iterations: int, seed: int = 0
) -> torch.Tensor:
    """``model.generate`` after ``torch.manual_seed(seed)`` (its noise source when the model's
    SAMPLER_SEED is negative): label maps (N, 2, h, w)."""
    torch.manual_seed(seed)
    return model.generate(images, iterations=iterations)


def reference_generate(
    model: nn.Module, images: torch.Tensor, iterations: int, seed: int = 0
) -> torch.Tensor:
    """DDIM sampling that runs the full conditional model, image encoder included, per step.

    The loop of the official ``Scheduler.generate`` (DDIM, no self-conditioning): start from
    x_T ~ N(0, I); at step k use t = 1 - k / iterations and t_prev = max(1 - (k + 1 + td) /
    iterations, 0); x0 = clip(denoiser(x_t)); eps = (x_t - sqrt(g) x0) / sqrt(1 - g);
    x_prev = sqrt(g_prev) x0 + sqrt(1 - g_prev) eps; decode the last x0 to label maps. The
    noise is drawn in the dtype of the fused features (as seg_zoo does), after the first
    encoder call (the encoder draws no random numbers in eval), from a generator seeded with
    the model's ``sampler_seed`` (MODEL.PIX2SEQ_D.SAMPLER_SEED) when that is >= 0, else from
    the global RNG after ``torch.manual_seed(seed)`` -- the same source ``generate`` uses.
    """
    if model.sampler != "ddim" or model.self_cond != "none":
        raise ValueError(
            "reference_generate covers MODEL.PIX2SEQ_D.SAMPLER 'ddim' with SELF_COND 'none', "
            f"got {model.sampler!r} / {model.self_cond!r}"
        )
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive int, got {iterations!r}")
    _check_images(model, images)
    torch.manual_seed(seed)
    # The noise source the model uses: its own generator seeded with MODEL.PIX2SEQ_D.SAMPLER_SEED
    # when that is >= 0, else the global torch RNG.
    sampler_seed = getattr(model, "sampler_seed", -1)
    generator = None
    if sampler_seed >= 0:
        generator = torch.Generator(images.device).manual_seed(sampler_seed)
    n = images.shape[0]
    samples = x0 = None
    for k in range(iterations):
        tokens, fused = model.encode(images)  # the whole model per step: encoder again
        if samples is None:
            shape = (n, model.n_bits, fused.shape[-2], fused.shape[-1])
            samples = torch.randn(
                shape, generator=generator, device=images.device, dtype=fused.dtype
            )
        ones = torch.ones((n, 1, 1, 1), device=images.device, dtype=samples.dtype)
        t_now = ones * (1.0 - k / iterations)
        t_prev = (ones * (1.0 - (k + 1 + model.td) / iterations)).clamp(min=0.0)
        gamma, gamma_prev = model.infer_schedule(t_now), model.infer_schedule(t_prev)
        pred = denoiser_step(model, samples, gamma.reshape(-1), fused, tokens)
        if model.pred_type == "eps":
            raise ValueError("reference_generate covers the x-prediction types, not 'eps'")
        x0 = pred if model.x0_clip is None else pred.clamp(*model.x0_clip)
        eps = (samples - gamma.sqrt() * x0) / (1 - gamma).sqrt()
        samples = x0 * gamma_prev.sqrt() + eps * (1 - gamma_prev).sqrt()
    return analog_bits_to_label_map(x0, model.num_classes + 1, model.max_instances)


# ---------------------------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One table row; times are ms per call (a call handles ``batch`` images)."""

    name: str
    batch: int
    ours_ms: float
    ref_ms: float | None = None
    differing_pixels: int | None = None  # label-map entries where reference and seg_zoo differ

    def per_image(self, ms: float | None) -> float | None:
        return None if ms is None else ms / self.batch


def format_table(
    rows: Sequence[Row], image_size: int, mask_size: int, dtype: str, notes: Sequence[str] = ()
) -> str:
    """Markdown table of the rows, then the notes."""
    lines = [
        "| measurement | image / mask | batch | dtype | seg_zoo ms/img | seg_zoo img/s "
        "| re-encode ref ms/img | re-encode ref img/s | ref / seg_zoo | same label maps |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ours, ref = r.per_image(r.ours_ms), r.per_image(r.ref_ms)
        if r.differing_pixels is None:
            same = "-"
        elif r.differing_pixels == 0:
            same = "yes"
        else:
            same = f"no ({r.differing_pixels} values differ)"
        cells = [r.name, f"{image_size} / {mask_size}", str(r.batch), dtype]
        for ms in (ours, ref):
            cells += [_common.fmt_number(ms), _common.fmt_rate(ms)]
        cells += [_common.fmt_ratio(ref, ours), same]
        lines.append("| " + " | ".join(cells) + " |")
    lines.extend(notes)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def run_benchmark(
    device: str = "cpu",
    image_size: int = 256,
    batch_size: int = 1,
    dtype: str = "fp32",
    steps: Sequence[int] = DEFAULT_STEPS,
    warmup: int = 1,
    repeats: int = 2,
    opts: Sequence[str] = OFFICIAL_OPTS,
    config: str = CONFIG,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> tuple[list[Row], nn.Module]:
    """Measure the encoder, one denoiser step and ``generate`` for each of ``steps``.

    Returns the rows (encoder, denoiser step, one per step count) and the model.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not steps or any(s < 1 for s in steps):
        raise ValueError(f"steps must be positive ints, got {list(steps)}")
    model = build_pix2seq_d(build_benchmark_cfg(device, opts, config))
    images = make_images(batch_size, image_size, device, seed)
    _check_images(model, images)

    rows = []
    enc = time_modes({"ours": lambda: model.encode(images)}, warmup, repeats, device, dtype)
    ms, (tokens, fused) = enc["ours"]
    rows.append(Row("encoder (`encode`: ResNet + transformer + pyramid merge)", batch_size, ms))
    log(f"encoder: {ms:.2f} ms per batch of {batch_size}")

    g = torch.Generator().manual_seed(seed + 1)
    x_t = torch.randn(batch_size, model.n_bits, *fused.shape[-2:], generator=g)
    x_t = x_t.to(device=device, dtype=fused.dtype)
    gamma = model.infer_schedule(torch.full((batch_size,), STEP_T)).to(device, fused.dtype)
    step = time_modes(
        {"ours": lambda: denoiser_step(model, x_t, gamma, fused, tokens)},
        warmup,
        repeats,
        device,
        dtype,
    )
    ms = step["ours"][0]
    rows.append(Row("denoiser step (`_denoise` + `_to_prediction`)", batch_size, ms))
    log(f"denoiser step: {ms:.2f} ms per batch of {batch_size}")

    for k in steps:
        results = time_modes(
            {
                "ours": lambda k=k: seg_zoo_generate(model, images, k, seed),
                "ref": lambda k=k: reference_generate(model, images, k, seed),
            },
            warmup,
            repeats,
            device,
            dtype,
        )
        (ours_ms, ours_out), (ref_ms, ref_out) = results["ours"], results["ref"]
        differing = int((ours_out != ref_out).sum())
        rows.append(Row(f"generate, {k} steps", batch_size, ours_ms, ref_ms, differing))
        log(
            f"generate {k} steps: seg_zoo {ours_ms:.2f} ms, re-encode reference {ref_ms:.2f} ms "
            f"per batch of {batch_size}; {differing} label values differ"
        )
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rows, model


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _common.new_parser(__doc__)
    parser.add_argument(
        "--image-size", type=int, default=None, help="image side (CUDA 1024, CPU 256)"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="batch (CUDA 8, CPU 1)")
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default=None,
        help="autocast dtype, fp32 = no autocast (CUDA bf16, CPU fp32)",
    )
    parser.add_argument(
        "--steps", type=int, nargs="+", default=list(DEFAULT_STEPS), help="sampling steps"
    )
    parser.add_argument("--quick", action="store_true", help="CUDA 2+3 runs, CPU 1+1")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up runs")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0, help="torch seed of both samplers")
    # The smoke test's tiny model on 64x64 images (not a benchmark).
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _common.check_args(
        parser,
        args,
        positive=("image_size", "batch_size", "repeats", "threads"),
        non_negative=("warmup",),
    )
    if any(s < 1 for s in args.steps):
        parser.error(f"--steps must be >= 1, got {args.steps}")
    return args


def main(argv: Sequence[str] | None = None) -> str:
    """Run the Pix2Seq-D benchmark from the command line; prints and returns the Markdown table."""
    args = _parse_args(argv)
    warmup, repeats = _common.run_settings(
        args, quick={"cpu": (1, 1), "cuda": (2, 3)}, full={"cpu": (1, 2), "cuda": (3, 10)}
    )
    cpu = args.device == "cpu"
    defaults = CPU_DEFAULTS if cpu else CUDA_DEFAULTS
    if args.tiny:
        defaults = {"image_size": TINY_SIZE, "batch_size": 1, "dtype": "fp32"}
    image_size = args.image_size or defaults["image_size"]
    batch_size = args.batch_size or defaults["batch_size"]
    dtype = args.dtype or defaults["dtype"]
    opts, config = (TINY_OPTS, TINY_CONFIG) if args.tiny else (OFFICIAL_OPTS, CONFIG)

    start = time.perf_counter()
    rows, model = run_benchmark(
        device=args.device,
        image_size=image_size,
        batch_size=batch_size,
        dtype=dtype,
        steps=args.steps,
        warmup=warmup,
        repeats=repeats,
        opts=opts,
        config=config,
        seed=args.seed,
    )
    wall = time.perf_counter() - start
    where = _common.describe_device(args.device)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    notes = [
        f"torch {torch.__version__}, {where}; {n_params:.1f} M parameters, random init; medians "
        f"of {repeats} timed run(s) after {warmup} warm-up; ms/img = ms per call / batch; "
        f"seg_zoo and reference runs interleaved; {wall:.0f} s wall.",
        "re-encode ref: DDIM loop calling the image encoder at every step (a direct port that "
        "runs the full model per step); same noise as seg_zoo (model.sampler_seed "
        f"{getattr(model, 'sampler_seed', -1)}, else torch seed {args.seed}); "
        "same label maps = identical (class, identity) maps at mask resolution.",
    ]
    if args.tiny:
        notes.append("--tiny: ResNet-18, 1-layer width-32 encoder, 64x64 images (smoke test).")
    table = format_table(rows, image_size, image_size // model.mask_stride, dtype, notes)
    print(table)
    return table


if __name__ == "__main__":
    main()
