"""Pascal Context 59 and 60: class tables, conversion of a hand-made release, registration,
configs.

Independent references: the 59 ids are checked against the id list of the Detail-API converter
that mmsegmentation and PyTorch-Encoding publish (written here unsorted, exactly as published:
its sorted rank is the label), and names against ov-seg's 459-name list at a few positions.
The expected PNG below is worked out by hand from those facts: aeroplane (id 2) -> 0,
bag (9) -> 1, person (284) -> 36, table (397) -> 49, wood (458) -> 58; 0, accordion (1),
unknown (431) and wool (459) are not among the 59 -> 255. The 60-class labels are those of
the Detail-API converter itself: an id's label is its rank in the sorted mapping (0 is background,
and everything outside the 59 classes is background there), so aeroplane -> 1, bag -> 2,
person -> 37, table -> 50, wood -> 59, the rest -> 0.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from seg_zoo.data import prepare
from seg_zoo.data.datasets import register_pascal_context
from seg_zoo.data.datasets._paths import get_datasets_root
from seg_zoo.data.datasets.categories.pascal_context import (
    PASCAL_CONTEXT_59_CATEGORIES,
    PASCAL_CONTEXT_60_CATEGORIES,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMES = ("pascal_context_59_sem_seg_train", "pascal_context_59_sem_seg_val")
NAMES_60 = ("pascal_context_60_sem_seg_train", "pascal_context_60_sem_seg_val")

# zhanghang1989/PyTorch-Encoding / mmsegmentation `_mapping` (0 = their background class).
DETAIL_API_MAPPING = [
    0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159, 416, 33,
    162, 420, 454, 295, 296, 427, 44, 45, 46, 308, 59, 440, 445, 31, 232, 65, 354, 424, 68,
    326, 72, 458, 34, 207, 80, 355, 85, 347, 220, 349, 360, 98, 187, 104, 105, 366, 189, 368,
    113, 115,
]  # fmt: skip

LABEL_459 = np.array(
    [
        [0, 2, 2, 9, 1],
        [284, 284, 397, 431, 458],
        [459, 2, 397, 458, 0],
        [9, 9, 284, 1, 431],
    ],
    dtype=np.uint16,
)
EXPECTED_59 = np.array(
    [
        [255, 0, 0, 1, 255],
        [36, 36, 49, 255, 58],
        [255, 0, 49, 58, 255],
        [1, 1, 36, 255, 255],
    ],
    dtype=np.uint8,
)
EXPECTED_60 = np.array(
    [
        [0, 1, 1, 2, 0],
        [37, 37, 50, 0, 59],
        [0, 1, 50, 59, 0],
        [2, 2, 37, 0, 0],
    ],
    dtype=np.uint8,
)


def _png(path):
    with Image.open(path) as im:
        return np.asarray(im)


def _make_release(root, ids_by_split, label=LABEL_459, labels_txt=None):
    """A miniature VOCdevkit/VOC2010 with one 4x5 image and .mat label per id."""
    voc = root / "VOCdevkit" / "VOC2010"
    for sub in ("JPEGImages", "trainval", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for split, ids in ids_by_split.items():
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(i + "\n" for i in ids))
        for i in ids:
            Image.new("RGB", (5, 4), (10, 20, 30)).save(voc / "JPEGImages" / f"{i}.jpg")
            scipy.io.savemat(voc / "trainval" / f"{i}.mat", {"LabelMap": label})
    if labels_txt is not None:
        (voc / "labels.txt").write_text(labels_txt)
    return voc


@pytest.fixture
def restore_registration():
    yield
    register_pascal_context.register_all_pascal_context(get_datasets_root())


# ----------------------------------------------------------------------------- class table
def test_class_table_matches_published_facts():
    assert len(PASCAL_CONTEXT_59_CATEGORIES) == 59
    ids = [c["id"] for c in PASCAL_CONTEXT_59_CATEGORIES]
    assert ids == sorted(DETAIL_API_MAPPING)[1:]
    names = [c["name"] for c in PASCAL_CONTEXT_59_CATEGORIES]
    assert len(set(names)) == 59
    spots = {0: ("aeroplane", 2), 1: ("bag", 9), 10: ("building", 44), 36: ("person", 284)}
    spots.update({46: ("sky", 360), 49: ("table", 397), 55: ("wall", 440), 58: ("wood", 458)})
    for label, (name, cid) in spots.items():
        assert PASCAL_CONTEXT_59_CATEGORIES[label] == {"id": cid, "name": name}


# ----------------------------------------------------------------------------- conversion
@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float64])
def test_label_map_by_hand(dtype):
    out = prepare.pascal_context_59_label_map(LABEL_459.astype(dtype))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, EXPECTED_59)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((2, 3, 1), np.uint16), r"2-D \(H, W\), got shape \(2, 3, 1\)"),
        (np.array([[1, 460]]), r"values 1..460, outside the 0..459"),
        (np.array([[-1, 2]]), r"values -1..2"),
        (np.array([[2.5, 2.0]]), "non-integer"),
        (np.array([["a"]]), "numeric, got dtype"),
        (np.zeros((0, 3), np.uint16), "empty"),
    ],
)
def test_label_map_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        prepare.pascal_context_59_label_map(bad, source="x.mat")


def test_60_class_labels_are_the_detail_api_converters():
    ranks = {cid: rank for rank, cid in enumerate(sorted(DETAIL_API_MAPPING))}
    for (r, c), cid in np.ndenumerate(LABEL_459):
        assert EXPECTED_60[r, c] == ranks.get(int(cid), 0)
    np.testing.assert_array_equal(prepare.pascal_context_60_label_map(EXPECTED_59), EXPECTED_60)
    assert len(PASCAL_CONTEXT_60_CATEGORIES) == 60
    assert PASCAL_CONTEXT_60_CATEGORIES[0]["name"] == "background"
    assert PASCAL_CONTEXT_60_CATEGORIES[1:] == PASCAL_CONTEXT_59_CATEGORIES
    with pytest.raises(ValueError, match="0..58 or 255, got 59"):
        prepare.pascal_context_60_label_map(np.array([[59]], np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        prepare.pascal_context_60_label_map(np.array([[1]], np.int64))


def test_prepare_writes_hand_computed_pngs(tmp_path):
    labels_txt = "".join(f"{c['id']}: {c['name']}\n" for c in PASCAL_CONTEXT_59_CATEGORIES)
    voc = _make_release(
        tmp_path,
        {"train": ["2008_000002"], "val": ["2008_000003", "2010_000001"]},
        labels_txt=labels_txt,
    )
    counts = prepare.prepare_pascal_context(voc)
    assert counts == {"train": 1, "val": 2}
    for split, name in [("train", "2008_000002"), ("val", "2008_000003"), ("val", "2010_000001")]:
        png = voc / "annotations_detectron2" / f"pc59_{split}" / f"{name}.png"
        np.testing.assert_array_equal(_png(png), EXPECTED_59)
        png = voc / "annotations_detectron2" / f"pc60_{split}" / f"{name}.png"
        np.testing.assert_array_equal(_png(png), EXPECTED_60)
    assert sorted(os.listdir(voc / "annotations_detectron2" / "pc59_train")) == ["2008_000002.png"]


def test_prepare_takes_another_split_list(tmp_path):
    voc = _make_release(tmp_path, {"val": ["a", "b"]})
    # The mmsegmentation list format: one id per line, here only "b".
    (voc / "ImageSets" / "SegmentationContext").mkdir(parents=True)
    (voc / "ImageSets" / "SegmentationContext" / "val.txt").write_text("b\n\n")
    counts = prepare.prepare_pascal_context(
        voc, splits=["val"], split_lists={"val": "ImageSets/SegmentationContext/val.txt"}
    )
    assert counts == {"val": 1}
    assert os.listdir(voc / "annotations_detectron2" / "pc59_val") == ["b.png"]


def test_prepare_rejects_a_differently_numbered_release(tmp_path):
    voc = _make_release(tmp_path, {"val": ["a"]}, labels_txt="1: accordion\n2: bag\n")
    with pytest.raises(ValueError, match=r"labels.txt: id 2 is 'bag'.*expects 'aeroplane'"):
        prepare.prepare_pascal_context(voc, splits=["val"])
    assert not (voc / "annotations_detectron2").exists()


def test_prepare_errors_name_the_file(tmp_path):
    voc = _make_release(tmp_path, {"val": ["a"]})
    with pytest.raises(ValueError, match="no image list for split 'test'"):
        prepare.prepare_pascal_context(voc, splits=["test"])
    os.remove(voc / "trainval" / "a.mat")
    with pytest.raises(FileNotFoundError, match=r"trainval/a.mat.*trainval.tar.gz"):
        prepare.prepare_pascal_context(voc, splits=["val"])
    scipy.io.savemat(voc / "trainval" / "a.mat", {"S": LABEL_459})
    with pytest.raises(ValueError, match=r"a.mat: no variable 'LabelMap' \(has \['S'\]\)"):
        prepare.prepare_pascal_context(voc, splits=["val"])
    scipy.io.savemat(voc / "trainval" / "a.mat", {"LabelMap": LABEL_459[:3]})
    with pytest.raises(ValueError, match=r"LabelMap is \(3, 5\) \(H, W\) but .*a.jpg is \(4, 5\)"):
        prepare.prepare_pascal_context(voc, splits=["val"])
    (voc / "trainval" / "a.mat").write_bytes(b"not a mat file")
    with pytest.raises(ValueError, match="a.mat: not a readable MATLAB file"):
        prepare.prepare_pascal_context(voc, splits=["val"])


def test_tool_converts_with_split_list_option(tmp_path):
    voc = _make_release(tmp_path, {"val": ["a"], "other": ["c"]})
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path))
    cmd = [sys.executable, "tools/prepare_pascal_context.py", "--splits", "val"]
    cmd += ["--split-list", "val=ImageSets/Main/other.txt"]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    np.testing.assert_array_equal(_png(voc / "annotations_detectron2/pc59_val/c.png"), EXPECTED_59)


# ----------------------------------------------------------------------------- registration
def test_registration_loads_prepared_data(tmp_path, restore_registration):
    voc = _make_release(tmp_path, {"train": ["t1"], "val": ["v1", "v2"]})
    # A JPEG without a label (another VOC image) must not join the split.
    Image.new("RGB", (5, 4)).save(voc / "JPEGImages" / "unlabelled.jpg")
    prepare.prepare_pascal_context(voc)
    register_pascal_context.register_all_pascal_context(str(tmp_path))
    train = DatasetCatalog.get("pascal_context_59_sem_seg_train")
    val = DatasetCatalog.get("pascal_context_59_sem_seg_val")
    assert [os.path.basename(d["file_name"]) for d in train] == ["t1.jpg"]
    assert [os.path.basename(d["file_name"]) for d in val] == ["v1.jpg", "v2.jpg"]
    np.testing.assert_array_equal(_png(val[1]["sem_seg_file_name"]), EXPECTED_59)
    for name in NAMES:
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255
        assert len(meta.stuff_classes) == 59 and meta.stuff_classes[36] == "person"
        assert meta.stuff_dataset_id_to_contiguous_id[397] == 49
        assert meta.image_root == str(voc / "JPEGImages")
    val_60 = DatasetCatalog.get("pascal_context_60_sem_seg_val")
    assert [os.path.basename(d["file_name"]) for d in val_60] == ["v1.jpg", "v2.jpg"]
    np.testing.assert_array_equal(_png(val_60[1]["sem_seg_file_name"]), EXPECTED_60)
    for name in NAMES_60:
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255
        assert len(meta.stuff_classes) == 60
        assert meta.stuff_classes[:2] == ["background", "aeroplane"]
        assert meta.stuff_classes[37] == "person"
        assert meta.stuff_dataset_id_to_contiguous_id[397] == 50
        split = name.rsplit("_", 1)[1]
        assert meta.sem_seg_root == str(voc / "annotations_detectron2" / f"pc60_{split}")


def test_missing_root_error_names_everything(tmp_path, restore_registration):
    missing = tmp_path / "nowhere"
    register_pascal_context.register_all_pascal_context(str(missing))
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get("pascal_context_59_sem_seg_val")
    msg = str(e.value)
    assert "'pascal_context_59_sem_seg_val'" in msg
    assert str(missing / "VOCdevkit" / "VOC2010" / "JPEGImages") in msg
    assert "DETECTRON2_DATASETS" in msg and "tools/prepare_pascal_context.py" in msg
    assert "itself does not exist" in msg


def test_unprepared_labels_error_names_the_script(tmp_path, restore_registration):
    _make_release(tmp_path, {"train": ["a"]})  # images present, nothing converted
    register_pascal_context.register_all_pascal_context(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"pc59_train.*tools/prepare_pascal_context.py"):
        DatasetCatalog.get("pascal_context_59_sem_seg_train")


# ----------------------------------------------------------------------------- configs
CONFIG_DIR = os.path.join(REPO, "configs", "pascal_context", "semantic-segmentation", "segmenter")


@pytest.mark.parametrize(
    "name, datasets, categories",
    [
        ("seg_large_mask.yaml", NAMES_60, PASCAL_CONTEXT_60_CATEGORIES),
        ("seg_large_mask_59.yaml", NAMES, PASCAL_CONTEXT_59_CATEGORIES),
    ],
)
def test_configs_merge_with_declared_keys(name, datasets, categories):
    from seg_zoo.config import load_config

    cfg = load_config(os.path.join(CONFIG_DIR, name))
    assert cfg.DATASETS.TRAIN + cfg.DATASETS.TEST == datasets
    assert set(cfg.DATASETS.TRAIN + cfg.DATASETS.TEST) <= set(DatasetCatalog.list())
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == len(categories)
    assert cfg.MODEL.SEGMENTER.WINDOW_SIZE == cfg.INPUT.CROP.SIZE[0] == 480
    assert (cfg.MODEL.VIT.EMBED_DIM, cfg.MODEL.VIT.DEPTH, cfg.MODEL.VIT.NUM_HEADS) == (1024, 24, 16)


def test_earlier_names_still_work(tmp_path):
    """A config on Base-PascalContext59-Segmenter.yaml is 59-class; prepare_pascal_context_59 (the
    earlier name) still prepares."""
    from seg_zoo.config import load_config

    variant = tmp_path / "mine.yaml"
    variant.write_text(
        f"_BASE_: {os.path.join(CONFIG_DIR, 'Base-PascalContext59-Segmenter.yaml')}\n"
        "MODEL:\n  VIT: {EMBED_DIM: 192, DEPTH: 12, NUM_HEADS: 3}\n"
    )
    cfg = load_config(str(variant))
    assert cfg.DATASETS.TRAIN + cfg.DATASETS.TEST == NAMES
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 59
    assert prepare.prepare_pascal_context_59 is prepare.prepare_pascal_context
