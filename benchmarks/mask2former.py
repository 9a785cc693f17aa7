"""End-to-end benchmark of Mask2Former (R50 and Swin-T): inference latency and training step.

What it measures, for each model, in one run:
  * inference latency at batch size 1: a 512x512 image through the ADE20K semantic config
    (``sem_seg`` only) and a 1024x1024 image through the COCO panoptic config with all three
    outputs on (``sem_seg``, ``panoptic_seg``, ``instances``). ``model.eval()`` under
    ``torch.inference_mode()``; the median of the timed runs after warm-up runs.
  * one training step at batch size 2 on 1024x1024 inputs (the size the LSJ mapper crops and
    pads to) with random targets (a few rectangles and ellipses per image): forward, backward,
    gradient clipping as the config asks, AdamW step. On CUDA under ``torch.autocast`` fp16 with
    a ``GradScaler`` (the official recipe, ``SOLVER.AMP.ENABLED``); on the CPU in fp32 (autocast
    fp16 on the CPU is not what anyone trains with, and is slow there).
  * peak memory of the training step: on CUDA ``torch.cuda.max_memory_allocated`` after
    ``reset_peak_memory_stats``; on the CPU the rise of the process's peak resident size
    (Linux VmHWM, reset through ``/proc/self/clear_refs`` just before the step, minus VmRSS
    then). The CPU figure counts every page the step touches (weights' gradients and AdamW
    state on the first step, activations, allocator slack), so it is an upper bound on tensor
    memory; without /proc it falls back to the ``ru_maxrss`` rise, which only sees new peaks.

Every figure is taken twice: for seg_zoo as it is, and for the same model in *reference mode*
(:func:`reference_mode`), which stands in for the official implementation (that code cannot
live in this repository): multi-scale deformable attention through the pure-PyTorch
``grid_sample`` form (``ms_deform_attn_pytorch``), which is what the official code runs on
the CPU (on CUDA it has its own compiled kernel, so there the reference is slower than the
official code and the ratio overstates seg_zoo's lead over it), and panoptic/instance
post-processing written per query with a host sync per query, as the official inference is.
The table gives ratios reference / seg_zoo (> 1: seg_zoo is faster or smaller). Models are
randomly initialised: the network's cost does not depend on the weights, but random class
scores make few queries pass the panoptic thresholds, so the per-query loops do less work
than on a trained model.

Run counts: CUDA 5 warm-up + 20 timed runs (training 5 + 20); CPU 1 + 2 inference runs and
one training step timed after one warm-up step on 256x256 images (a 1024x1024 fp32 step takes
minutes on 2 cores, and the warm-up only has to pay the one-time costs: AdamW state, kernel
set-up); ``--quick`` times one run of each, and on the CPU trains at 512x512.

Usage:
    python benchmarks/mask2former.py                         # CPU, both models, all figures
    python benchmarks/mask2former.py --device cuda
    python benchmarks/mask2former.py --quick                 # fewer runs; CPU training at 512x512
    python benchmarks/mask2former.py --models r50 --skip-train --skip-reference
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Runs from a checkout without installing seg_zoo (the extension built in place); _common.py
# lies next to this file, whose folder is not on sys.path when the tests load it by path.
BENCHMARKS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.join(BENCHMARKS_DIR, "..")
sys.path[:0] = [REPO_ROOT, BENCHMARKS_DIR]

import _common  # noqa: E402

# Names of this script's own API as well (in __all__), hence imported unqualified.
from _common import make_inference_input, time_call  # noqa: E402
from detectron2.config import CfgNode, get_cfg  # noqa: E402
from detectron2.data import MetadataCatalog  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import BitMasks, Boxes, Instances  # noqa: E402

from seg_zoo import add_seg_zoo_config  # noqa: E402
from seg_zoo.layers import extension_available, ms_deform_attn_pytorch  # noqa: E402

# seg_zoo.layers re-exports a function named ms_deform_attn, which hides the submodule of the
# same name as an attribute: reach the modules whose globals reference mode swaps by name.
_MSDA_MODULE = importlib.import_module("seg_zoo.layers.ms_deform_attn")
_META_ARCH_MODULE = importlib.import_module("seg_zoo.modeling.meta_arch.maskformer_model")

__all__ = [
    "CONFIGS",
    "H100_TARGETS",
    "Row",
    "build_benchmark_cfg",
    "format_table",
    "main",
    "make_inference_input",
    "make_training_batch",
    "reference_instance_inference",
    "reference_ms_deform_attn",
    "reference_mode",
    "reference_panoptic_inference",
    "reference_semantic_inference",
    "run_benchmark",
    "run_inference",
    "time_inference",
    "time_train_step",
]

# model -> task -> official config (relative to the repository root).
CONFIGS = {
    "r50": {
        "semantic": "configs/ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml",
        "all": "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml",
    },
    "swin_t": {
        "semantic": (
            "configs/ade20k/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_160k.yaml"
        ),
        "all": "configs/coco/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml",
    },
}
# The training step uses the COCO panoptic config (133 classes, LSJ 1024 crops).
TRAIN_TASK = "all"
DEFAULT_SIZES = {"semantic": 512, "all": 1024, "train": 1024}
TRAIN_BATCH_SIZE = 2

# The targets on one H100, and the official code measured there (R50 and Swin-T).
H100_TARGETS = {
    "infer all 1024": "<= 40 ms (official: 195 ms)",
    "train bs2 1024": "<= 110 ms per step (official: 200-274 ms)",
    "train peak memory": "<= 6 GiB (official: 7.7 GiB)",
}

_BENCH_METADATA = "seg_zoo_benchmark_mask2former"


# ---------------------------------------------------------------------------------------------
# Reference mode: the official implementation's algorithms, written plainly.
# ---------------------------------------------------------------------------------------------


def reference_ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The op's pure-PyTorch form, taking the arguments ``MSDeformAttn`` passes the op."""
    # MSDeformAttn hands over fp32 locations with half values under autocast; grid_sample wants
    # one dtype, which ms_deform_attn_pytorch takes from value.
    return ms_deform_attn_pytorch(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )


def reference_semantic_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> torch.Tensor:
    """(K, H, W) = sum over queries of P(class | query) * sigmoid(mask of query).

    The official code does this in one einsum, so the reference is one matrix product too
    (a per-query loop here would make the reference slower than the code it stands for).
    """
    class_probs = F.softmax(mask_cls, dim=-1)[:, :-1]  # (Q, K)
    num_queries, height, width = mask_pred.shape
    flat = mask_pred.sigmoid().reshape(num_queries, height * width)  # (Q, H*W)
    return (class_probs.transpose(0, 1) @ flat).reshape(-1, height, width)


def reference_panoptic_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    object_mask_threshold: float,
    overlap_threshold: float,
    thing_class_ids: Sequence[int],
) -> tuple[torch.Tensor, list[dict]]:
    """Panoptic segments query by query, reading every area and decision on the host."""
    num_classes = mask_cls.shape[-1] - 1
    thing_ids = set(int(c) for c in thing_class_ids)
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    cur_scores, cur_classes = scores[keep], labels[keep]
    cur_masks = mask_pred[keep].sigmoid()  # (N, H, W)
    panoptic_seg = torch.zeros(mask_pred.shape[-2:], dtype=torch.int32, device=mask_pred.device)
    segments_info: list[dict] = []
    if cur_masks.shape[0] == 0:
        return panoptic_seg, segments_info
    winner = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)  # (H, W)
    stuff_segment_id: dict[int, int] = {}
    current_id = 0
    for k in range(cur_classes.shape[0]):
        category = cur_classes[k].item()
        is_thing = category in thing_ids
        won = winner == k
        mask_area = (cur_masks[k] >= 0.5).sum().item()
        won_area = won.sum().item()
        final = won & (cur_masks[k] >= 0.5)
        if mask_area == 0 or won_area == 0 or final.sum().item() == 0:
            continue
        if won_area / mask_area < overlap_threshold:
            continue
        if not is_thing and category in stuff_segment_id:
            panoptic_seg[final] = stuff_segment_id[category]
            continue
        current_id += 1
        panoptic_seg[final] = current_id
        if not is_thing:
            stuff_segment_id[category] = current_id
        segments_info.append({"id": current_id, "isthing": is_thing, "category_id": category})
    return panoptic_seg, segments_info


def reference_instance_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    topk_per_image: int,
    thing_class_ids: Sequence[int] | None = None,
) -> Instances:
    """The best (query, class) pairs as instances, scored and boxed one instance at a time."""
    num_classes = mask_cls.shape[-1] - 1
    class_probs = F.softmax(mask_cls, dim=-1)[:, :-1]
    k = min(topk_per_image, class_probs.numel())
    top_probs, flat_index = class_probs.flatten().topk(k, sorted=True)
    thing_ids = None if thing_class_ids is None else set(int(c) for c in thing_class_ids)
    kept_scores, kept_classes, kept_masks = [], [], []
    for i in range(k):
        index = flat_index[i].item()
        query, category = index // num_classes, index % num_classes
        if thing_ids is not None and category not in thing_ids:
            continue
        foreground = mask_pred[query] > 0
        mask_score = (mask_pred[query].sigmoid() * foreground).sum().item() / (
            foreground.sum().item() + 1e-6
        )
        kept_scores.append(top_probs[i].item() * mask_score)
        kept_classes.append(category)
        kept_masks.append(foreground)
    height, width = mask_pred.shape[-2:]
    device = mask_pred.device
    result = Instances((height, width))
    if kept_masks:
        masks = torch.stack(kept_masks)
    else:
        masks = torch.zeros((0, height, width), dtype=torch.bool, device=device)
    result.pred_masks = masks.float()
    result.pred_boxes = Boxes(BitMasks(masks).get_bounding_boxes().tensor.to(device))
    result.scores = torch.tensor(kept_scores, dtype=mask_pred.dtype, device=device)
    result.pred_classes = torch.tensor(kept_classes, dtype=torch.int64, device=device)
    return result


@contextlib.contextmanager
def reference_mode() -> Iterator[None]:
    """Run seg_zoo's models the way the official implementation computes (see module doc).

    Swaps, for the duration of the block, the op that ``MSDeformAttn.forward`` calls and the
    three post-processing functions that ``MaskFormer.inference`` calls; weights, layers and
    everything else are untouched, so both modes give the same outputs.
    """
    swaps = [
        (_MSDA_MODULE, "ms_deform_attn", reference_ms_deform_attn),
        (_META_ARCH_MODULE, "semantic_inference", reference_semantic_inference),
        (_META_ARCH_MODULE, "panoptic_inference", reference_panoptic_inference),
        (_META_ARCH_MODULE, "instance_inference", reference_instance_inference),
    ]
    originals = [(module, name, getattr(module, name)) for module, name, _ in swaps]
    try:
        for module, name, replacement in swaps:
            setattr(module, name, replacement)
        yield
    finally:
        for module, name, original in originals:
            setattr(module, name, original)


# ---------------------------------------------------------------------------------------------
# Models and inputs
# ---------------------------------------------------------------------------------------------


def _ensure_metadata(cfg: CfgNode) -> None:
    """Point cfg.DATASETS.TRAIN at metadata with thing ids when the official one lacks them.

    Panoptic and instance inference read the thing classes from the training set's metadata.
    Where that dataset is not registered (or has no thing table), a benchmark-local name gets
    the first 80/133 of the K classes as things (COCO's split; 80 of 133), the rest stuff.
    """
    mf = cfg.MODEL.MASK_FORMER.TEST
    if not (mf.PANOPTIC_ON or mf.INSTANCE_ON):
        return
    name = cfg.DATASETS.TRAIN[0] if len(cfg.DATASETS.TRAIN) else ""
    if name and getattr(MetadataCatalog.get(name), "thing_dataset_id_to_contiguous_id", None):
        return
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    local = f"{_BENCH_METADATA}_{num_classes}"
    metadata = MetadataCatalog.get(local)
    if not getattr(metadata, "thing_dataset_id_to_contiguous_id", None):
        num_things = round(num_classes * 80 / 133)
        metadata.set(
            thing_dataset_id_to_contiguous_id={i: i for i in range(num_things)},
            stuff_dataset_id_to_contiguous_id={i: i for i in range(num_classes)},
            thing_classes=[f"thing{i}" for i in range(num_things)],
            stuff_classes=[f"class{i}" for i in range(num_classes)],
        )
    cfg.DATASETS.TRAIN = (local,)


def build_benchmark_cfg(
    model: str, task: str, device: str = "cpu", opts: Sequence[str] = ()
) -> CfgNode:
    """The official config of ``model`` ("r50" | "swin_t") for ``task`` ("semantic" | "all").

    ``task="all"`` turns the three TEST.*_ON outputs on; ``opts`` are KEY VALUE overrides
    applied last (the smoke test uses them to shrink the model).
    """
    if model not in CONFIGS:
        raise ValueError(f"unknown model {model!r}; choose from {sorted(CONFIGS)}")
    if task not in CONFIGS[model]:
        raise ValueError(f"unknown task {task!r}; choose from {sorted(CONFIGS[model])}")
    path = os.path.join(REPO_ROOT, CONFIGS[model][task])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file for {model}/{task} not found: {path}")
    cfg = get_cfg()
    add_seg_zoo_config(cfg)
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = ""  # random init: no download, and weights change no timing
    if task == "all":
        cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = True
        cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = True
        cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = True
    if len(opts) % 2:
        raise ValueError(f"opts must be KEY VALUE pairs, got an odd number: {list(opts)}")
    cfg.merge_from_list(list(opts))
    _ensure_metadata(cfg)
    return cfg


def make_training_batch(
    size: int, batch_size: int, num_classes: int, seed: int = 0, max_instances: int = 6
) -> list[dict]:
    """``batch_size`` random images with 2..max_instances rectangles and ellipses as targets.

    Like the LSJ mapper's output: a uint8 (3, size, size) image and Instances with
    ``gt_classes`` (int64) and ``gt_masks`` ((T, size, size) bool), each mask non-empty.
    """
    g = torch.Generator().manual_seed(seed)
    ys = torch.arange(size).view(-1, 1).float()
    xs = torch.arange(size).view(1, -1).float()
    batch = []
    for _ in range(batch_size):
        num = int(torch.randint(2, max_instances + 1, (1,), generator=g))
        masks = torch.zeros(num, size, size, dtype=torch.bool)
        for i in range(num):
            cy, cx = (torch.rand(2, generator=g) * size).tolist()
            ry, rx = ((torch.rand(2, generator=g) * 0.25 + 0.05) * size).tolist()
            if i % 2:
                masks[i] = (((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2) <= 1.0
            else:
                masks[i] = ((ys - cy).abs() <= ry) & ((xs - cx).abs() <= rx)
            masks[i, int(cy), int(cx)] = True
        instances = Instances((size, size))
        instances.gt_classes = torch.randint(0, num_classes, (num,), generator=g)
        instances.gt_masks = masks
        image = torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)
        batch.append({"image": image, "height": size, "width": size, "instances": instances})
    return batch


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


def run_inference(model: torch.nn.Module, inputs: list[dict]) -> list[dict]:
    """One inference call, as a user makes it."""
    model.eval()
    with torch.inference_mode():
        return model(inputs)


def time_inference(
    model: torch.nn.Module, inputs: list[dict], warmup: int, repeats: int, device: str
) -> tuple[float, list[dict]]:
    """(median ms of ``repeats`` timed calls after ``warmup`` calls, the last call's outputs)."""
    return time_call(lambda: run_inference(model, inputs), warmup, repeats, device)


def _read_proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_cpu_peak() -> tuple[str, int]:
    """Start a CPU peak measurement: ("hwm", VmRSS KiB) or ("maxrss", ru_maxrss KiB)."""
    # Hand the pages an earlier measurement freed back to the OS first: glibc keeps them
    # otherwise, and the next step would reuse them without raising its peak.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size
        rss = _read_proc_status_kib("VmRSS")
        if rss is not None:
            return "hwm", rss
    except OSError:
        pass
    return "maxrss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _cpu_peak_mib(start: tuple[str, int]) -> float:
    kind, base = start
    peak = _read_proc_status_kib("VmHWM") if kind == "hwm" else None
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(peak - base, 0) / 1024.0


def time_train_step(
    model: torch.nn.Module,
    batch: list[dict],
    warmup: int,
    repeats: int,
    device: str,
    amp: bool,
    clip_value: float | None = None,
    lr: float = 1e-4,
    weight_decay: float = 0.05,
    warmup_batch: list[dict] | None = None,
) -> tuple[float, float, dict[str, float]]:
    """(median ms per training step, peak MiB, last step's losses).

    A step is forward, backward, optional full-model gradient-norm clipping at ``clip_value``,
    AdamW step. ``amp`` runs the forward under autocast fp16 with a GradScaler (CUDA only).
    Peak memory covers every step run here, warm-up included (the first step allocates the
    gradients and AdamW's state); see the module docstring for what it is on each device.
    ``warmup_batch`` (default: ``batch``) lets the warm-up steps run on smaller images where
    a full-size step is slow: they pay the one-time costs (optimizer state, kernel set-up).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    is_cuda = device.startswith("cuda")
    if amp and not is_cuda:
        raise ValueError("amp=True needs a CUDA device (autocast fp16 + GradScaler)")
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    def step(inputs: list[dict]) -> dict[str, float]:
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            losses = model(inputs)
        total = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        if clip_value is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, clip_value)
        scaler.step(optimizer)
        scaler.update()
        return {k: float(v.detach()) for k, v in losses.items()}

    gc.collect()
    if is_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        cpu_start = _reset_cpu_peak()
    losses: dict[str, float] = {}
    for _ in range(warmup):
        losses = step(batch if warmup_batch is None else warmup_batch)
    times = []
    for _ in range(repeats):
        _common.sync(device)
        start = time.perf_counter()
        losses = step(batch)
        _common.sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    if is_cuda:
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = _cpu_peak_mib(cpu_start)
    model.zero_grad(set_to_none=True)
    model.eval()
    return statistics.median(times), peak, losses


# ---------------------------------------------------------------------------------------------
# The run and its table
# ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    model: str
    task: str
    size: str
    ours_ms: float
    ref_ms: float | None
    peak_mib: float | None = None
    ref_peak_mib: float | None = None


def format_table(rows: Sequence[Row], device: str, notes: Sequence[str] = ()) -> str:
    """A Markdown table of the rows (ratios are reference / seg_zoo), then the notes."""
    lines = [
        "| model | task | size | seg_zoo ms | reference ms | ratio (ref/seg_zoo) "
        "| seg_zoo peak MiB | reference peak MiB | memory ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r.model, r.task, r.size]
        for ours, ref in ((r.ours_ms, r.ref_ms), (r.peak_mib, r.ref_peak_mib)):
            cells += [_common.fmt_number(ours, 1), _common.fmt_number(ref, 1)]
            cells.append(_common.fmt_ratio(ref, ours))
        lines.append("| " + " | ".join(cells) + " |")
    lines.extend(notes)
    if device.startswith("cuda"):
        lines.append(
            "H100 targets (issue): " + "; ".join(f"{k}: {v}" for k, v in H100_TARGETS.items()) + "."
        )
    return "\n".join(lines)


def _build(cfg: CfgNode, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(cfg)
    model.eval()
    return model


def run_benchmark(
    device: str = "cpu",
    models: Sequence[str] = ("r50", "swin_t"),
    sizes: dict[str, int] | None = None,
    warmup: int = 1,
    repeats: int = 3,
    train_warmup: int = 1,
    train_repeats: int = 2,
    skip_train: bool = False,
    skip_reference: bool = False,
    opts: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> list[Row]:
    """Measure every (model, task) and return the table's rows (see the module docstring).

    ``sizes`` overrides image sides by key: "semantic", "all", "train", and "train_warmup"
    (the warm-up steps' side; default the training side).
    """
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    amp = device.startswith("cuda")
    rows = []
    for name in models:
        for task, label in (("semantic", "infer sem_seg bs1"), ("all", "infer all three bs1")):
            cfg = build_benchmark_cfg(name, task, device, opts)
            model = _build(cfg)
            inputs = make_inference_input(sizes[task])
            ours, _ = time_inference(model, inputs, warmup, repeats, device)
            ref = None
            if not skip_reference:
                with reference_mode():
                    ref, _ = time_inference(model, inputs, warmup, repeats, device)
            size = f"{sizes[task]}x{sizes[task]}"
            rows.append(Row(name, label, size, ours, ref))
            log(
                f"{name} {label} {size}: seg_zoo {ours:.1f} ms, "
                f"reference {_common.fmt_number(ref, 1)} ms"
            )
            del model
        if skip_train:
            continue
        cfg = build_benchmark_cfg(name, TRAIN_TASK, device, opts)
        clip = cfg.SOLVER.CLIP_GRADIENTS
        clip_value = clip.CLIP_VALUE if clip.ENABLED and clip.CLIP_TYPE == "full_model" else None
        num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        batch = make_training_batch(sizes["train"], TRAIN_BATCH_SIZE, num_classes)
        warmup_batch = None
        if sizes.get("train_warmup", sizes["train"]) != sizes["train"]:
            warmup_batch = make_training_batch(
                sizes["train_warmup"], TRAIN_BATCH_SIZE, num_classes, seed=1
            )
        label = f"train step bs{TRAIN_BATCH_SIZE} " + ("AMP fp16" if amp else "fp32")
        size = f"{sizes['train']}x{sizes['train']}"
        train_kwargs = {"warmup_batch": warmup_batch}
        model = _build(cfg)
        ours, peak, _ = time_train_step(
            model, batch, train_warmup, train_repeats, device, amp, clip_value, **train_kwargs
        )
        del model
        ref = ref_peak = None
        if not skip_reference:
            # A fresh model with the same seed, so both modes start from the same weights.
            model = _build(cfg)
            with reference_mode():
                ref, ref_peak, _ = time_train_step(
                    model,
                    batch,
                    train_warmup,
                    train_repeats,
                    device,
                    amp,
                    clip_value,
                    **train_kwargs,
                )
            del model
        rows.append(Row(name, label, size, ours, ref, peak, ref_peak))
        log(
            f"{name} {label} {size}: seg_zoo {ours:.1f} ms, "
            f"reference {_common.fmt_number(ref, 1)} ms"
        )
    return rows


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _common.new_parser(__doc__)
    parser.add_argument("--models", nargs="+", choices=sorted(CONFIGS), default=["r50", "swin_t"])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one timed inference run each and, on the CPU, training at 512x512 instead of "
        "1024x1024 (the size column says which)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed inference runs")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up inference runs")
    parser.add_argument("--train-repeats", type=int, default=None, help="timed training steps")
    parser.add_argument("--train-warmup", type=int, default=None, help="warm-up steps")
    parser.add_argument("--train-size", type=int, default=None, help="training image side")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args(argv)
    _common.check_args(
        parser,
        args,
        positive=("repeats", "train_repeats", "train_size", "threads"),
        non_negative=("warmup", "train_warmup"),
    )
    return args


def main(argv: Sequence[str] | None = None) -> str:
    """Run the Mask2Former benchmark from the command line; prints and returns the table."""
    args = _parse_args(argv)
    warmup, repeats = _common.run_settings(
        args, quick={"cpu": (1, 1), "cuda": (1, 1)}, full={"cpu": (1, 2), "cuda": (5, 20)}
    )
    cpu = args.device == "cpu"
    if args.quick:
        # One warm-up step even on the CPU: the first step also allocates the gradients and
        # AdamW's state, and whichever mode runs first would pay for the one-time setup.
        train_warmup, train_repeats = 1, (1 if cpu else 5)
    else:
        # On 2 CPU cores a 1024x1024 fp32 training step takes a minute or more per mode and
        # model, so the CPU default times one step after one warm-up step.
        train_warmup, train_repeats = (1, 1) if cpu else (5, 20)
    train_repeats = args.train_repeats or train_repeats
    if args.train_warmup is not None:
        train_warmup = args.train_warmup
    train_size = args.train_size or (512 if args.quick and cpu else DEFAULT_SIZES["train"])
    train_sizes = {"train": train_size}
    if cpu and not args.quick and args.train_size is None:
        # A 1024x1024 fp32 step takes minutes on 2 cores: warm up at 256x256 to stay near
        # ten minutes in all (the warm-up only has to pay the one-time costs).
        train_sizes["train_warmup"] = 256
    if not extension_available():
        print("warning: seg_zoo._C is not built; seg_zoo mode also runs the PyTorch reference op")

    rows = run_benchmark(
        device=args.device,
        models=args.models,
        sizes=train_sizes,
        warmup=warmup,
        repeats=repeats,
        train_warmup=train_warmup,
        train_repeats=train_repeats,
        skip_train=args.skip_train,
        skip_reference=args.skip_reference,
    )
    where = _common.describe_device(args.device)
    peak_what = (
        "torch.cuda.max_memory_allocated beyond the memory allocated before the steps"
        if not cpu
        else "rise of the process's peak resident size (VmHWM) over the steps, an upper bound"
    )
    notes = [
        f"torch {torch.__version__}, {where}; times are medians: inference {repeats} timed "
        f"run(s) after {warmup} warm-up, training {train_repeats} timed step(s) after "
        f"{train_warmup} warm-up at side {train_sizes.get('train_warmup', train_size)}; "
        "random init; reference = pure-PyTorch ms_deform_attn + per-query post-processing "
        "(reference_mode); each row runs seg_zoo, then the reference.",
        f"Training: COCO panoptic config, AdamW, {'AMP fp16 + GradScaler' if not cpu else 'fp32'}"
        f"; peak memory: {peak_what}.",
    ]
    table = format_table(rows, args.device, notes)
    print(table)
    return table


if __name__ == "__main__":
    main()
