"""Tests for COCO panoptic + semantic registration (Mask2Former's names and metadata)."""

import json
import os
import shutil

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import seg_zoo.data  # noqa: F401  (registers the datasets)
from seg_zoo.data.datasets.register_coco_panoptic_annos_semseg import (
    load_coco_panoptic_json,
    register_all_coco_panoptic_annos_sem_seg,
    register_coco_panoptic_annos_sem_seg,
)
from seg_zoo.data.datasets.synthetic import SYNTHETIC_CATEGORIES, generate_synthetic_dataset


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_with_sem_seg_metadata(split):
    meta = MetadataCatalog.get(f"coco_2017_{split}_panoptic_with_sem_seg")
    assert meta.evaluator_type == "coco_panoptic_seg"
    assert meta.ignore_label == 255 and meta.label_divisor == 1000
    assert len(meta.stuff_classes) == 133 and len(meta.thing_classes) == 80
    # Known COCO facts: person (id 1) first, toothbrush (id 90) the last thing, banner (id 92)
    # the first stuff class, rug-merged (id 200) the last; one index over all 133 categories.
    assert meta.thing_dataset_id_to_contiguous_id[1] == 0
    assert meta.thing_dataset_id_to_contiguous_id[90] == 79
    assert 92 not in meta.thing_dataset_id_to_contiguous_id
    assert meta.stuff_dataset_id_to_contiguous_id[1] == 0
    assert meta.stuff_dataset_id_to_contiguous_id[92] == 80
    assert meta.stuff_dataset_id_to_contiguous_id[200] == 132
    assert meta.stuff_classes[80] == "banner" and meta.thing_classes[79] == "toothbrush"
    root = os.getenv("DETECTRON2_DATASETS", "datasets")
    assert meta.panoptic_root == os.path.join(root, f"coco/panoptic_{split}2017")
    assert meta.panoptic_json == os.path.join(root, f"coco/annotations/panoptic_{split}2017.json")
    assert meta.sem_seg_root == os.path.join(root, f"coco/panoptic_semseg_{split}2017")
    assert meta.image_root == os.path.join(root, f"coco/{split}2017")
    assert meta.json_file == os.path.join(root, f"coco/annotations/instances_{split}2017.json")


def test_detectron2_builtin_panoptic_registrations_survive():
    names = DatasetCatalog.list()
    for name in (
        "coco_2017_val_panoptic",
        "coco_2017_val_panoptic_separated",
        "coco_2017_val_panoptic_stuffonly",
    ):
        assert name in names
    meta = MetadataCatalog.get("coco_2017_val_panoptic")
    assert meta.evaluator_type == "coco_panoptic_seg"
    assert len(meta.thing_classes) == 80 and meta.thing_classes[0] == "person"
    assert meta.panoptic_json.endswith("coco/annotations/panoptic_val2017.json")
    # The separated variant keeps detectron2's own (stuff-only) convention.
    sep = MetadataCatalog.get("coco_2017_val_panoptic_separated")
    assert len(sep.stuff_classes) == 54


def test_missing_coco_root_names_path(tmp_path):
    root = str(tmp_path / "no_datasets_here")
    register_all_coco_panoptic_annos_sem_seg(root)
    try:
        with pytest.raises(FileNotFoundError) as err:
            DatasetCatalog.get("coco_2017_val_panoptic_with_sem_seg")
        msg = str(err.value)
        assert "coco_2017_val_panoptic_with_sem_seg" in msg
        assert os.path.join(root, "coco/annotations/panoptic_val2017.json") in msg
        assert "DETECTRON2_DATASETS" in msg
    finally:
        register_all_coco_panoptic_annos_sem_seg()
    # Re-registering with the default root replaced, not duplicated, the entry.
    meta = MetadataCatalog.get("coco_2017_val_panoptic_with_sem_seg")
    assert not meta.panoptic_root.startswith(root)


@pytest.fixture(scope="module")
def coco_like(tmp_path_factory):
    """A COCO-layout tree (val2017, panoptic_val2017, ...) built from a tiny synthetic set."""
    tmp = tmp_path_factory.mktemp("coco_like")
    src = generate_synthetic_dataset(str(tmp / "src"), num_train=1, num_val=2, seed=5)
    coco = tmp / "coco"
    shutil.copytree(os.path.join(src, "images", "val"), coco / "val2017")
    shutil.copytree(os.path.join(src, "panoptic_val"), coco / "panoptic_val2017")
    shutil.copytree(os.path.join(src, "panoptic_semseg_val"), coco / "panoptic_semseg_val2017")
    (coco / "annotations").mkdir()
    for kind in ("panoptic", "instances"):
        shutil.copy(
            os.path.join(src, "annotations", f"{kind}_val.json"),
            coco / "annotations" / f"{kind}_val2017.json",
        )
    return coco


def _register_generic(coco, name="h1_test_panoptic"):
    meta = {
        "thing_classes": ["circle", "square", "triangle", "cross"],
        "thing_colors": [[1, 1, 1]] * 4,
        "stuff_classes": [c["name"] for c in SYNTHETIC_CATEGORIES],
        "stuff_colors": [[2, 2, 2]] * 7,
        # Hand-written on purpose (not computed by the code under test).
        "thing_dataset_id_to_contiguous_id": {1: 0, 2: 1, 4: 2, 7: 3},
        "stuff_dataset_id_to_contiguous_id": {1: 0, 2: 1, 4: 2, 7: 3, 10: 4, 11: 5, 12: 6},
    }
    register_coco_panoptic_annos_sem_seg(
        name,
        meta,
        str(coco / "val2017"),
        str(coco / "panoptic_val2017"),
        str(coco / "annotations" / "panoptic_val2017.json"),
        str(coco / "panoptic_semseg_val2017"),
        str(coco / "annotations" / "instances_val2017.json"),
    )
    return name + "_with_sem_seg"


def test_generic_registration_loads_official_dict_format(coco_like):
    name = _register_generic(coco_like)
    # Registering twice replaces rather than raising "already registered".
    name = _register_generic(coco_like)
    dicts = DatasetCatalog.get(name)
    raw = json.loads((coco_like / "annotations" / "panoptic_val2017.json").read_text())
    assert len(dicts) == len(raw["annotations"]) == 2
    for dic, ann in zip(dicts, raw["annotations"]):
        assert set(dic) == {
            "file_name",
            "image_id",
            "pan_seg_file_name",
            "sem_seg_file_name",
            "segments_info",
        }
        stem = ann["file_name"][:-4]
        assert dic["file_name"] == str(coco_like / "val2017" / (stem + ".jpg"))
        assert dic["pan_seg_file_name"] == str(coco_like / "panoptic_val2017" / ann["file_name"])
        assert dic["sem_seg_file_name"] == str(
            coco_like / "panoptic_semseg_val2017" / ann["file_name"]
        )
        for seg, seg_raw in zip(dic["segments_info"], ann["segments_info"]):
            expected = {1: 0, 2: 1, 4: 2, 7: 3, 10: 4, 11: 5, 12: 6}[seg_raw["category_id"]]
            assert seg["category_id"] == expected
            assert seg["isthing"] == (seg_raw["category_id"] < 10)
    meta = MetadataCatalog.get(name)
    assert meta.json_file.endswith("instances_val2017.json")
    assert meta.sem_seg_root == str(coco_like / "panoptic_semseg_val2017")
    assert MetadataCatalog.get("h1_test_panoptic").thing_classes[0] == "circle"


def test_generic_loader_errors(coco_like, tmp_path):
    raw = json.loads((coco_like / "annotations" / "panoptic_val2017.json").read_text())
    raw["annotations"][0]["segments_info"][-1]["category_id"] = 3
    bad_json = tmp_path / "bad.json"
    bad_json.write_text(json.dumps(raw))
    meta = {"thing_dataset_id_to_contiguous_id": {1: 0}, "stuff_dataset_id_to_contiguous_id": {}}
    meta["thing_dataset_id_to_contiguous_id"] = {1: 0, 2: 1, 4: 2, 7: 3}
    meta["stuff_dataset_id_to_contiguous_id"] = {1: 0, 2: 1, 4: 2, 7: 3, 10: 4, 11: 5, 12: 6}
    args = (str(coco_like / "val2017"), str(coco_like / "panoptic_val2017"), None, meta)
    with pytest.raises(ValueError) as err:
        load_coco_panoptic_json(str(bad_json), *args, dataset_name="bad_ds")
    msg = str(err.value)
    assert "category_id 3" in msg and str(bad_json) in msg
    assert raw["annotations"][0]["file_name"] in msg and "bad_ds" in msg

    with pytest.raises(FileNotFoundError, match="panoptic json"):
        load_coco_panoptic_json(str(tmp_path / "absent.json"), *args)
