"""seg_zoo's Mask2Former gives the official implementation's outputs, given the same weights
and image.

Each case builds seg_zoo's model from OUR copy of an official YAML (``CASES``), loads
``make_weights`` (values drawn per entry name, so independent of either implementation's module
order), runs the fixed image from ``make_image`` (190x250, asked for at 228x300, so padding to
a multiple of 32 and the final resize both run) and compares with outputs of the official
implementation recorded under tests/data_files/official_parity/:

- raw head outputs: ``pred_logits`` (all), ``pred_masks`` (every other row and column), and
  the last ``aux_outputs`` entry (logits, and masks of the first 16 queries);
- ``sem_seg``: the argmax map and the four highest-scoring channels (every 4th pixel);
- for the COCO panoptic model (all three tasks switched on): the panoptic id map and
  ``segments_info``, the instances' scores and classes, and the first five instance masks.

How the recordings were made. The official code is facebookresearch/Mask2Former at commit
9b0651c6c1d5b3af2e6da0589b719c514ec0d69a (2022-05-20), run on CPU in float32 with torch
2.14.1, detectron2 0.7.2 and numpy 1.26.4 (this repository's .venv), from a scratch checkout
outside the repository. Its CUDA extension ``MultiScaleDeformableAttention`` cannot be built
there, so an empty module stood in for it; the official ``MSDeformAttn`` then takes its own
pure-PyTorch fallback, ``ms_deform_attn_core_pytorch`` (grid_sample based). The only other
change to the official code was to skip importing its ``InstanceSegEvaluator`` (it needs
detectron2's compiled ``_C``, which this detectron2 build lacks; it plays no part in inference).
The official model came from the official YAML (official ``add_maskformer2_config``, with
``MODEL.DEVICE cpu``, the dataset and task overrides that ``build_seg_zoo_model`` applies here),
was given ``make_weights`` from this file (strict load), and ran the same ``make_image`` input
with the same output size; a forward hook on ``sem_seg_head`` caught the raw outputs.

Metadata: inference reads the thing classes from the training dataset's metadata. The
builtin dataset registrations are not used on either side; both point DATASETS.TRAIN/TEST at
``seg_zoo_parity_train`` with ``thing_dataset_id_to_contiguous_id`` mapping the 80 COCO thing
classes (contiguous ids 0-79).

The weights are scaled so the outputs are not degenerate (see ``_draw`` and
``test_recorded_outputs_are_not_degenerate``): on the recorded image the COCO model gives three
panoptic segments (two things of one class and a stuff segment) and 85 instances. The Swin-T
semantic map has a single class on this image, so its parity rests on the dense head outputs.
"""

from __future__ import annotations

import math
import zlib
from functools import cache
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from torch import Tensor

from seg_zoo import add_seg_zoo_config

REPO = Path(__file__).resolve().parents[2]
RECORDED = REPO / "tests" / "data_files" / "official_parity"

# name -> (config under configs/, whether all three test outputs are switched on)
CASES = {
    "ade20k_r50": ("ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml", False),
    "coco_panoptic_r50": ("coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml", True),
    "ade20k_swin_t": (
        "ade20k/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_160k.yaml",
        False,
    ),
}

# The dataset both implementations read their metadata from. Inference only needs
# thing_dataset_id_to_contiguous_id (panoptic: thing vs stuff; instances: which classes are
# kept), so it is set explicitly instead of relying on the builtin COCO registration.
PARITY_TRAIN = "seg_zoo_parity_train"


def make_weights(state_dict_shapes: dict[str, tuple]) -> dict[str, Tensor]:
    """Deterministic float32 weights for a Mask2Former state_dict, one tensor per name.

    Each tensor is drawn from a generator seeded by the CRC32 of its name only, so the values do
    not depend on the order in which either implementation creates its modules. Integer buffers
    (Swin's ``relative_position_index``) are structure, not weights: they are not drawn here and
    callers keep the model's own values.
    """
    out = {}
    for name, shape in state_dict_shapes.items():
        if not all(isinstance(s, int) and s >= 0 for s in shape):
            raise ValueError(f"make_weights: shape of {name!r} must be non-negative ints: {shape}")
        shape = tuple(shape)
        if name.endswith("relative_position_index") or name.endswith("num_batches_tracked"):
            continue
        gen = torch.Generator().manual_seed(zlib.crc32(name.encode("utf-8")))
        out[name] = _draw(name, shape, gen)
    return out


def _draw(name: str, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """One entry: its scale chosen from its name, as a trained network's would roughly be.

    Convolutions and linear layers are N(0, gain^2 / fan_in) (unit gain keeps activations of
    order one through the normalised layers), norm scales 1 +- 0.1, biases and running means
    small, running variances in [0.5, 1.5], embeddings N(0, 1).
    """

    def normal(std: float) -> Tensor:
        return torch.randn(shape, generator=gen) * std

    def uniform(low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(shape, generator=gen)

    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_mean":
        return normal(0.1)
    if leaf == "running_var":
        return uniform(0.5, 1.5)
    if leaf == "relative_position_bias_table":
        return normal(0.5)
    if "level_embed" in name or "query_feat" in name or "query_embed" in name:
        # Embeddings: unit scale, like the queries' and levels' own learned tables.
        return normal(1.0)
    if leaf == "bias":
        return normal(0.02)
    if leaf == "weight" and len(shape) == 1:
        # LayerNorm / GroupNorm / FrozenBatchNorm scales.
        return uniform(0.9, 1.1)
    if len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        gain = 1.0
        if "class_embed" in name:
            # Confident class predictions, so that panoptic inference (score > 0.8) keeps some
            # queries; unit-gain logits would give near-uniform probabilities over 150 classes.
            gain = CLASS_GAIN
        elif "predictor." in name and ("out_proj" in name or "linear2" in name):
            # The decoder's residual branches read the same memory for every query; at unit
            # gain they wash out the queries' differences within a few layers (post-norm).
            gain = BRANCH_GAIN
        return normal(gain / math.sqrt(fan_in))
    return normal(0.02)


CLASS_GAIN = 4.0
BRANCH_GAIN = 0.3

# Input (H, W): not multiples of 32, so padding runs; the output size differs from it, so the
# final resize runs too.
IMAGE_HW = (190, 250)
OUTPUT_HW = (228, 300)
# Contiguous ids of the thing classes (COCO panoptic: its 80 thing classes come first).
COCO_THING_IDS = list(range(80))


def make_image() -> Tensor:
    """(3, H, W) uint8: a few flat regions and a ramp, with seeded noise on top."""
    h, w = IMAGE_HW
    gen = torch.Generator().manual_seed(20240601)
    ys = torch.arange(h, dtype=torch.float32)[:, None]
    xs = torch.arange(w, dtype=torch.float32)[None, :]
    zeros = torch.zeros(h, w)
    img = torch.stack([xs / w * 200 + zeros, ys / h * 200 + zeros, (xs + ys) / (h + w) * 120], 0)
    img[:, 30:110, 40:120] = torch.tensor([220.0, 40.0, 40.0])[:, None, None]
    img[:, 90:170, 150:230] = torch.tensor([30.0, 60.0, 210.0])[:, None, None]
    disk = (ys - 140) ** 2 + (xs - 70) ** 2 < 30**2
    img[:, disk] = torch.tensor([40.0, 200.0, 60.0])[:, None]
    img = img + torch.randn(3, h, w, generator=gen) * 12
    return img.clamp(0, 255).round().to(torch.uint8)


@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread():
    # These models are the slowest thing in the suite; on a machine whose cores are shared with
    # other processes, OpenMP threads spin-wait against them (5-10x slower here). One thread is
    # also how the official outputs were recorded.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# Building and running seg_zoo's model


def build_seg_zoo_model(rel: str, all_tasks: bool, device: str = "cpu") -> torch.nn.Module:
    """seg_zoo's model from OUR copy of the official YAML, holding ``make_weights``."""
    MetadataCatalog.get(PARITY_TRAIN).set(
        thing_dataset_id_to_contiguous_id={i: i for i in COCO_THING_IDS}
    )
    cfg = get_cfg()
    add_seg_zoo_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / rel))
    cfg.MODEL.DEVICE = device
    cfg.DATASETS.TRAIN = (PARITY_TRAIN,)
    cfg.DATASETS.TEST = (PARITY_TRAIN,)
    if all_tasks:
        cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = True
        cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = True
        cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = True
    cfg.freeze()
    model = build_model(cfg).eval()
    state = model.state_dict()  # keeps the modules' version metadata
    shapes = {k: tuple(v.shape) for k, v in state.items() if v.is_floating_point()}
    state.update(make_weights(shapes))
    model.load_state_dict(state, strict=True)
    return model


def run_model(model: torch.nn.Module) -> tuple[dict, dict]:
    """(raw head outputs, post-processed outputs) for the fixed image."""
    captured = {}
    hook = model.sem_seg_head.register_forward_hook(lambda m, i, o: captured.update(out=o))
    try:
        with torch.no_grad():
            inputs = [{"image": make_image(), "height": OUTPUT_HW[0], "width": OUTPUT_HW[1]}]
            result = model(inputs)[0]
    finally:
        hook.remove()
    return captured["out"], result


@cache
def seg_zoo_outputs(name: str) -> tuple[dict, dict]:
    return run_model(build_seg_zoo_model(*CASES[name]))


@cache
def recorded(name: str) -> dict:
    path = RECORDED / f"{name}.pt"
    rec = torch.load(path, weights_only=True)
    assert rec["config"] == CASES[name][0], f"{path}: recorded for {rec['config']}"
    return rec


# --------------------------------------------------------------------------------------------
# Tolerances
#
# Both sides compute in float32 on CPU and differ only in summation order: seg_zoo's
# deformable-attention kernel against the official grid_sample fallback, and seg_zoo's
# attention (scaled_dot_product_attention) against the official nn.MultiheadAttention. That
# round-off (~1e-7 relative per op) passes through ~60 normalised layers; the observed max
# differences are 1.1e-5 on class logits (|x| up to ~15) and 3.3e-5 on mask logits (|x| up to
# ~21). The tolerance leaves 3-10x headroom for other CPUs' vector paths and stays far below
# any real defect: a wrong weight, scale, layer order or resize moves these outputs by 1e-2 or
# more.
HEAD_ATOL = 1e-4
HEAD_RTOL = 1e-5
# Semantic argmax may differ only where the top-2 scores are this close (near-ties).
TIE_MARGIN = 1e-4
# Fraction of pixels allowed to differ in panoptic ids / instance masks: a mask logit within
# round-off of 0 (or two candidates' scores within round-off) may flip a handful of pixels.
PIXEL_FRACTION = 1e-3


def assert_close(got: Tensor, want: Tensor, what: str, atol=HEAD_ATOL, rtol=HEAD_RTOL) -> None:
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    diff = (got.float() - want.float()).abs()
    bad = diff > atol + rtol * want.float().abs()
    assert not bad.any(), (
        f"{what}: {int(bad.sum())}/{bad.numel()} elements off, max abs diff {float(diff.max()):.3g}"
    )


# --------------------------------------------------------------------------------------------
# The weights give non-degenerate outputs (checked on the official recordings only)


@pytest.mark.parametrize("name", sorted(CASES))
def test_recorded_outputs_are_not_degenerate(name):
    head = recorded(name)["head"]
    probs = head["pred_logits"].softmax(-1)
    best = probs.max(-1)
    # Not one-hot: most queries are unsure, yet several are confident and disagree.
    assert float(best.values.median()) < 0.9
    assert int((best.values > 0.8).sum()) >= 3
    assert best.indices.unique().numel() >= 5
    masks = head["pred_masks_s2"]
    # Not saturated: a good share of mask logits lie where the sigmoid still has slope.
    assert float((masks.abs() < 4).float().mean()) > 0.3
    assert 0.05 < float((masks > 0).float().mean()) < 0.95


# --------------------------------------------------------------------------------------------
# Parity


@pytest.mark.parametrize("name", sorted(CASES))
def test_head_outputs_match_official(name):
    rec = recorded(name)["head"]
    out, _ = seg_zoo_outputs(name)
    assert list(out["pred_masks"].shape) == rec["pred_masks_shape"]
    assert len(out["aux_outputs"]) == rec["num_aux"]
    assert_close(out["pred_logits"][0], rec["pred_logits"], "pred_logits")
    assert_close(out["pred_masks"][0, :, ::2, ::2], rec["pred_masks_s2"], "pred_masks")
    aux = out["aux_outputs"][-1]
    assert_close(aux["pred_logits"][0], rec["aux_last_pred_logits"], "aux_outputs[-1] logits")
    assert_close(aux["pred_masks"][0, :16, ::2, ::2], rec["aux_last_pred_masks_s2"], "aux masks")


@pytest.mark.parametrize("name", sorted(CASES))
def test_semantic_output_matches_official(name):
    rec = recorded(name)["sem_seg"]
    _, result = seg_zoo_outputs(name)
    sem_seg = result["sem_seg"]
    assert list(sem_seg.shape) == rec["shape"]
    assert_close(sem_seg[rec["channels_idx"], ::4, ::4], rec["channels_s4"], "sem_seg scores")
    top2 = sem_seg.topk(2, dim=0).values
    tie = (top2[0] - top2[1]) < TIE_MARGIN
    differs = sem_seg.argmax(0) != rec["argmax"].long()
    assert not (differs & ~tie).any(), f"sem_seg argmax differs on {int(differs.sum())} pixels"


def test_panoptic_output_matches_official():
    rec = recorded("coco_panoptic_r50")["panoptic_seg"]
    _, result = seg_zoo_outputs("coco_panoptic_r50")
    ids, segments_info = result["panoptic_seg"]
    got_info = [
        {"id": int(d["id"]), "isthing": bool(d["isthing"]), "category_id": int(d["category_id"])}
        for d in segments_info
    ]
    assert got_info == rec["segments_info"]
    assert ids.shape == rec["ids"].shape
    differs = float((ids.long() != rec["ids"].long()).float().mean())
    assert differs <= PIXEL_FRACTION, f"panoptic ids differ on {differs:.2%} of pixels"


def test_instance_output_matches_official():
    rec = recorded("coco_panoptic_r50")["instances"]
    _, result = seg_zoo_outputs("coco_panoptic_r50")
    instances = result["instances"]
    classes = instances.pred_classes.cpu()
    assert torch.equal(classes, rec["pred_classes"]), (
        f"instance classes {classes[:10].tolist()}... != {rec['pred_classes'][:10].tolist()}..."
    )
    assert_close(instances.scores, rec["scores"], "instance scores", atol=1e-4, rtol=1e-3)
    top = instances.pred_masks[:5].bool()
    differs = float((top != rec["pred_masks_top5"]).float().mean())
    assert differs <= PIXEL_FRACTION, f"instance masks differ on {differs:.2%} of pixels"


# --------------------------------------------------------------------------------------------
# CUDA against CPU


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["ade20k_r50", "ade20k_swin_t"])
def test_cuda_fp32_matches_cpu(name):
    # fp32 on both sides; TF32 would round matmul inputs to 10 mantissa bits and is not what
    # this compares.
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        cpu_out, _ = seg_zoo_outputs(name)
        cuda_out, _ = run_model(build_seg_zoo_model(*CASES[name], device="cuda"))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    # CUDA convolutions and reductions choose other algorithms (cuDNN, split-K GEMMs, atomics
    # in the deformable-attention kernel) than the CPU ones: still round-off only, but larger
    # and less regular, so the tolerance is 10x the CPU-vs-official one.
    tol = {"atol": 10 * HEAD_ATOL, "rtol": 10 * HEAD_RTOL}
    assert_close(cuda_out["pred_logits"].cpu(), cpu_out["pred_logits"], "pred_logits", **tol)
    assert_close(cuda_out["pred_masks"].cpu(), cpu_out["pred_masks"], "pred_masks", **tol)
