"""Dataset conversions on tiny hand-made raw files, against outputs worked out by hand."""

import json
import pickle

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from seg_zoo.data import prepare


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _load(path):
    with Image.open(path) as im:
        return np.asarray(im)


# ---------------------------------------------------------------------- ADE20K semantic shift
RAW_ADE = np.array(
    [[0, 1, 2, 3, 150], [150, 0, 0, 1, 1], [2, 2, 2, 0, 0], [10, 20, 30, 40, 50]], np.uint8
)
SHIFTED_ADE = np.array(
    [[255, 0, 1, 2, 149], [149, 255, 255, 0, 0], [1, 1, 1, 255, 255], [9, 19, 29, 39, 49]],
    np.uint8,
)


def test_prepare_ade20k_sem_seg_shifts_labels(tmp_path):
    _save(tmp_path / "annotations" / "ADE_val_1.png", RAW_ADE)
    n = prepare.prepare_ade20k_sem_seg(tmp_path / "annotations", tmp_path / "out")
    assert n == 1
    out = _load(tmp_path / "out" / "ADE_val_1.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, SHIFTED_ADE)


def test_prepare_ade20k_sem_seg_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare.prepare_ade20k_sem_seg(tmp_path / "nowhere", tmp_path / "out")
    _save(tmp_path / "ann" / "rgb.png", np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match=r"rgb\.png.*\(4, 5, 3\)"):
        prepare.prepare_ade20k_sem_seg(tmp_path / "ann", tmp_path / "out")


# ---------------------------------------------------------------------------- ADE20K-full
# Class indices of ADE20K-full categories (official list): wall 2978 -> trainId 0,
# person 1831 -> 11, cat 430 -> 500. 2978 = 11 * 256 + 162, 1831 = 7 * 256 + 39,
# 430 = 1 * 256 + 174. R carries 10 * (index // 256) plus any remainder < 10.
def _full_seg():
    seg = np.zeros((4, 5, 3), np.uint8)
    seg[0, :] = (113, 162, 0)  # 113 // 10 = 11 -> wall
    seg[1, :2] = (70, 39, 0)  # person
    seg[1, 2:] = (19, 174, 0)  # 19 // 10 = 1 -> cat
    seg[2, :] = (0, 1, 0)  # index 1: not among the 847 classes -> ignore
    # row 3 stays 0 = unlabeled -> ignore
    return seg


EXPECTED_FULL = np.array(
    [[0] * 5, [11, 11, 500, 500, 500], [65535] * 5, [65535] * 5], dtype=np.uint16
)


def test_ade20k_full_class_mask_and_train_ids():
    mask = prepare.ade20k_full_class_mask(_full_seg())
    assert mask.dtype == np.int32
    assert mask[0, 0] == 2978 and mask[1, 0] == 1831 and mask[1, 4] == 430 and mask[3, 0] == 0
    np.testing.assert_array_equal(prepare.ade20k_full_train_ids(mask), EXPECTED_FULL)


@pytest.mark.parametrize(
    "hw, expected",
    [
        ((600, 800), (512, 683)),  # 800 / 600 * 512 = 682.67
        ((1000, 513), (998, 512)),  # 1000 / 513 * 512 = 998.05
        ((1024, 1025), (512, 512)),  # 512.5 rounds half to even, like the official round()
        ((512, 1000), None),  # shorter side not above 512
        ((300, 200), None),
    ],
)
def test_ade20k_full_resize_shape(hw, expected):
    assert prepare.ade20k_full_resize_shape(*hw) == expected


def test_prepare_ade20k_full_end_to_end(tmp_path):
    folder = "ADE20K_2021_17_01/images/ADE/validation/home"
    _save(tmp_path / folder / "ADE_val_00000001.jpg", np.full((4, 5, 3), 128, np.uint8))
    _save(tmp_path / folder / "ADE_val_00000001_seg.png", _full_seg())
    index = {"folder": [folder], "filename": ["ADE_val_00000001.jpg"]}
    with open(tmp_path / "ADE20K_2021_17_01" / "index_ade20k.pkl", "wb") as f:
        pickle.dump(index, f)

    counts = prepare.prepare_ade20k_full_sem_seg(tmp_path)
    assert counts == {"training": 0, "validation": 1}
    base = tmp_path / "ADE20K_2021_17_01"
    label = _load(base / "annotations_detectron2/validation/ADE_val_00000001.tif")
    assert label.dtype == np.uint16
    np.testing.assert_array_equal(label, EXPECTED_FULL)
    assert _load(base / "images_detectron2/validation/ADE_val_00000001.jpg").shape == (4, 5, 3)


def test_prepare_ade20k_full_missing_index(tmp_path):
    with pytest.raises(FileNotFoundError, match="index_ade20k.pkl"):
        prepare.prepare_ade20k_full_sem_seg(tmp_path)


# ----------------------------------------------------------------- ADE20K panoptic / instance
# Raw SceneParsing classes (1-based): 1 wall, 3 sky (stuff); 13 person (thing, label 12).
RAW_SEM = np.array(
    [[1, 1, 1, 3, 3], [1, 1, 1, 3, 3], [1, 13, 13, 0, 0], [1, 13, 13, 0, 0]], np.uint8
)


def _raw_instances():
    ins = np.zeros((4, 5, 3), np.uint8)
    # R = instance class (1-based; 4 = person -> label 12, 1 = bed -> label 7), G = instance no.
    ins[2:4, 1:3] = (4, 1, 0)
    ins[0, 2] = (1, 2, 0)  # a bed pixel painted over the wall
    return ins


# Stuff first in label order (wall -> 1, sky -> 2), then instances in number order
# (person -> 3, bed -> 4).
EXPECTED_PAN_IDS = np.array(
    [[1, 1, 4, 2, 2], [1, 1, 1, 2, 2], [1, 3, 3, 0, 0], [1, 3, 3, 0, 0]], np.int64
)
EXPECTED_SEGMENTS = [
    {"id": 1, "category_id": 0, "area": 7, "bbox": [0, 0, 3, 4], "iscrowd": 0},
    {"id": 2, "category_id": 2, "area": 4, "bbox": [3, 0, 2, 2], "iscrowd": 0},
    {"id": 3, "category_id": 12, "area": 4, "bbox": [1, 2, 2, 2], "iscrowd": 0},
    {"id": 4, "category_id": 7, "area": 1, "bbox": [2, 0, 1, 1], "iscrowd": 0},
]


def _rgb2id(rgb):
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def test_ade20k_panoptic_from_annotations():
    pan, segments = prepare.ade20k_panoptic_from_annotations(RAW_SEM, _raw_instances())
    assert pan.dtype == np.uint8 and pan.shape == (4, 5, 3)
    np.testing.assert_array_equal(_rgb2id(pan), EXPECTED_PAN_IDS)
    assert segments == EXPECTED_SEGMENTS


def test_ade20k_panoptic_drops_fully_covered_stuff():
    sem = np.full((2, 2), 3, np.uint8)  # all sky
    ins = np.zeros((2, 2, 3), np.uint8)
    ins[...] = (4, 1, 0)  # one person over everything
    pan, segments = prepare.ade20k_panoptic_from_annotations(sem, ins)
    assert [(s["id"], s["category_id"], s["area"]) for s in segments] == [(2, 12, 4)]
    np.testing.assert_array_equal(_rgb2id(pan), np.full((2, 2), 2))


@pytest.mark.parametrize(
    "bad_pixels, message",
    [({(0, 0): (0, 5, 0)}, "class value 0"), ({(0, 0): (4, 1, 0), (0, 1): (1, 1, 0)}, "mixes")],
)
def test_ade20k_bad_instance_png(bad_pixels, message):
    ins = np.zeros((2, 2, 3), np.uint8)
    for yx, value in bad_pixels.items():
        ins[yx] = value
    with pytest.raises(ValueError, match=message):
        prepare.ade20k_instances_from_annotation(ins, "img", source="bad.png")


def test_ade20k_instances_from_annotation():
    anns = prepare.ade20k_instances_from_annotation(_raw_instances(), "ADE_val_1", 10)
    assert [(a["id"], a["image_id"], a["category_id"], a["bbox"], a["area"]) for a in anns] == [
        (10, "ADE_val_1", 12, [1, 2, 2, 2], 4),
        (11, "ADE_val_1", 7, [2, 0, 1, 1], 1),
    ]
    person = np.zeros((4, 5), np.uint8)
    person[2:4, 1:3] = 1
    np.testing.assert_array_equal(mask_util.decode(anns[0]["segmentation"]), person)
    assert isinstance(anns[0]["segmentation"]["counts"], str)  # json-serialisable RLE


def _ade_raw_tree(root):
    _save(root / "images" / "ADE_val_1.jpg", np.zeros((4, 5, 3), np.uint8))
    _save(root / "annotations" / "ADE_val_1.png", RAW_SEM)
    _save(root / "annotations_instance" / "ADE_val_1.png", _raw_instances())


def test_prepare_ade20k_panoptic_files(tmp_path):
    _ade_raw_tree(tmp_path)
    n = prepare.prepare_ade20k_panoptic(
        tmp_path / "images",
        tmp_path / "annotations",
        tmp_path / "annotations_instance",
        tmp_path / "pan",
        tmp_path / "pan.json",
    )
    assert n == 1
    with open(tmp_path / "pan.json") as f:
        js = json.load(f)
    assert js["images"] == [
        {"id": "ADE_val_1", "file_name": "ADE_val_1.jpg", "width": 5, "height": 4}
    ]
    assert js["annotations"] == [
        {"image_id": "ADE_val_1", "file_name": "ADE_val_1.png", "segments_info": EXPECTED_SEGMENTS}
    ]
    assert len(js["categories"]) == 150
    assert js["categories"][12] == {
        "id": 12,
        "name": "person",
        "isthing": 1,
        "color": [150, 5, 61],
    }
    np.testing.assert_array_equal(
        _rgb2id(_load(tmp_path / "pan" / "ADE_val_1.png")), EXPECTED_PAN_IDS
    )


def test_prepare_ade20k_instance_files(tmp_path):
    _ade_raw_tree(tmp_path)
    n = prepare.prepare_ade20k_instance(
        tmp_path / "images", tmp_path / "annotations_instance", tmp_path / "ins.json"
    )
    assert n == 1
    with open(tmp_path / "ins.json") as f:
        js = json.load(f)
    assert [(a["id"], a["category_id"], a["area"]) for a in js["annotations"]] == [
        (1, 12, 4),
        (2, 7, 1),
    ]
    assert len(js["categories"]) == 100
    assert js["categories"][0] == {"id": 7, "name": "bed"}


def test_prepare_ade20k_panoptic_missing_instances(tmp_path):
    _save(tmp_path / "images" / "a.jpg", np.zeros((4, 5, 3), np.uint8))
    _save(tmp_path / "annotations" / "a.png", RAW_SEM)
    with pytest.raises(FileNotFoundError, match="annotations_instance"):
        prepare.prepare_ade20k_panoptic(
            tmp_path / "images",
            tmp_path / "annotations",
            tmp_path / "annotations_instance",
            tmp_path / "pan",
            tmp_path / "pan.json",
        )


# ------------------------------------------------------------------- semantic from panoptic
# Three segments: id 1 (cat 1), id 517 = 5 + 2 * 256 (cat 92), id 65539 = 3 + 65536 (cat 5);
# id 9 has no segment entry and id 0 is void, both -> 255.
PAN_IDS = np.array(
    [[1, 1, 517, 517, 0], [1, 1, 517, 517, 0], [65539] * 4 + [9], [65539] * 4 + [9]], np.int64
)
CATEGORIES = [{"id": 5}, {"id": 1}, {"id": 92}]  # contiguous: 5 -> 0, 1 -> 1, 92 -> 2
EXPECTED_SEM = np.array(
    [[1, 1, 2, 2, 255], [1, 1, 2, 2, 255], [0, 0, 0, 0, 255], [0, 0, 0, 0, 255]], np.uint8
)
SEGMENTS = [
    {"id": 1, "category_id": 1},
    {"id": 517, "category_id": 92},
    {"id": 65539, "category_id": 5},
]


def _panoptic_tree(tmp_path, n_images, segments=SEGMENTS):
    rgb = np.stack([PAN_IDS % 256, PAN_IDS // 256 % 256, PAN_IDS // 65536], -1).astype(np.uint8)
    anns = []
    for i in range(n_images):
        _save(tmp_path / "pan" / f"{i}.png", rgb)
        anns.append({"image_id": i, "file_name": f"{i}.png", "segments_info": segments})
    with open(tmp_path / "pan.json", "w") as f:
        json.dump({"annotations": anns}, f)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_semantic_from_panoptic(tmp_path, num_workers):
    _panoptic_tree(tmp_path, 3)
    n = prepare.semantic_from_panoptic(
        tmp_path / "pan.json", tmp_path / "pan", tmp_path / "sem", CATEGORIES, num_workers
    )
    assert n == 3
    for i in range(3):
        out = _load(tmp_path / "sem" / f"{i}.png")
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, EXPECTED_SEM)


def test_semantic_from_panoptic_unknown_category(tmp_path):
    _panoptic_tree(tmp_path, 1, SEGMENTS + [{"id": 9, "category_id": 77}])
    with pytest.raises(ValueError, match=r"category_id 77 in image 0 \(0\.png\) of .*pan\.json"):
        prepare.semantic_from_panoptic(
            tmp_path / "pan.json", tmp_path / "pan", tmp_path / "sem", CATEGORIES, 0
        )


def test_semantic_from_panoptic_missing_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing panoptic json"):
        prepare.semantic_from_panoptic(
            tmp_path / "x.json", tmp_path / "pan", tmp_path / "sem", CATEGORIES
        )
