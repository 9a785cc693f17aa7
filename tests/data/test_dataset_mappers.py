"""Tests of seg_zoo.data.dataset_mappers on tiny images written to a temporary folder.

Expectations are built independently of the mappers: label PNGs written by hand, panoptic ids
encoded with the COCO formula written out here, masks from numpy slicing or pycocotools, and
image colours that are a function of the label so that alignment survives random augmentation.
"""

import copy
import random

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from PIL import Image

from seg_zoo.config import add_seg_zoo_config
from seg_zoo.data.dataset_mappers import (
    DATASET_MAPPERS,
    COCOInstanceNewBaselineDatasetMapper,
    COCOPanopticNewBaselineDatasetMapper,
    MaskFormerInstanceDatasetMapper,
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
    build_dataset_mapper,
)

DATASET = "seg_zoo_test_mappers_train"
NUM_CLASSES = 5
IGNORE = 255
MetadataCatalog.get(DATASET).set(
    ignore_label=IGNORE,
    stuff_classes=[f"c{i}" for i in range(NUM_CLASSES)],
    thing_classes=[f"c{i}" for i in range(NUM_CLASSES)],
)


def make_cfg(mapper="mask_former_semantic", short_side=24, **input_overrides):
    """A config whose resize is the identity for images with that short side, no crop, no
    flip, no padding, unless ``input_overrides`` (INPUT keys, CROP_ prefix for INPUT.CROP) say
    otherwise."""
    cfg = get_cfg()
    add_seg_zoo_config(cfg)
    cfg.DATASETS.TRAIN = (DATASET,)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = NUM_CLASSES
    cfg.INPUT.DATASET_MAPPER_NAME = mapper
    cfg.INPUT.MIN_SIZE_TRAIN = (short_side,)
    cfg.INPUT.MAX_SIZE_TRAIN = 10_000
    cfg.INPUT.CROP.ENABLED = False
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.INPUT.SIZE_DIVISIBILITY = -1
    for key, value in input_overrides.items():
        if key.startswith("CROP_"):
            setattr(cfg.INPUT.CROP, key[5:], value)
        else:
            setattr(cfg.INPUT, key, value)
    return cfg


def write_png(path, array):
    Image.fromarray(np.asarray(array)).save(path)
    return str(path)


def colour_of(label):
    """Image colour painted on label k: k * 40 on every channel (ignore gets 250)."""
    return np.where(label == IGNORE, 250, label * 40).astype(np.uint8)


def block_labels(h, w, block, seed):
    """(h, w) uint8 labels made of block x block squares of random classes 0..4 or ignore."""
    rng = np.random.default_rng(seed)
    choices = np.array([0, 1, 2, 3, 4, IGNORE])
    coarse = rng.choice(choices, size=(-(-h // block), -(-w // block)))
    return np.kron(coarse, np.ones((block, block), dtype=coarse.dtype))[:h, :w].astype(np.uint8)


def id_to_rgb(ids):
    """COCO panoptic encoding, written out: id = R + 256 * G + 256**2 * B."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 256**2], axis=-1).astype(np.uint8)


def interior(mask, margin):
    """Pixels of ``mask`` whose (2 * margin + 1)^2 neighbourhood is entirely in ``mask``."""
    # Outside the array counts as outside the mask: the crop may have cut through an edge
    # whose other side still blended into the border pixels.
    m = torch.as_tensor(mask, dtype=torch.float32)[None, None]
    m = torch.nn.functional.pad(m, (margin,) * 4, value=0.0)
    inside = -torch.nn.functional.max_pool2d(-m, 2 * margin + 1, stride=1)
    return inside[0, 0].bool()


# ------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------
OFFICIAL_NAMES = {
    "mask_former_semantic": MaskFormerSemanticDatasetMapper,
    "mask_former_panoptic": MaskFormerPanopticDatasetMapper,
    "mask_former_instance": MaskFormerInstanceDatasetMapper,
    "coco_instance_lsj": COCOInstanceNewBaselineDatasetMapper,
    "coco_panoptic_lsj": COCOPanopticNewBaselineDatasetMapper,
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_NAMES))
def test_build_dataset_mapper_by_official_name(name):
    mapper = build_dataset_mapper(make_cfg(name, IMAGE_SIZE=32), is_train=True)
    assert type(mapper) is OFFICIAL_NAMES[name]


def test_unknown_mapper_name_lists_known_names():
    with pytest.raises(
        ValueError, match="'detr_panoptic'.*coco_instance_lsj.*mask_former_semantic"
    ):
        build_dataset_mapper(make_cfg("detr_panoptic"))
    with pytest.raises(TypeError):
        DATASET_MAPPERS["x"] = object  # read-only view


@pytest.mark.parametrize(
    "name", ["mask_former_semantic", "mask_former_panoptic", "mask_former_instance"]
)
def test_training_only_mappers_refuse_evaluation(name):
    with pytest.raises(ValueError, match="training only.*DatasetMapper"):
        build_dataset_mapper(make_cfg(name), is_train=False)


# ------------------------------------------------------------------------------------------
# Semantic
# ------------------------------------------------------------------------------------------
def semantic_sample(tmp_path, label, name="img"):
    image = np.repeat(colour_of(label)[..., None], 3, axis=2)
    return {
        "file_name": write_png(tmp_path / f"{name}.png", image),
        "sem_seg_file_name": write_png(tmp_path / f"{name}_sem.png", label),
        "height": label.shape[0],
        "width": label.shape[1],
    }


def test_semantic_without_augmentation_equals_png(tmp_path):
    label = np.full((24, 30), IGNORE, np.uint8)
    label[:10, :12] = 0
    label[12:, 5:25] = 3
    d = semantic_sample(tmp_path, label)
    original = copy.deepcopy(d)
    out = build_dataset_mapper(make_cfg())(d)
    assert d == original  # the input dict is not mutated
    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, 24, 30)
    assert torch.equal(out["image"][0], torch.from_numpy(colour_of(label)))
    assert out["sem_seg"].dtype == torch.int64
    assert torch.equal(out["sem_seg"], torch.from_numpy(label.astype(np.int64)))
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [0, 3]
    expected = torch.from_numpy(np.stack([label == 0, label == 3]))
    assert torch.equal(inst.gt_masks, expected)


def test_semantic_all_ignore_gives_empty_targets(tmp_path):
    d = semantic_sample(tmp_path, np.full((24, 30), IGNORE, np.uint8))
    inst = build_dataset_mapper(make_cfg())(d)["instances"]
    assert inst.gt_masks.shape == (0, 24, 30) and inst.gt_classes.shape == (0,)


@pytest.mark.parametrize("seed", range(4))
def test_semantic_augmentation_keeps_image_and_labels_aligned(tmp_path, seed):
    label = block_labels(24, 30, block=8, seed=seed)
    d = semantic_sample(tmp_path, label)
    cfg = make_cfg(
        MIN_SIZE_TRAIN=(30, 36),  # upscale by 1.25..1.5
        RANDOM_FLIP="horizontal",
        CROP_ENABLED=True,
        CROP_TYPE="absolute",
        CROP_SIZE=[20, 28],
        SIZE_DIVISIBILITY=16,
        COLOR_AUG_SSD=False,
    )
    random.seed(seed)
    np.random.seed(seed)
    out = build_dataset_mapper(cfg)(d)
    image, sem = out["image"], out["sem_seg"]
    assert image.shape == (3, 32, 32) and sem.shape == (32, 32)
    # The crop (20 x 28) is the only real content; the rest is padding.
    assert (image[:, 20:, :] == 128).all() and (image[:, :, 28:] == 128).all()
    assert (sem[20:, :] == IGNORE).all() and (sem[:, 28:] == IGNORE).all()
    inst = out["instances"]
    assert inst.image_size == (32, 32)
    for k, mask in zip(inst.gt_classes.tolist(), inst.gt_masks):
        assert torch.equal(mask, sem == k)
        core = interior(mask, margin=2)
        if core.any():  # pixels away from label edges sit on that label's colour
            values = image[0][core].int()
            assert (values - 40 * k).abs().max() <= 1, (k, values.unique())


def test_semantic_crop_respects_single_category_max_area(tmp_path):
    # Left half class 0, right half class 1; a 20 x 20 crop is one class only if it hugs a side.
    label = np.zeros((40, 40), np.uint8)
    label[:, 20:] = 1
    d = semantic_sample(tmp_path, label)

    def largest_fraction(max_area, seed):
        cfg = make_cfg(
            short_side=40,
            CROP_ENABLED=True,
            CROP_TYPE="absolute",
            CROP_SIZE=[20, 20],
            CROP_SINGLE_CATEGORY_MAX_AREA=max_area,
        )
        np.random.seed(seed)
        sem = build_dataset_mapper(cfg)(d)["sem_seg"]
        assert sem.shape == (20, 20)
        return max((sem == c).float().mean().item() for c in (0, 1))

    unconstrained = [largest_fraction(1.0, s) for s in range(30)]
    assert max(unconstrained) > 0.75  # without the constraint some crops break the limit
    assert all(largest_fraction(0.75, s) <= 0.75 for s in range(30))


def test_image_smaller_than_crop_is_clipped_then_padded(tmp_path):
    label = np.zeros((10, 12), np.uint8)
    label[:, 6:] = 2
    d = semantic_sample(tmp_path, label)
    cfg = make_cfg(
        short_side=10,
        CROP_ENABLED=True,
        CROP_TYPE="absolute",
        CROP_SIZE=[16, 16],
        SIZE_DIVISIBILITY=16,
    )
    out = build_dataset_mapper(cfg)(d)
    assert out["image"].shape == (3, 16, 16)
    assert torch.equal(out["sem_seg"][:10, :12], torch.from_numpy(label.astype(np.int64)))
    assert (out["sem_seg"][10:] == IGNORE).all() and (out["image"][:, :, 12:] == 128).all()


def test_semantic_bad_inputs(tmp_path):
    label = np.zeros((24, 30), np.uint8)
    mapper = build_dataset_mapper(make_cfg())
    # Unknown class id.
    bad = label.copy()
    bad[0, 0] = 7
    d = semantic_sample(tmp_path, bad, name="bad_id")
    with pytest.raises(ValueError, match=r"Category id 7 in .*bad_id_sem\.png"):
        mapper(d)
    # Label PNG of another size than its image.
    d = semantic_sample(tmp_path, label, name="size")
    write_png(tmp_path / "size_sem.png", np.zeros((20, 30), np.uint8))
    with pytest.raises(ValueError, match=r"size_sem\.png.*\(20, 30\).*size\.png.*\(24, 30\)"):
        mapper(d)
    # Image that does not decode.
    d = semantic_sample(tmp_path, label, name="corrupt")
    (tmp_path / "corrupt.png").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 200)))
    with pytest.raises((OSError, ValueError), match=r"corrupt\.png"):
        mapper(d)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_grayscale_rgba_palette_images_become_three_channels(tmp_path, mode):
    label = np.zeros((24, 30), np.uint8)
    d = semantic_sample(tmp_path, label)
    Image.fromarray(np.full((24, 30, 3), 77, np.uint8)).convert(mode).save(d["file_name"])
    out = build_dataset_mapper(make_cfg())(d)
    assert out["image"].shape == (3, 24, 30)


# ------------------------------------------------------------------------------------------
# Panoptic (mask_former_panoptic)
# ------------------------------------------------------------------------------------------
SEGMENTS = [
    {"id": 5, "category_id": 1, "iscrowd": 0},
    {"id": 300, "category_id": 3, "iscrowd": 0},
    {"id": 70_000, "category_id": 0, "iscrowd": 1},
]


def panoptic_sample(tmp_path, with_sem=True, segments=SEGMENTS, pan_hw=(24, 30)):
    ids = np.zeros((24, 30), np.int64)
    ids[:12, :15] = 5
    ids[12:, 3:28] = 300
    ids[:6, 20:] = 70_000
    category = {0: IGNORE, 5: 1, 300: 3, 70_000: IGNORE}
    sem = np.vectorize(category.get)(ids).astype(np.uint8)
    image = np.repeat(colour_of(sem)[..., None], 3, axis=2)
    pan = np.zeros((*pan_hw, 3), np.uint8)
    pan[: min(24, pan_hw[0]), : min(30, pan_hw[1])] = id_to_rgb(ids)[: pan_hw[0], : pan_hw[1]]
    d = {
        "file_name": write_png(tmp_path / "pan_img.png", image),
        "pan_seg_file_name": write_png(tmp_path / "pan.png", pan),
        "segments_info": copy.deepcopy(segments),
        "height": 24,
        "width": 30,
    }
    if with_sem:
        d["sem_seg_file_name"] = write_png(tmp_path / "pan_sem.png", sem)
    return d, ids, sem


@pytest.mark.parametrize("with_sem", [True, False])
def test_panoptic_without_augmentation(tmp_path, with_sem):
    d, ids, sem = panoptic_sample(tmp_path, with_sem)
    original = copy.deepcopy(d)
    out = build_dataset_mapper(make_cfg("mask_former_panoptic"))(d)
    assert d == original
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [1, 3]  # the crowd segment is not a target
    assert torch.equal(inst.gt_masks, torch.from_numpy(np.stack([ids == 5, ids == 300])))
    assert ("sem_seg" in out) == with_sem
    if with_sem:
        assert torch.equal(out["sem_seg"], torch.from_numpy(sem.astype(np.int64)))


@pytest.mark.parametrize("seed", range(3))
def test_panoptic_augmentation_alignment_and_padding(tmp_path, seed):
    d, _, _ = panoptic_sample(tmp_path, with_sem=False)
    cfg = make_cfg(
        "mask_former_panoptic",
        MIN_SIZE_TRAIN=(30, 36),
        RANDOM_FLIP="horizontal",
        CROP_ENABLED=True,
        CROP_TYPE="absolute",
        CROP_SIZE=[20, 28],
        CROP_SINGLE_CATEGORY_MAX_AREA=0.9,  # exercises the crop without a semantic PNG
        SIZE_DIVISIBILITY=16,
    )
    random.seed(seed)
    np.random.seed(seed)
    out = build_dataset_mapper(cfg)(d)
    image, inst = out["image"], out["instances"]
    assert image.shape == (3, 32, 32) and inst.gt_masks.shape[1:] == (32, 32)
    assert not inst.gt_masks[:, 20:].any() and not inst.gt_masks[:, :, 28:].any()
    assert inst.gt_masks.flatten(1).any(1).all()  # segments cropped away are dropped
    for k, mask in zip(inst.gt_classes.tolist(), inst.gt_masks):
        core = interior(mask, margin=2)
        if core.any():
            assert (image[0][core].int() - 40 * k).abs().max() <= 1


@pytest.mark.parametrize("name", ["mask_former_panoptic", "coco_panoptic_lsj"])
def test_panoptic_without_segments_gives_empty_targets(tmp_path, name):
    # Only a crowd segment and one listed without pixels: neither is a target.
    segments = [SEGMENTS[2], {"id": 777, "category_id": 2, "iscrowd": 0}]
    d, _, _ = panoptic_sample(tmp_path, with_sem=False, segments=segments)
    inst = build_dataset_mapper(make_cfg(name, IMAGE_SIZE=32, MIN_SCALE=1.0, MAX_SCALE=1.0))(d)[
        "instances"
    ]
    assert inst.gt_classes.shape == (0,)
    assert inst.gt_masks.shape == ((0, 24, 30) if name == "mask_former_panoptic" else (0, 32, 32))


def test_panoptic_bad_inputs(tmp_path):
    mapper = build_dataset_mapper(make_cfg("mask_former_panoptic"))
    segments = SEGMENTS + [{"id": 9, "category_id": 12, "iscrowd": 0}]
    d, _, _ = panoptic_sample(tmp_path, segments=segments)
    with pytest.raises(ValueError, match=r"Category id 12 in .*pan\.png"):
        mapper(d)
    d, _, _ = panoptic_sample(tmp_path, pan_hw=(24, 31))
    with pytest.raises(ValueError, match=r"pan\.png.*\(24, 31\).*pan_img\.png.*\(24, 30\)"):
        mapper(d)


# ------------------------------------------------------------------------------------------
# Instance (mask_former_instance)
# ------------------------------------------------------------------------------------------
def instance_sample(tmp_path, h=24, w=30):
    """Four instances in four encodings, plus a crowd region; returns dict and masks."""
    masks = np.zeros((4, h, w), np.uint8)
    masks[0, 3:8, 2:10] = 1  # polygon 2,3 - 10,8 (pycocotools covers rows 3..7, cols 2..9)
    masks[1, 10:20, 1:9] = 1
    masks[1, 14:16, 3:5] = 0  # a hole: not representable by one polygon
    masks[2, 12:22, 14:26] = 1
    masks[3, 2:9, 16:28] = 1
    classes = [2, 0, 4, 1]
    compressed = mask_util.encode(np.asfortranarray(masks[1]))
    # Uncompressed RLE by hand: run lengths of the column-major flattening, starting with 0s.
    flat = masks[2].flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    assert flat[0] == 0
    annotations = [
        {"category_id": 2, "segmentation": [[2, 3, 10, 3, 10, 8, 2, 8]], "iscrowd": 0},
        {"category_id": 0, "segmentation": compressed, "iscrowd": 0},
        {"category_id": 4, "segmentation": {"size": [h, w], "counts": runs}, "iscrowd": 0},
        {"category_id": 1, "segmentation": masks[3].copy()},
        {"category_id": 3, "segmentation": [[0, 0, 5, 0, 5, 5]], "iscrowd": 1},
    ]
    label = np.full((h, w), IGNORE, np.uint8)
    for k, m in zip(classes, masks):
        label[m.astype(bool)] = k
    image = np.repeat(colour_of(label)[..., None], 3, axis=2)
    d = {
        "file_name": write_png(tmp_path / "inst.png", image),
        "height": h,
        "width": w,
        "annotations": annotations,
    }
    return d, masks, classes


def test_instance_without_augmentation(tmp_path):
    d, masks, classes = instance_sample(tmp_path)
    original = copy.deepcopy(d)
    out = build_dataset_mapper(make_cfg("mask_former_instance"))(d)
    assert d.keys() == original.keys() and len(d["annotations"]) == 5
    inst = out["instances"]
    assert inst.gt_classes.tolist() == classes
    assert inst.gt_masks.dtype == torch.bool
    assert torch.equal(inst.gt_masks, torch.from_numpy(masks.astype(bool)))
    # The compressed RLE also decodes, with pycocotools, to what the mapper produced.
    rle = d["annotations"][1]["segmentation"]
    assert torch.equal(inst.gt_masks[1], torch.from_numpy(mask_util.decode(rle).astype(bool)))


@pytest.mark.parametrize("seed", range(3))
def test_instance_augmentation_alignment_and_padding(tmp_path, seed):
    d, _, _ = instance_sample(tmp_path)
    cfg = make_cfg(
        "mask_former_instance",
        MIN_SIZE_TRAIN=(30, 36),
        RANDOM_FLIP="horizontal",
        CROP_ENABLED=True,
        CROP_TYPE="absolute",
        CROP_SIZE=[20, 28],
        SIZE_DIVISIBILITY=16,
    )
    random.seed(seed)
    np.random.seed(seed)
    out = build_dataset_mapper(cfg)(d)
    image, inst = out["image"], out["instances"]
    assert image.shape == (3, 32, 32) and (image[:, 20:] == 128).all()
    assert inst.gt_masks.shape[1:] == (32, 32) and not inst.gt_masks[:, 20:].any()
    assert inst.gt_masks.flatten(1).any(1).all()  # instances cropped away are dropped
    for k, mask in zip(inst.gt_classes.tolist(), inst.gt_masks):
        core = interior(mask, margin=2)
        if core.any():
            assert (image[0][core].int() - 40 * k).abs().max() <= 1


def test_instance_bad_inputs_and_empty(tmp_path):
    mapper = build_dataset_mapper(make_cfg("mask_former_instance"))
    d, _, _ = instance_sample(tmp_path)
    d["annotations"][0]["category_id"] = 9
    with pytest.raises(ValueError, match=r"Category id 9 in .*inst\.png"):
        mapper(d)
    d["annotations"] = [{"category_id": 0, "segmentation": np.zeros((5, 5), np.uint8)}]
    with pytest.raises(ValueError, match=r"inst\.png.*\(5, 5\)"):
        mapper(d)
    d["annotations"] = []
    inst = mapper(d)["instances"]
    assert inst.gt_masks.shape == (0, 24, 30) and inst.gt_classes.shape == (0,)


# ------------------------------------------------------------------------------------------
# LSJ mappers
# ------------------------------------------------------------------------------------------
def lsj_cfg(name, scale):
    return make_cfg(name, IMAGE_SIZE=32, MIN_SCALE=scale, MAX_SCALE=scale)


def test_coco_instance_lsj_downscale_pads_to_square(tmp_path):
    d, masks, classes = instance_sample(tmp_path, h=40, w=40)
    d["annotations"].append(  # covers the whole image: must not spill into the padding
        {"category_id": 3, "segmentation": [[0, 0, 40, 0, 40, 40, 0, 40]], "iscrowd": 0}
    )
    # Scale 0.5 of 32 for a 40 x 40 image: 16 x 16 content, padded to 32 x 32.
    out = build_dataset_mapper(lsj_cfg("coco_instance_lsj", 0.5))(d)
    image, pad, inst = out["image"], out["padding_mask"], out["instances"]
    assert image.shape == (3, 32, 32) and pad.shape == (32, 32) and pad.dtype == torch.bool
    expected_pad = torch.ones(32, 32, dtype=torch.bool)
    expected_pad[:16, :16] = False
    assert torch.equal(pad, expected_pad)
    assert (image[:, 16:] == 128).all() and (image[:, :, 16:] == 128).all()
    assert inst.gt_classes.tolist() == classes + [3]
    assert torch.equal(inst.gt_masks[-1], ~expected_pad)
    # No mask, whatever its encoding (polygon, RLE, binary), reaches into the padding.
    assert not (inst.gt_masks & expected_pad).any()
    for mask, box in zip(inst.gt_masks, inst.gt_boxes.tensor):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        hand = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert box.tolist() == [float(v) for v in hand]


@pytest.mark.parametrize("seed", range(3))
def test_coco_instance_lsj_upscale_crops_and_aligns(tmp_path, seed):
    d, _, _ = instance_sample(tmp_path)
    cfg = make_cfg("coco_instance_lsj", IMAGE_SIZE=32, MIN_SCALE=1.5, MAX_SCALE=2.0)
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    random.seed(seed)
    np.random.seed(seed)
    out = build_dataset_mapper(cfg)(d)
    image, inst = out["image"], out["instances"]
    assert image.shape == (3, 32, 32) and not out["padding_mask"].any()
    assert inst.gt_masks.flatten(1).any(1).all() and len(inst.gt_boxes) == len(inst)
    for k, mask in zip(inst.gt_classes.tolist(), inst.gt_masks):
        core = interior(mask, margin=2)
        if core.any():
            assert (image[0][core].int() - 40 * k).abs().max() <= 1


def test_coco_instance_lsj_empty_and_eval(tmp_path):
    d, _, _ = instance_sample(tmp_path)
    d["annotations"] = [a for a in d["annotations"] if a.get("iscrowd")]
    inst = build_dataset_mapper(lsj_cfg("coco_instance_lsj", 1.0))(d)["instances"]
    assert inst.gt_masks.shape == (0, 32, 32) and len(inst.gt_boxes) == 0
    out = build_dataset_mapper(lsj_cfg("coco_instance_lsj", 0.3), is_train=False)(d)
    assert out["image"].shape == (3, 32, 32) and "annotations" not in out
    assert "instances" not in out
    # Evaluation fixes the scale at 1: the 24 x 30 image fits 32 wide, i.e. 25.6 -> 26 high.
    assert not out["padding_mask"][:25, :].any() and out["padding_mask"][27:].all()


def test_coco_panoptic_lsj(tmp_path):
    d, ids, _ = panoptic_sample(tmp_path, with_sem=False)
    # 24 x 30 at scale 1.0 of 32: factor 32/30, content 26 (25.6 rounded) x 32.
    out = build_dataset_mapper(lsj_cfg("coco_panoptic_lsj", 1.0))(d)
    image, inst = out["image"], out["instances"]
    assert image.shape == (3, 32, 32) and out["padding_mask"][26:].all()
    assert not out["padding_mask"][:25].any()
    assert inst.gt_classes.tolist() == [1, 3]
    assert not inst.gt_masks[:, 26:].any()
    for k, mask in zip(inst.gt_classes.tolist(), inst.gt_masks):
        core = interior(mask, margin=2)
        assert core.any()
        assert (image[0][core].int() - 40 * k).abs().max() <= 1
    # Nearest-neighbour content: each mask's area scales with the image, about (32/30)^2.
    for mask, sid in zip(inst.gt_masks, (5, 300)):
        ratio = mask.sum().item() / (ids == sid).sum()
        assert abs(ratio - (32 / 30) ** 2) < 0.1
    out = build_dataset_mapper(lsj_cfg("coco_panoptic_lsj", 1.0), is_train=False)(d)
    assert "instances" not in out and out["image"].shape == (3, 32, 32)

    bad, _, _ = panoptic_sample(
        tmp_path, with_sem=False, segments=[{"id": 5, "category_id": -1, "iscrowd": 0}]
    )
    with pytest.raises(ValueError, match=r"Category id -1 in .*pan\.png"):
        build_dataset_mapper(lsj_cfg("coco_panoptic_lsj", 1.0))(bad)
