"""Tests for the DAVIS-2017 registration: layout, per-video dicts, annotation reading, errors.

A two-sequence DAVIS tree is written here with PIL, independently of the synthetic generator.
"""

import os
import re

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from seg_zoo.data.datasets.register_davis import (
    davis_palette,
    read_davis_annotation,
    register_all_davis,
)

SEQS = {"train": {"bear": 3, "boat": 2}, "val": {"cows": 4}}
H, W = 12, 20


def _write_tree(root):
    davis = os.path.join(root, "DAVIS")
    for split, seqs in SEQS.items():
        os.makedirs(os.path.join(davis, "ImageSets", "2017"), exist_ok=True)
        with open(os.path.join(davis, "ImageSets", "2017", f"{split}.txt"), "w") as f:
            f.write("\n".join(seqs) + "\n")
        for seq, n in seqs.items():
            img_dir = os.path.join(davis, "JPEGImages", "480p", seq)
            ann_dir = os.path.join(davis, "Annotations", "480p", seq)
            os.makedirs(img_dir)
            os.makedirs(ann_dir)
            for t in range(n):
                Image.fromarray(np.full((H, W, 3), 10 * t, np.uint8)).save(
                    os.path.join(img_dir, f"{t:05d}.jpg")
                )
                ids = np.zeros((H, W), np.uint8)
                ids[2:6, t : t + 4] = 1
                ids[7:10, 10:15] = 2
                ids[0, :] = 255  # void
                im = Image.fromarray(ids)
                im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (253 * 3))
                im.save(os.path.join(ann_dir, f"{t:05d}.png"))
                # The unsupervised annotation is a different labelling of the same frames:
                # here one object (id 1) covering both semi-supervised objects.
                unsup_dir = os.path.join(davis, "Annotations_unsupervised", "480p", seq)
                os.makedirs(unsup_dir, exist_ok=True)
                Image.fromarray(np.where(ids == 2, 1, ids).astype(np.uint8)).save(
                    os.path.join(unsup_dir, f"{t:05d}.png")
                )
    return davis


@pytest.fixture()
def davis_root(tmp_path):
    root = str(tmp_path)
    davis = _write_tree(root)
    register_all_davis(root)
    yield root, davis
    register_all_davis()  # back to $DETECTRON2_DATASETS, as after `import seg_zoo`


def test_registration_round_trip(davis_root):
    root, davis = davis_root
    for name, split in (("davis_2017_train", "train"), ("davis_2017_val", "val")):
        videos = DatasetCatalog.get(name)
        assert [v["video_id"] for v in videos] == list(SEQS[split])
        for v in videos:
            n = SEQS[split][v["video_id"]]
            assert v["length"] == n == len(v["file_names"]) == len(v["annotation_file_names"])
            assert (v["height"], v["width"]) == (H, W)
            assert v["file_names"] == [
                os.path.join(davis, "JPEGImages", "480p", v["video_id"], f"{t:05d}.jpg")
                for t in range(n)
            ]
            assert v["annotation_file_names"] == [
                os.path.join(davis, "Annotations", "480p", v["video_id"], f"{t:05d}.png")
                for t in range(n)
            ]
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == ["object"]
        assert meta.evaluator_type == "davis"
        assert meta.ignore_label == 255


def test_read_annotation_ids_and_errors(davis_root, tmp_path):
    _, davis = davis_root
    path = os.path.join(davis, "Annotations", "480p", "bear", "00001.png")
    ids = read_davis_annotation(path)
    assert ids.dtype == np.uint8 and ids.shape == (H, W)
    assert ids[3, 2] == 1 and ids[8, 12] == 2 and (ids[0] == 255).all() and ids[11, 0] == 0
    with pytest.raises(ValueError, match="size"):
        read_davis_annotation(path, expected_hw=(H + 1, W))
    rgb = str(tmp_path / "rgb.png")
    Image.open(path).convert("RGB").save(rgb)
    with pytest.raises(ValueError, match="rgb.png.*mode 'RGB'"):
        read_davis_annotation(rgb)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_davis_annotation(str(tmp_path / "nope.png"))


def test_missing_files_are_named(davis_root):
    root, davis = davis_root
    missing = os.path.join(davis, "Annotations", "480p", "boat", "00001.png")
    os.remove(missing)
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        DatasetCatalog.get("davis_2017_train")
    register_all_davis(os.path.join(root, "elsewhere"))
    with pytest.raises(FileNotFoundError, match=r"elsewhere.*DETECTRON2_DATASETS"):
        DatasetCatalog.get("davis_2017_val")


def test_palette_is_pascal_voc():
    # DAVIS's first colours: black, dark red, dark green, olive, navy, purple (PASCAL VOC).
    pal = np.array(davis_palette()).reshape(256, 3)
    assert pal[:6].tolist() == [
        [0, 0, 0],
        [128, 0, 0],
        [0, 128, 0],
        [128, 128, 0],
        [0, 0, 128],
        [128, 0, 128],
    ]
    assert pal[255].tolist() == [224, 224, 192]  # the void colour


def test_unsupervised_registration_round_trip(davis_root):
    root, davis = davis_root
    for name, split in (
        ("davis_2017_unsupervised_train", "train"),
        ("davis_2017_unsupervised_val", "val"),
    ):
        videos = DatasetCatalog.get(name)
        assert [v["video_id"] for v in videos] == list(SEQS[split])
        for v in videos:
            n = SEQS[split][v["video_id"]]
            assert v["length"] == n and (v["height"], v["width"]) == (H, W)
            # Same frames as the semi-supervised split, annotations from the unsupervised tree.
            assert v["file_names"] == [
                os.path.join(davis, "JPEGImages", "480p", v["video_id"], f"{t:05d}.jpg")
                for t in range(n)
            ]
            assert v["annotation_file_names"] == [
                os.path.join(
                    davis, "Annotations_unsupervised", "480p", v["video_id"], f"{t:05d}.png"
                )
                for t in range(n)
            ]
            ids = read_davis_annotation(v["annotation_file_names"][0])
            assert set(np.unique(ids)) == {0, 1, 255}  # the unsupervised labelling, not 1 and 2
        meta = MetadataCatalog.get(name)
        assert meta.davis_task == "unsupervised"
        assert meta.evaluator_type == "davis"
        assert meta.annotation_root == os.path.join(davis, "Annotations_unsupervised", "480p")
    for name in ("davis_2017_train", "davis_2017_val"):
        assert MetadataCatalog.get(name).davis_task == "semi-supervised"
        assert MetadataCatalog.get(name).annotation_root == os.path.join(
            davis, "Annotations", "480p"
        )


def test_unsupervised_missing_annotations_are_named(davis_root):
    import shutil

    _, davis = davis_root
    shutil.rmtree(os.path.join(davis, "Annotations_unsupervised"))
    missing = os.path.join(davis, "Annotations_unsupervised", "480p")
    with pytest.raises(FileNotFoundError, match=re.escape(missing) + ".*Unsupervised"):
        DatasetCatalog.get("davis_2017_unsupervised_val")
    # The semi-supervised splits do not need that folder.
    assert len(DatasetCatalog.get("davis_2017_val")) == len(SEQS["val"])


def test_unknown_task_is_refused(tmp_path):
    from seg_zoo.data.datasets.register_davis import register_davis_videos

    with pytest.raises(ValueError, match="davis_task.*'weakly'"):
        register_davis_videos(
            "_test_davis_bad_task", str(tmp_path), "val", root=str(tmp_path), davis_task="weakly"
        )
