"""The official Mask2Former config tree under configs/: complete, loadable, and building the
official architectures.

The reference files under /work/shared/reference/mask2former/ (one per official model config,
`<configs/ relative path>.txt`) list every state_dict entry (name and shape) of the model the
official code builds from that config, plus a `# total` line.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg

import seg_zoo
from seg_zoo import add_seg_zoo_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
REFERENCE = Path(os.environ.get("SEG_ZOO_REFERENCE", "/work/shared/reference")).joinpath(
    "mask2former"
)

# Folders of the same tree that hold seg_zoo's other systems, not Mask2Former's configs.
OTHER_SYSTEMS = {"upernet", "swin_rcnn", "segmenter", "pix2seq_d"}
# The official model configs (ADE20K, COCO, Cityscapes, Mapillary Vistas; no video, no Base-*).
OFFICIAL_MODELS = sorted(
    str(p.relative_to(CONFIGS))
    for p in CONFIGS.glob("*/*-segmentation/**/*.yaml")
    if not p.name.startswith("Base-") and not OTHER_SYSTEMS & set(p.relative_to(CONFIGS).parts)
)
ALL_YAMLS = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml"))

need_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason=f"reference state_dict listings not found at {REFERENCE}"
)


def load_cfg(rel: str):
    cfg = get_cfg()
    add_seg_zoo_config(cfg)
    # allow_unsafe=False: seg_zoo's YAMLs use no python tags (the official `!!python/object/apply:
    # eval` size lists are written out as plain lists).
    cfg.merge_from_file(str(CONFIGS / rel), allow_unsafe=False)
    return cfg


def read_reference(rel: str) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    """Entries ``name -> shape`` and the ``# total`` counters of one reference listing."""
    entries: dict[str, tuple[int, ...]] = {}
    totals: dict[str, int] = {}
    for line in (REFERENCE / f"{rel}.txt").read_text().splitlines():
        if line.startswith("# total"):
            totals = {k: int(v) for k, v in (f.split("=") for f in line.split()[2:])}
        elif line.strip():
            name, shape = line.split("\t")
            inner = shape.strip()[1:-1]
            entries[name] = tuple(int(s) for s in inner.split(",") if s.strip())
    return entries, totals


def state_shapes(module: torch.nn.Module, prefix: str = "") -> dict[str, tuple[int, ...]]:
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}


def assert_same_entries(got: dict, want: dict, what: str) -> None:
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    wrong = sorted(k for k in set(got) & set(want) if got[k] != want[k])
    msg = [f"{what}: {len(got)} entries built, {len(want)} in the reference"]
    if missing:
        msg.append(f"missing ({len(missing)}): {missing[:10]}")
    if unexpected:
        msg.append(f"unexpected ({len(unexpected)}): {unexpected[:10]}")
    if wrong:
        msg.append("wrong shapes: " + ", ".join(f"{k} {got[k]} != {want[k]}" for k in wrong[:10]))
    assert not (missing or unexpected or wrong), "\n".join(msg)


# ---------------------------------------------------------------------------------------------
# 1. the tree is complete and every file merges


@need_reference
def test_every_reference_model_has_a_config():
    reference = sorted(
        str(p.relative_to(REFERENCE))[: -len(".txt")] for p in REFERENCE.rglob("*.txt")
    )
    assert len(reference) == 47
    assert sorted(OFFICIAL_MODELS) == reference


def test_base_files_are_present():
    """Every `_BASE_` a config names exists (with its Base-*.yaml), and no file is left unused."""
    used = set()
    for rel in ALL_YAMLS:
        for line in (CONFIGS / rel).read_text().splitlines():
            if line.startswith("_BASE_:"):
                base = (CONFIGS / rel).parent / line.split(":", 1)[1].strip()
                assert base.is_file(), f"{rel}: _BASE_ {base} does not exist"
                used.add(str(base.resolve().relative_to(CONFIGS.resolve())))
    bases = {r for r in ALL_YAMLS if Path(r).name.startswith("Base-")}
    official = {
        r
        for r in bases
        if not r.startswith("synthetic/") and not OTHER_SYSTEMS & set(Path(r).parts)
    }
    assert len(official) == 10  # the official tree's Base files
    assert bases <= used


@pytest.mark.parametrize("rel", ALL_YAMLS)
def test_config_merges(rel):
    cfg = load_cfg(rel)
    if rel.startswith("synthetic/") or OTHER_SYSTEMS & set(Path(rel).parts):
        return  # seg_zoo's own configs: merging is what is checked here
    assert cfg.MODEL.BACKBONE.NAME in ("build_resnet_backbone", "D2SwinTransformer")
    if not Path(rel).name.startswith("Base-"):
        assert cfg.MODEL.META_ARCHITECTURE == "MaskFormer"
        assert cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME == "MSDeformAttnPixelDecoder"
        assert cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME == (
            "MultiScaleMaskedTransformerDecoder"
        )


# ---------------------------------------------------------------------------------------------
# 2. spot values, checked by hand against the official files (commit 9b0651c)


def test_ade20k_semantic_r50_values():
    cfg = load_cfg("ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml")
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 150
    assert cfg.SOLVER.MAX_ITER == 160000
    assert cfg.SOLVER.BASE_LR == 0.0001
    assert cfg.SOLVER.IMS_PER_BATCH == 16
    assert cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR"
    assert cfg.SOLVER.BACKBONE_MULTIPLIER == 0.1
    assert cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE == 0.01
    assert tuple(cfg.INPUT.CROP.SIZE) == (512, 512)
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == tuple(int(x * 0.1 * 512) for x in range(5, 21))
    assert cfg.INPUT.DATASET_MAPPER_NAME == "mask_former_semantic"
    assert cfg.DATASETS.TRAIN == ("ade20k_sem_seg_train",)
    assert cfg.MODEL.WEIGHTS == "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
    assert cfg.MODEL.MASK_FORMER.DEC_LAYERS == 10
    assert cfg.MODEL.MASK_FORMER.CLASS_WEIGHT == 2.0
    assert cfg.MODEL.MASK_FORMER.MASK_WEIGHT == 5.0
    assert cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS == 12544
    assert cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS == 6
    assert (cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON, cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON) == (
        False,
        False,
    )


def test_ade20k_r101_and_swin_base_res640():
    cfg = load_cfg("ade20k/semantic-segmentation/maskformer2_R101_bs16_90k.yaml")
    assert cfg.MODEL.RESNETS.DEPTH == 101
    assert cfg.MODEL.RESNETS.NORM == "SyncBN"
    assert cfg.MODEL.WEIGHTS == "R-101.pkl"
    # the file name says 90k but the schedule is inherited from the R50 file (official quirk)
    assert cfg.SOLVER.MAX_ITER == 160000
    cfg = load_cfg(
        "ade20k/semantic-segmentation/swin/maskformer2_swin_base_384_bs16_160k_res640.yaml"
    )
    assert tuple(cfg.INPUT.CROP.SIZE) == (640, 640)
    assert cfg.INPUT.SIZE_DIVISIBILITY == 640
    assert cfg.TEST.AUG.MAX_SIZE == 4480
    assert cfg.MODEL.SWIN.EMBED_DIM == 128
    assert cfg.MODEL.WEIGHTS == "swin_base_patch4_window12_384.pkl"


def test_coco_panoptic_values():
    cfg = load_cfg("coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml")
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 133
    assert cfg.INPUT.DATASET_MAPPER_NAME == "coco_panoptic_lsj"
    assert cfg.INPUT.IMAGE_SIZE == 1024
    assert (cfg.INPUT.MIN_SCALE, cfg.INPUT.MAX_SCALE) == (0.1, 2.0)
    assert cfg.SOLVER.MAX_ITER == 368750
    assert tuple(cfg.SOLVER.STEPS) == (327778, 355092)
    assert cfg.SOLVER.WARMUP_ITERS == 10
    assert cfg.DATASETS.TEST == ("coco_2017_val_panoptic_with_sem_seg",)
    t = cfg.MODEL.MASK_FORMER.TEST
    assert (t.SEMANTIC_ON, t.INSTANCE_ON, t.PANOPTIC_ON) == (True, True, True)
    assert (t.OBJECT_MASK_THRESHOLD, t.OVERLAP_THRESHOLD) == (0.8, 0.8)
    cfg = load_cfg("coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml")
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 80
    assert cfg.INPUT.DATASET_MAPPER_NAME == "coco_instance_lsj"
    cfg = load_cfg(
        "coco/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml"
    )
    assert cfg.SOLVER.MAX_ITER == 737500
    assert tuple(cfg.SOLVER.STEPS) == (655556, 710184)
    assert cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES == 200


def test_cityscapes_values():
    cfg = load_cfg("cityscapes/semantic-segmentation/maskformer2_R50_bs16_90k.yaml")
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 19
    assert cfg.SOLVER.MAX_ITER == 90000
    assert tuple(cfg.INPUT.CROP.SIZE) == (512, 1024)
    assert cfg.MODEL.RESNETS.NORM == "SyncBN"
    assert cfg.INPUT.SIZE_DIVISIBILITY == -1
    cfg = load_cfg("cityscapes/instance-segmentation/maskformer2_R50_bs16_90k.yaml")
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 8
    cfg = load_cfg(
        "cityscapes/semantic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_90k.yaml"
    )
    assert cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES == 100


def test_mapillary_values():
    cfg = load_cfg("mapillary-vistas/panoptic-segmentation/maskformer_R50_bs16_300k.yaml")
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 65
    assert cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE == 65
    assert cfg.SOLVER.MAX_ITER == 300000
    assert cfg.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD == 0.0
    assert cfg.DATALOADER.NUM_WORKERS == 10
    assert cfg.TEST.EVAL_PERIOD == 0


@pytest.mark.parametrize(
    "rel",
    [
        "ade20k/semantic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_160k_res640.yaml",
        "coco/instance-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml",
        "cityscapes/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_90k.yaml",
        "mapillary-vistas/semantic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_300k.yaml",
    ],
)
def test_swin_large_values(rel):
    s = load_cfg(rel).MODEL.SWIN
    assert s.EMBED_DIM == 192
    assert list(s.DEPTHS) == [2, 2, 18, 2]
    assert list(s.NUM_HEADS) == [6, 12, 24, 48]
    assert s.WINDOW_SIZE == 12
    assert s.PRETRAIN_IMG_SIZE == 384
    assert load_cfg(rel).MODEL.WEIGHTS == "swin_large_patch4_window12_384_22k.pkl"


def test_swin_tiny_small_values():
    cfg = load_cfg("coco/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml")
    s = cfg.MODEL.SWIN
    assert (s.EMBED_DIM, list(s.DEPTHS), list(s.NUM_HEADS), s.WINDOW_SIZE) == (
        96,
        [2, 2, 6, 2],
        [3, 6, 12, 24],
        7,
    )
    assert s.PRETRAIN_IMG_SIZE == 224
    assert cfg.MODEL.WEIGHTS == "swin_tiny_patch4_window7_224.pkl"
    cfg = load_cfg("ade20k/semantic-segmentation/swin/maskformer2_swin_small_bs16_160k.yaml")
    assert list(cfg.MODEL.SWIN.DEPTHS) == [2, 2, 18, 2]
    assert cfg.MODEL.WEIGHTS == "swin_small_patch4_window7_224.pkl"


# ---------------------------------------------------------------------------------------------
# 3. architecture parity with the official code, built on the meta device (no memory, no init)


def _build_on_meta(cfg) -> torch.nn.Module:
    """The model the config describes, built as ``build_model`` would but on the meta device
    (``build_model`` itself moves the model to ``cfg.MODEL.DEVICE``, which meta tensors cannot do).
    """
    from detectron2.modeling import META_ARCH_REGISTRY

    with torch.device("meta"):
        return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)


def _totals(model: torch.nn.Module) -> dict[str, int]:
    """The counters of the reference files' `# total` line."""
    state = model.state_dict()
    params = dict(model.named_parameters())
    buffer_names = [k for k in state if k not in params]
    return {
        "params": sum(p.numel() for p in params.values()),
        "trainable": sum(p.numel() for p in params.values() if p.requires_grad),
        "buffers": sum(math.prod(state[k].shape) for k in buffer_names),
        "entries": len(state),
        "buffer_entries": len(buffer_names),
    }


def test_maskformer_is_registered():
    from detectron2.modeling import META_ARCH_REGISTRY

    assert seg_zoo is not None
    assert "MaskFormer" in META_ARCH_REGISTRY._obj_map


@need_reference
@pytest.mark.parametrize("rel", OFFICIAL_MODELS)
def test_model_matches_official_state_dict(rel):
    """Every state_dict name and shape, and the parameter/buffer totals, equal the official
    model's: the official checkpoints load with zero missing or unexpected keys."""
    cfg = load_cfg(rel)
    cfg.MODEL.DEVICE = "cpu"
    want, want_totals = read_reference(rel)
    model = _build_on_meta(cfg)
    assert_same_entries(state_shapes(model), want, rel)
    assert _totals(model) == want_totals
