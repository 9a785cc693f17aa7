"""Swin in detectron2's own detectors: the Swin / Swin-FPN backbones, the COCO Mask R-CNN and
Cascade Mask R-CNN configs, and a short CPU training of a tiny Swin Mask R-CNN.

References used here, none of them the code under test: output sizes worked out by hand from
the strides; the official Swin ImageNet models' parameter totals (Microsoft Swin-Transformer,
listed in /work/shared/reference/swin/); the Swin paper's Table 2 parameter counts; COCO's
image count for the schedule.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, META_ARCH_REGISTRY

import seg_zoo  # noqa: F401  (registers the backbones and the "detectron2" mapper)
from seg_zoo import add_seg_zoo_config
from seg_zoo.modeling.backbone import D2SwinTransformer

REPO = Path(__file__).resolve().parents[2]
RCNN_CONFIGS = REPO / "configs" / "coco" / "instance-segmentation" / "swin_rcnn"
SYNTHETIC = REPO / "configs" / "synthetic" / "mask_rcnn_swin_tiny_synthetic.yaml"


def _cfg(path: Path | None = None):
    cfg = get_cfg()
    add_seg_zoo_config(cfg)
    if path is not None:
        cfg.merge_from_file(str(path), allow_unsafe=False)
    return cfg


def _tiny_swin_cfg():
    """A small Swin (32 channels, one block per stage) with a 4-token window."""
    cfg = _cfg()
    cfg.MODEL.SWIN.EMBED_DIM = 32
    cfg.MODEL.SWIN.DEPTHS = [1, 1, 1, 1]
    cfg.MODEL.SWIN.NUM_HEADS = [1, 2, 4, 8]
    cfg.MODEL.SWIN.WINDOW_SIZE = 4
    cfg.MODEL.SWIN.DROP_PATH_RATE = 0.0
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 24
    return cfg


# ---------------------------------------------------------------------------------------------
# 1. the backbones


def test_swin_backbone_shapes_strides_channels():
    cfg = _tiny_swin_cfg()
    backbone = BACKBONE_REGISTRY.get("build_swin_backbone")(cfg, ShapeSpec(channels=3))
    assert isinstance(backbone, D2SwinTransformer)
    # Stage i has stride 4 * 2**i and EMBED_DIM * 2**i channels (patch merging doubles them).
    want = {"res2": (32, 4), "res3": (64, 8), "res4": (128, 16), "res5": (256, 32)}
    assert {k: (s.channels, s.stride) for k, s in backbone.output_shape().items()} == want
    assert backbone.size_divisibility == 32
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 96, 128))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (2, 32, 24, 32),
        "res3": (2, 64, 12, 16),
        "res4": (2, 128, 6, 8),
        "res5": (2, 256, 3, 4),
    }


def test_swin_fpn_backbone_shapes_strides_channels():
    cfg = _tiny_swin_cfg()
    backbone = BACKBONE_REGISTRY.get("build_swin_fpn_backbone")(cfg, ShapeSpec(channels=3))
    assert isinstance(backbone, FPN) and isinstance(backbone.bottom_up, D2SwinTransformer)
    # p2..p5 from res2..res5, p6 = max-pool (kernel 1, stride 2) of p5: ceil(p5 / 2).
    want = {f"p{i}": (24, 2**i) for i in range(2, 7)}
    assert {k: (s.channels, s.stride) for k, s in backbone.output_shape().items()} == want
    assert backbone.size_divisibility == 32
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 96, 128))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "p2": (1, 24, 24, 32),
        "p3": (1, 24, 12, 16),
        "p4": (1, 24, 6, 8),
        "p5": (1, 24, 3, 4),
        "p6": (1, 24, 2, 2),
    }


def test_swin_fpn_keeps_the_swin_checkpoint_names():
    """A converted Swin checkpoint (D2SwinTransformer's names) maps 1:1 onto bottom_up.*."""
    cfg = _tiny_swin_cfg()
    swin = D2SwinTransformer(cfg, ShapeSpec(channels=3))
    fpn = BACKBONE_REGISTRY.get("build_swin_fpn_backbone")(cfg, ShapeSpec(channels=3))
    inside = {
        k[len("bottom_up.") :]: tuple(v.shape)
        for k, v in fpn.state_dict().items()
        if k.startswith("bottom_up.")
    }
    assert inside == {k: tuple(v.shape) for k, v in swin.state_dict().items()}


def test_fpn_asking_for_a_stage_swin_does_not_output_is_reported():
    cfg = _tiny_swin_cfg()
    cfg.MODEL.SWIN.OUT_FEATURES = ["res2", "res3", "res4"]
    with pytest.raises(ValueError, match=r"MODEL.FPN.IN_FEATURES .*\['res5'\].*OUT_FEATURES"):
        BACKBONE_REGISTRY.get("build_swin_fpn_backbone")(cfg, ShapeSpec(channels=3))


# ---------------------------------------------------------------------------------------------
# 2. the COCO configs

# Parameter totals of Microsoft's Swin ImageNet-1k classifiers (reference/swin/*.txt `# total`).
OFFICIAL_SWIN_CLASSIFIER_PARAMS = {
    "tiny": 28_288_354,
    "small": 49_606_258,
    "base": 87_768_224,
}
LAST_STAGE_CHANNELS = {"tiny": 768, "small": 768, "base": 1024}
EMBED_DIM = {"tiny": 96, "small": 96, "base": 128}

# What seg_zoo builds (recorded), and the paper's Table 2 counts where it gives one.
# Mask R-CNN Swin-B is not in the paper (its Swin-B detector is Cascade Mask R-CNN only).
RCNN_PARAMS = {
    "mask_rcnn_swin_tiny_FPN_3x.yaml": (47_794_602, 48e6),
    "mask_rcnn_swin_small_FPN_3x.yaml": (69_112_506, 69e6),
    "mask_rcnn_swin_base_FPN_3x.yaml": (107_141_800, None),
    "cascade_mask_rcnn_swin_tiny_FPN_3x.yaml": (79_371_544, 86e6),
    "cascade_mask_rcnn_swin_small_FPN_3x.yaml": (100_689_448, 107e6),
    "cascade_mask_rcnn_swin_base_FPN_3x.yaml": (138_718_742, 145e6),
}

# The official Cascade Mask R-CNN (mmdet) has what detectron2's CascadeROIHeads has not: a mask
# head per stage (3, not 1) and per-class box regression in every stage. Worked out by hand:
# mask head = 4 x conv3x3 256->256 (+bias), deconv 2x2 256->256 (+bias), 1x1 256->80 (+bias);
# per-class regression adds (80 - 1) * 4 outputs of a 1024-wide fc in each of 3 stages.
_MASK_HEAD = 4 * (256 * 256 * 9 + 256) + (256 * 256 * 4 + 256) + (256 * 80 + 80)
OFFICIAL_CASCADE_EXTRA = 2 * _MASK_HEAD + 3 * (80 - 1) * 4 * (1024 + 1)


def _variant(name: str) -> str:
    return next(v for v in ("tiny", "small", "base") if f"_{v}_" in name)


def _build_on_meta(cfg) -> torch.nn.Module:
    # build_model would move the model to MODEL.DEVICE, which meta tensors cannot do.
    with torch.device("meta"):
        return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)


def _num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", sorted(RCNN_PARAMS))
def test_rcnn_config_builds_with_the_papers_parameter_count(name):
    cfg = _cfg(RCNN_CONFIGS / name)
    model = _build_on_meta(cfg)
    variant = _variant(name)

    # The Swin inside is the official one: its classifier's total, less the 1000-way head and
    # the final norm, plus the four per-stage output norms detectron2 features go through.
    c = LAST_STAGE_CHANNELS[variant]
    stage_channels = [EMBED_DIM[variant] * 2**i for i in range(4)]
    official_backbone = (
        OFFICIAL_SWIN_CLASSIFIER_PARAMS[variant] - (c * 1000 + 1000) - 2 * c
    ) + sum(2 * ch for ch in stage_channels)
    assert _num_params(model.backbone.bottom_up) == official_backbone

    recorded, paper = RCNN_PARAMS[name]
    total = _num_params(model)
    assert total == recorded
    if paper is not None:
        comparable = total + (OFFICIAL_CASCADE_EXTRA if name.startswith("cascade") else 0)
        assert abs(comparable - paper) < 1e6, (name, comparable, paper)


@pytest.mark.parametrize("name", sorted(RCNN_PARAMS))
def test_rcnn_config_has_the_papers_recipe(name):
    cfg = _cfg(RCNN_CONFIGS / name)
    variant = _variant(name)
    assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
    assert cfg.MODEL.BACKBONE.NAME == "build_swin_fpn_backbone"
    assert cfg.MODEL.ROI_HEADS.NAME == (
        "CascadeROIHeads" if name.startswith("cascade") else "StandardROIHeads"
    )
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 80 and cfg.MODEL.MASK_ON
    assert cfg.MODEL.WEIGHTS == f"swin_{variant}_patch4_window7_224.pkl"
    # drop_path as the official configs: 0.2 for T and S, 0.3 for B
    assert cfg.MODEL.SWIN.DROP_PATH_RATE == {"tiny": 0.2, "small": 0.2, "base": 0.3}[variant]
    assert cfg.INPUT.DATASET_MAPPER_NAME == "detectron2"
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == tuple(range(480, 801, 32))
    assert cfg.INPUT.MAX_SIZE_TRAIN == 1333
    # the official AutoAugment's second policy, picked for half of the images
    rcr = cfg.INPUT.RESIZE_CROP_RESIZE
    assert rcr.ENABLED and rcr.PROB == 0.5 and not cfg.INPUT.CROP.ENABLED
    assert (tuple(rcr.MIN_SIZE), tuple(rcr.CROP_SIZE)) == ((400, 500, 600), (384, 600))
    assert (cfg.DATASETS.TRAIN, cfg.DATASETS.TEST) == (("coco_2017_train",), ("coco_2017_val",))
    s = cfg.SOLVER
    assert (s.OPTIMIZER, s.BASE_LR, s.WEIGHT_DECAY, s.IMS_PER_BATCH) == ("ADAMW", 1e-4, 0.05, 16)
    assert (s.WEIGHT_DECAY_NORM, s.WEIGHT_DECAY_EMBED, s.BACKBONE_MULTIPLIER) == (0.0, 0.0, 1.0)
    # 36 epochs over COCO train2017's 117,266 annotated images, decays after epochs 27 and 33
    per_epoch = math.ceil(117_266 / 16)
    assert s.MAX_ITER == 36 * per_epoch
    assert tuple(s.STEPS) == (27 * per_epoch, 33 * per_epoch)


# ---------------------------------------------------------------------------------------------
# 3. a short training of the tiny synthetic Mask R-CNN through train_net.py


@pytest.fixture
def one_thread():
    # On a few shared cores, torch's OpenMP threads oversubscribe them and slow training ~5x.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    from seg_zoo.data.datasets.synthetic import generate_synthetic_dataset, register_all_synthetic

    root = str(tmp_path_factory.mktemp("datasets"))
    generate_synthetic_dataset(root)
    register_all_synthetic(root)
    yield root
    register_all_synthetic()  # back to the default location


def test_detectron2_mapper_is_registered(synthetic_root):
    from detectron2.data import DatasetCatalog, DatasetMapper
    from detectron2.structures import BitMasks

    from seg_zoo.data.dataset_mappers import build_dataset_mapper

    cfg = _cfg(SYNTHETIC)
    mapper = build_dataset_mapper(cfg, is_train=True)
    assert isinstance(mapper, DatasetMapper)
    # without INPUT.RESIZE_CROP_RESIZE it is detectron2's mapper, as detectron2 builds it
    plain = DatasetMapper(cfg, is_train=True)
    assert str(mapper.augmentations) == str(plain.augmentations)
    assert mapper.recompute_boxes == plain.recompute_boxes
    record = DatasetCatalog.get("synthetic_instance_train")[0]
    out = mapper(record)
    instances = out["instances"]
    assert len(instances) == sum(1 for a in record["annotations"] if not a.get("iscrowd", 0))
    assert isinstance(instances.gt_masks, BitMasks)
    assert instances.gt_masks.tensor.shape[-2:] == out["image"].shape[-2:]
    assert int(instances.gt_classes.max()) < 4


def test_detectron2_mapper_resize_crop_resize(synthetic_root):
    from detectron2.data import DatasetCatalog
    from detectron2.data import transforms as T

    from seg_zoo.data.augmentation import RandomChoice
    from seg_zoo.data.dataset_mappers import build_dataset_mapper

    # every image cropped. The synthetic images have sides of 96..160: the first resize makes
    # the short side 200 (long side <= 200 * 160 / 96 < 400), so a 100..150 crop always cuts
    cfg = _cfg(SYNTHETIC)
    cfg.INPUT.MAX_SIZE_TRAIN = 400
    cfg.INPUT.RESIZE_CROP_RESIZE.ENABLED = True
    cfg.INPUT.RESIZE_CROP_RESIZE.PROB = 1.0
    cfg.INPUT.RESIZE_CROP_RESIZE.MIN_SIZE = (200,)
    cfg.INPUT.RESIZE_CROP_RESIZE.CROP_SIZE = (100, 150)
    mapper = build_dataset_mapper(cfg, is_train=True)
    assert isinstance(mapper.augmentations.augs[0], RandomChoice)
    assert not any(isinstance(a, T.ResizeShortestEdge) for a in mapper.augmentations.augs)
    assert mapper.recompute_boxes
    assert build_dataset_mapper(cfg, is_train=False).augmentations.augs[0].__class__ is (
        T.ResizeShortestEdge
    )  # evaluation is untouched
    records = DatasetCatalog.get("synthetic_instance_train")[:8]
    np.random.seed(0)
    image = np.zeros((records[0]["height"], records[0]["width"], 3), np.uint8)
    first, crop, _, _ = mapper.augmentations(T.AugInput(image)).transforms
    assert min(first.new_h, first.new_w) == 200
    assert crop.h <= 150 < min(first.new_h, first.new_w) and crop.w <= 150
    checked = 0
    for record in records:
        instances = mapper(record)["instances"]
        masks = instances.gt_masks.tensor.numpy()
        for box, mask in zip(instances.gt_boxes.tensor.numpy(), masks):
            ys, xs = np.nonzero(mask)
            if len(ys):  # boxes are the tight boxes of what the crop left of each mask
                np.testing.assert_allclose(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                checked += 1
    assert checked > 0

    cfg.INPUT.CROP.ENABLED = True
    with pytest.raises(ValueError, match="RESIZE_CROP_RESIZE.ENABLED and INPUT.CROP.ENABLED"):
        build_dataset_mapper(cfg, is_train=True)

    # a plain detectron2 config (no seg_zoo keys) builds detectron2's mapper as it is
    from detectron2.config import get_cfg
    from detectron2.data import DatasetMapper

    from seg_zoo.data.dataset_mappers import DATASET_MAPPERS

    plain_cfg = get_cfg()
    ours = DATASET_MAPPERS["detectron2"](plain_cfg, True)
    assert str(ours.augmentations) == str(DatasetMapper(plain_cfg, True).augmentations)


@pytest.mark.slow
def test_tiny_swin_mask_rcnn_trains_and_evaluates(synthetic_root, tmp_path, one_thread):
    import train_net

    argv = ["--config-file", str(SYNTHETIC), "OUTPUT_DIR", str(tmp_path)]
    argv += ["SOLVER.MAX_ITER", "20", "SOLVER.IMS_PER_BATCH", "2"]
    # with the COCO recipe's resize-crop-resize, scaled to the synthetic images (96..160 px)
    argv += ["INPUT.RESIZE_CROP_RESIZE.ENABLED", "True", "INPUT.RESIZE_CROP_RESIZE.MIN_SIZE"]
    argv += ["(120, 140)", "INPUT.RESIZE_CROP_RESIZE.CROP_SIZE", "(64, 110)"]
    results = train_net.main(train_net.default_argument_parser().parse_args(argv))
    for task in ("bbox", "segm"):
        assert np.isfinite(results[task]["AP"]), (task, results[task])
    assert os.path.isfile(tmp_path / "model_final.pth")
