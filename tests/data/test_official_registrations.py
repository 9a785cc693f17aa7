"""Official dataset registrations on tiny trees laid out like the real releases."""

import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from seg_zoo.data.datasets import (
    register_ade20k_full,
    register_ade20k_instance,
    register_ade20k_panoptic,
    register_ade20k_semantic,
    register_coco_stuff_10k,
    register_mapillary_vistas,
    register_mapillary_vistas_panoptic,
)
from seg_zoo.data.datasets._paths import get_datasets_root

REGISTER_ALL = [
    register_ade20k_semantic.register_all_ade20k_semantic,
    register_ade20k_full.register_all_ade20k_full,
    register_ade20k_panoptic.register_all_ade20k_panoptic,
    register_ade20k_instance.register_all_ade20k_instance,
    register_mapillary_vistas.register_all_mapillary_vistas,
    register_mapillary_vistas_panoptic.register_all_mapillary_vistas_panoptic,
    register_coco_stuff_10k.register_all_coco_stuff_10k,
]

# name -> (evaluator_type, ignore_label, #stuff_classes, #thing_classes or None, derived-file
# script named when the data is missing, or None for raw release files)
OFFICIAL = {
    "ade20k_sem_seg_train": ("sem_seg", 255, 150, None, "tools/prepare_ade20k_sem_seg.py"),
    "ade20k_sem_seg_val": ("sem_seg", 255, 150, None, "tools/prepare_ade20k_sem_seg.py"),
    "ade20k_full_sem_seg_train": ("sem_seg", 65535, 847, None, "prepare_ade20k_full_sem_seg"),
    "ade20k_full_sem_seg_val": ("sem_seg", 65535, 847, None, "prepare_ade20k_full_sem_seg"),
    "ade20k_panoptic_train": ("ade20k_panoptic_seg", 255, 150, 100, "prepare_ade20k_pan_seg"),
    "ade20k_panoptic_val": ("ade20k_panoptic_seg", 255, 150, 100, "prepare_ade20k_pan_seg"),
    "ade20k_instance_train": ("coco", None, None, 100, "prepare_ade20k_ins_seg"),
    "ade20k_instance_val": ("coco", None, None, 100, "prepare_ade20k_ins_seg"),
    "mapillary_vistas_sem_seg_train": ("sem_seg", 65, 65, None, None),
    "mapillary_vistas_sem_seg_val": ("sem_seg", 65, 65, None, None),
    "mapillary_vistas_panoptic_train": ("mapillary_vistas_panoptic_seg", 65, 65, 65, None),
    "mapillary_vistas_panoptic_val": ("mapillary_vistas_panoptic_seg", 65, 65, 65, None),
    "coco_2017_train_stuff_10k_sem_seg": ("sem_seg", 255, 171, None, "coco_stuff_10k"),
    "coco_2017_test_stuff_10k_sem_seg": ("sem_seg", 255, 171, None, "coco_stuff_10k"),
}


@pytest.fixture
def register_at():
    """Re-point every registration at a test root; restore the default root afterwards."""

    def _register(root):
        for register_all in REGISTER_ALL:
            register_all(str(root))

    yield _register
    _register(get_datasets_root())


def _touch_image(path, shape=(4, 5, 3), dtype=np.uint8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros(shape, dtype)).save(path)


def _write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_metadata_is_official(register_at, tmp_path, name):
    register_at(tmp_path)
    evaluator_type, ignore, n_stuff, n_thing, _ = OFFICIAL[name]
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == evaluator_type
    assert meta.get("ignore_label") == ignore
    assert len(meta.get("stuff_classes", [])) == (n_stuff or 0)
    assert len(meta.get("thing_classes", [])) == (n_thing or 0)
    assert meta.image_root.startswith(str(tmp_path))


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_missing_root_names_path_env_and_script(register_at, tmp_path, name):
    root = tmp_path / "no_datasets_here"
    register_at(root)
    with pytest.raises(FileNotFoundError) as info:
        DatasetCatalog.get(name)
    msg = str(info.value)
    assert name in msg and str(root) in msg and "DETECTRON2_DATASETS" in msg
    script = OFFICIAL[name][4]
    if script is not None and "images_detectron2" in msg:  # ADE20K-full: images are derived too
        assert script in msg


@pytest.mark.parametrize("name", sorted(n for n in OFFICIAL if OFFICIAL[n][4] is not None))
def test_missing_derived_file_names_its_script(register_at, tmp_path, name):
    # Raw images are present; what is missing is what a prepare script writes.
    register_at(tmp_path)
    _touch_image(tmp_path / MetadataCatalog.get(name).image_root / "a.jpg")
    with pytest.raises(FileNotFoundError) as info:
        DatasetCatalog.get(name)
    assert OFFICIAL[name][4] in str(info.value) and name in str(info.value)


def test_reregistering_replaces(register_at, tmp_path):
    register_at(tmp_path / "a")
    register_at(tmp_path / "b")
    assert MetadataCatalog.get("ade20k_sem_seg_val").image_root == str(
        tmp_path / "b" / "ADEChallengeData2016" / "images" / "validation"
    )


@pytest.mark.parametrize(
    "name, image_rel, gt_rel, gt_ext, gt_dtype",
    [
        (
            "ade20k_sem_seg_train",
            "ADEChallengeData2016/images/training",
            "ADEChallengeData2016/annotations_detectron2/training",
            "png",
            np.uint8,
        ),
        (
            "ade20k_full_sem_seg_val",
            "ADE20K_2021_17_01/images_detectron2/validation",
            "ADE20K_2021_17_01/annotations_detectron2/validation",
            "tif",
            np.uint16,
        ),
        (
            "mapillary_vistas_sem_seg_val",
            "mapillary_vistas/validation/images",
            "mapillary_vistas/validation/labels",
            "png",
            np.uint8,
        ),
        (
            "coco_2017_test_stuff_10k_sem_seg",
            "coco/coco_stuff_10k/images_detectron2/test",
            "coco/coco_stuff_10k/annotations_detectron2/test",
            "png",
            np.uint8,
        ),
    ],
)
def test_semantic_dicts(register_at, tmp_path, name, image_rel, gt_rel, gt_ext, gt_dtype):
    for stem in ("b", "a"):
        _touch_image(tmp_path / image_rel / f"{stem}.jpg")
        _touch_image(tmp_path / gt_rel / f"{stem}.{gt_ext}", shape=(4, 5), dtype=gt_dtype)
    register_at(tmp_path)
    assert DatasetCatalog.get(name) == [
        {
            "file_name": os.path.join(tmp_path, image_rel, f"{s}.jpg"),
            "sem_seg_file_name": os.path.join(tmp_path, gt_rel, f"{s}.{gt_ext}"),
        }
        for s in ("a", "b")
    ]


def test_semantic_empty_label_folder(register_at, tmp_path):
    _touch_image(tmp_path / "ADEChallengeData2016/images/training/a.jpg")
    (tmp_path / "ADEChallengeData2016/annotations_detectron2/training").mkdir(parents=True)
    register_at(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no \*\.png label files.*prepare_ade20k_sem_seg"):
        DatasetCatalog.get("ade20k_sem_seg_train")


def test_ade20k_semantic_metadata_values(register_at, tmp_path):
    register_at(tmp_path)
    meta = MetadataCatalog.get("ade20k_sem_seg_val")
    assert meta.stuff_classes[0] == "wall" and meta.stuff_colors[0] == [120, 120, 120]
    assert meta.sem_seg_root == str(
        tmp_path / "ADEChallengeData2016" / "annotations_detectron2" / "validation"
    )
    coco = MetadataCatalog.get("coco_2017_train_stuff_10k_sem_seg")
    assert coco.stuff_dataset_id_to_contiguous_id[1] == 0
    assert coco.stuff_dataset_id_to_contiguous_id[92] == 80
    assert coco.stuff_dataset_id_to_contiguous_id[182] == 170
    assert MetadataCatalog.get("mapillary_vistas_sem_seg_train").stuff_classes[0] == "Bird"


# ------------------------------------------------------------------------------ panoptic
def _ade_panoptic_tree(root, segments):
    base = root / "ADEChallengeData2016"
    _touch_image(base / "images/validation/ADE_val_1.jpg")
    _touch_image(base / "ade20k_panoptic_val/ADE_val_1.png")
    _touch_image(base / "annotations_detectron2/validation/ADE_val_1.png", shape=(4, 5))
    _write_json(
        base / "ade20k_panoptic_val.json",
        {
            "annotations": [
                {"image_id": "ADE_val_1", "file_name": "ADE_val_1.png", "segments_info": segments}
            ]
        },
    )
    return base


def test_ade20k_panoptic_dicts(register_at, tmp_path):
    segments = [
        {"id": 1, "category_id": 0, "area": 7, "bbox": [0, 0, 3, 4], "iscrowd": 0},
        {"id": 3, "category_id": 12, "area": 4, "bbox": [1, 2, 2, 2], "iscrowd": 0},
    ]
    base = _ade_panoptic_tree(tmp_path, segments)
    register_at(tmp_path)
    (record,) = DatasetCatalog.get("ade20k_panoptic_val")
    assert record["file_name"] == str(base / "images/validation/ADE_val_1.jpg")
    assert record["pan_seg_file_name"] == str(base / "ade20k_panoptic_val/ADE_val_1.png")
    assert record["sem_seg_file_name"] == str(
        base / "annotations_detectron2/validation/ADE_val_1.png"
    )
    assert record["image_id"] == "ADE_val_1"
    # ADE20K's panoptic category ids already are the 150-class labels.
    assert [(s["id"], s["category_id"], s["isthing"]) for s in record["segments_info"]] == [
        (1, 0, False),
        (3, 12, True),
    ]
    meta = MetadataCatalog.get("ade20k_panoptic_val")
    assert meta.panoptic_root == str(base / "ade20k_panoptic_val")
    assert meta.panoptic_json == str(base / "ade20k_panoptic_val.json")
    assert meta.json_file == str(base / "ade20k_instance_val.json")
    assert meta.label_divisor == 1000
    assert meta.thing_classes[0] == "bed" and meta.thing_dataset_id_to_contiguous_id[7] == 7
    assert len(meta.stuff_dataset_id_to_contiguous_id) == 150


def test_ade20k_panoptic_unknown_category(register_at, tmp_path):
    _ade_panoptic_tree(tmp_path, [{"id": 1, "category_id": 150, "area": 1, "bbox": [0, 0, 1, 1]}])
    register_at(tmp_path)
    with pytest.raises(ValueError, match=r"ADE_val_1.*unknown category_id 150.*panoptic_val\.json"):
        DatasetCatalog.get("ade20k_panoptic_val")


def test_ade20k_panoptic_missing_json_names_script(register_at, tmp_path):
    base = _ade_panoptic_tree(tmp_path, [])
    (base / "ade20k_panoptic_val.json").unlink()
    register_at(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"ade20k_panoptic_val\.json.*prepare_ade20k_pan"):
        DatasetCatalog.get("ade20k_panoptic_val")


def test_mapillary_panoptic_dicts(register_at, tmp_path):
    base = tmp_path / "mapillary_vistas" / "training"
    _touch_image(base / "images/x.jpg")
    _touch_image(base / "panoptic/x.png")
    _touch_image(base / "labels/x.png", shape=(4, 5))
    segments = [{"id": 5, "category_id": 20}, {"id": 6, "category_id": 3}]
    _write_json(
        base / "panoptic/panoptic_2018.json",
        {"annotations": [{"image_id": "x", "file_name": "x.png", "segments_info": segments}]},
    )
    register_at(tmp_path)
    (record,) = DatasetCatalog.get("mapillary_vistas_panoptic_train")
    assert record["sem_seg_file_name"] == str(base / "labels/x.png")
    # Person (id 20) is a thing, Curb (id 3) is stuff; labels are id - 1.
    assert [(s["category_id"], s["isthing"]) for s in record["segments_info"]] == [
        (19, True),
        (2, False),
    ]
    meta = MetadataCatalog.get("mapillary_vistas_panoptic_train")
    assert meta.json_file is None and meta.label_divisor == 1000
    assert len(meta.thing_dataset_id_to_contiguous_id) == 37


# ------------------------------------------------------------------------------ instance
def _ade_instance_tree(root, category_id):
    base = root / "ADEChallengeData2016"
    _touch_image(base / "images/training/ADE_train_1.jpg")
    rle = {"size": [4, 5], "counts": "4;0"}  # not decoded by the loader
    _write_json(
        base / "ade20k_instance_train.json",
        {
            "images": [
                {"id": "ADE_train_1", "file_name": "ADE_train_1.jpg", "width": 5, "height": 4}
            ],
            "annotations": [
                {
                    "id": 1,
                    "image_id": "ADE_train_1",
                    "category_id": category_id,
                    "iscrowd": 0,
                    "bbox": [1, 2, 2, 2],
                    "area": 4,
                    "segmentation": rle,
                }
            ],
            "categories": [{"id": 7, "name": "bed"}, {"id": 12, "name": "person"}],
        },
    )
    return base


def test_ade20k_instance_dicts(register_at, tmp_path):
    base = _ade_instance_tree(tmp_path, 12)
    register_at(tmp_path)
    (record,) = DatasetCatalog.get("ade20k_instance_train")
    assert record["file_name"] == str(base / "images/training/ADE_train_1.jpg")
    assert (record["height"], record["width"]) == (4, 5)
    (obj,) = record["annotations"]
    # person (150-class label 12) is the 4th instance class: bed 7, windowpane 8, cabinet 10.
    assert obj["category_id"] == 3 and obj["bbox"] == [1, 2, 2, 2]
    meta = MetadataCatalog.get("ade20k_instance_train")
    assert meta.json_file == str(base / "ade20k_instance_train.json")
    assert meta.thing_classes[3] == "person"


def test_ade20k_instance_unknown_category(register_at, tmp_path):
    _ade_instance_tree(tmp_path, 0)  # wall is not an instance class
    register_at(tmp_path)
    with pytest.raises(ValueError, match=r"ADE_train_1.*unknown category_id 0.*instance_train"):
        DatasetCatalog.get("ade20k_instance_train")


# ------------------------------------------------------------- prepare -> registration
def test_prepared_ade20k_tree_loads_through_all_three_registrations(register_at, tmp_path):
    from seg_zoo.data import prepare

    base = tmp_path / "ADEChallengeData2016"
    sem = np.array([[1, 1, 3], [13, 13, 0]], np.uint8)  # wall, sky, person, unlabeled
    ins = np.zeros((2, 3, 3), np.uint8)
    ins[1, :2] = (4, 1, 0)  # one person instance
    _touch_image(base / "images/validation/ADE_val_7.jpg", shape=(2, 3, 3))
    Image.fromarray(sem).save(_mkparent(base / "annotations/validation/ADE_val_7.png"))
    Image.fromarray(ins).save(_mkparent(base / "annotations_instance/validation/ADE_val_7.png"))
    prepare.prepare_ade20k_sem_seg(
        base / "annotations/validation", base / "annotations_detectron2/validation"
    )
    prepare.prepare_ade20k_panoptic(
        base / "images/validation",
        base / "annotations/validation",
        base / "annotations_instance/validation",
        base / "ade20k_panoptic_val",
        base / "ade20k_panoptic_val.json",
    )
    prepare.prepare_ade20k_instance(
        base / "images/validation",
        base / "annotations_instance/validation",
        base / "ade20k_instance_val.json",
    )
    register_at(tmp_path)
    assert len(DatasetCatalog.get("ade20k_sem_seg_val")) == 1
    (pan,) = DatasetCatalog.get("ade20k_panoptic_val")
    assert [(s["category_id"], s["isthing"]) for s in pan["segments_info"]] == [
        (0, False),
        (2, False),
        (12, True),
    ]
    (inst,) = DatasetCatalog.get("ade20k_instance_val")
    assert [a["category_id"] for a in inst["annotations"]] == [3]  # person, contiguous


def _mkparent(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize(
    "train, val, key",
    [
        ("ade20k_sem_seg_train", "ade20k_sem_seg_val", "stuff_colors"),
        ("ade20k_full_sem_seg_train", "ade20k_full_sem_seg_val", "stuff_classes"),
        ("coco_2017_train_stuff_10k_sem_seg", "coco_2017_test_stuff_10k_sem_seg", "stuff_classes"),
        ("ade20k_panoptic_train", "ade20k_panoptic_val", "thing_classes"),
        ("mapillary_vistas_panoptic_train", "mapillary_vistas_panoptic_val", "stuff_colors"),
    ],
)
def test_splits_do_not_share_metadata_objects(register_at, tmp_path, train, val, key):
    # Code that edits one split's class list (e.g. a visualiser recolouring) must not change
    # the other split's: each registration gets its own copy of the shared tables.
    register_at(tmp_path)
    a, b = getattr(MetadataCatalog.get(train), key), getattr(MetadataCatalog.get(val), key)
    assert a == b and a is not b
    if isinstance(a[0], list):
        assert a[0] is not b[0]
