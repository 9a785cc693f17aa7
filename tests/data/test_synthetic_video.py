"""Tests for the synthetic videos: DAVIS layout, determinism, persistent ids, occlusion,
registration round trip and the generator script.

Files are re-read with PIL and properties are recomputed here from the pixels.
"""

import filecmp
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from seg_zoo.data.datasets.synthetic_video import (
    SYNTHETIC_VIDEO_DIRNAME,
    generate_synthetic_video_dataset,
    register_all_synthetic_video,
)

ARGS = {"num_train": 3, "num_val": 2, "frames": 6, "size": (48, 64), "seed": 3}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic_video_root"))
    generate_synthetic_video_dataset(root, **ARGS)
    return root


def _ids(root, seq):
    d = os.path.join(root, SYNTHETIC_VIDEO_DIRNAME, "Annotations", "480p", seq)
    frames = []
    for f in sorted(os.listdir(d)):
        im = Image.open(os.path.join(d, f))
        assert im.mode == "P"
        frames.append(np.array(im))
    return np.stack(frames)


def _sequences(root, split):
    path = os.path.join(root, SYNTHETIC_VIDEO_DIRNAME, "ImageSets", "2017", f"{split}.txt")
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def test_layout(root):
    base = os.path.join(root, SYNTHETIC_VIDEO_DIRNAME)
    for split, n in (("train", ARGS["num_train"]), ("val", ARGS["num_val"])):
        seqs = _sequences(root, split)
        assert len(seqs) == n
        for seq in seqs:
            jpgs = sorted(os.listdir(os.path.join(base, "JPEGImages", "480p", seq)))
            pngs = sorted(os.listdir(os.path.join(base, "Annotations", "480p", seq)))
            assert jpgs == [f"{t:05d}.jpg" for t in range(ARGS["frames"])]
            assert pngs == [f"{t:05d}.png" for t in range(ARGS["frames"])]
            im = Image.open(os.path.join(base, "JPEGImages", "480p", seq, jpgs[0]))
            assert im.mode == "RGB" and im.size == (64, 48)


def test_deterministic_by_seed(root, tmp_path):
    again = str(tmp_path / "again")
    generate_synthetic_video_dataset(again, **ARGS)
    a, b = (os.path.join(r, SYNTHETIC_VIDEO_DIRNAME) for r in (root, again))
    for sub in ("JPEGImages/480p", "Annotations/480p"):
        for seq in _sequences(root, "train") + _sequences(root, "val"):
            cmp = filecmp.dircmp(os.path.join(a, sub, seq), os.path.join(b, sub, seq))
            assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
            _, mismatch, errors = filecmp.cmpfiles(
                os.path.join(a, sub, seq),
                os.path.join(b, sub, seq),
                cmp.common_files,
                shallow=False,
            )
            assert not mismatch and not errors
    other = str(tmp_path / "other")
    generate_synthetic_video_dataset(other, **{**ARGS, "seed": 4})
    assert not np.array_equal(_ids(root, "train-0000"), _ids(other, "train-0000"))


def _fully_visible(ids, k):
    """Whether object k touches neither another object nor the frame border in ``ids``."""
    m = ids == k
    if not m.any() or m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any():
        return False
    grown = m.copy()
    grown[1:] |= m[:-1]
    grown[:-1] |= m[1:]
    grown[:, 1:] |= m[:, :-1]
    grown[:, :-1] |= m[:, 1:]
    return not ((ids > 0) & (ids != k) & grown).any()


def test_ids_persistent(root):
    checked = 0
    for seq in _sequences(root, "train") + _sequences(root, "val"):
        ids = _ids(root, seq)
        first = set(np.unique(ids[0])) - {0}
        assert 2 <= len(first) <= 4
        # Every object is in the first frame; no id appears later that was not there.
        assert set(np.unique(ids)) - {0} == first
        for k in first:
            # Wherever the object is seen whole, it is the same rigid shape: its area is the
            # same up to rasterisation. A label that jumped to another object would change it.
            areas = [int((f == k).sum()) for f in ids if _fully_visible(f, k)]
            if len(areas) >= 2:
                checked += 1
                assert max(areas) <= 1.2 * min(areas), (seq, k, areas)
    assert checked >= 5


def test_occlusion_happens(root):
    # Two different objects touching (4-neighbours) means one is partly in front of the other.
    touching = 0
    for seq in _sequences(root, "train") + _sequences(root, "val"):
        ids = _ids(root, seq).astype(np.int64)
        for a, b in ((ids[:, :, :-1], ids[:, :, 1:]), (ids[:, :-1, :], ids[:, 1:, :])):
            touching += int(((a != b) & (a > 0) & (b > 0)).any())
    assert touching > 0


def test_registration_round_trip(root):
    register_all_synthetic_video(root)
    try:
        videos = DatasetCatalog.get("synthetic_video_train")
        assert [v["video_id"] for v in videos] == _sequences(root, "train")
        v = videos[0]
        assert (v["height"], v["width"], v["length"]) == (48, 64, ARGS["frames"])
        assert all(os.path.isfile(f) for f in v["file_names"] + v["annotation_file_names"])
        assert MetadataCatalog.get("synthetic_video_val").evaluator_type == "davis"
        # Pix2Seq-D gets no first-frame masks: its clips are scored as DAVIS's unsupervised task,
        # from the one annotation folder the generator writes.
        for split in ("train", "val"):
            meta = MetadataCatalog.get(f"synthetic_video_{split}")
            assert meta.davis_task == "unsupervised"
            assert meta.annotation_root == os.path.join(
                root, SYNTHETIC_VIDEO_DIRNAME, "Annotations", "480p"
            )
        assert all("Annotations_unsupervised" not in f for f in v["annotation_file_names"])
        register_all_synthetic_video(os.path.join(root, "missing"))
        with pytest.raises(FileNotFoundError, match=r"missing.*make_synthetic_video_dataset"):
            DatasetCatalog.get("synthetic_video_val")
    finally:
        register_all_synthetic_video()


def test_generator_script(tmp_path, capsys):
    import importlib.util

    path = os.path.join(
        os.path.dirname(__file__), "..", "..", "tools", "make_synthetic_video_dataset.py"
    )
    spec = importlib.util.spec_from_file_location("make_synthetic_video_dataset", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = str(tmp_path / "cli")
    args = [
        "--root",
        out,
        "--num-train",
        "1",
        "--num-val",
        "1",
        "--frames",
        "3",
        "--size",
        "32",
        "40",
    ]
    assert tool.main(args) == 0
    ids = _ids(out, "train-0000")
    assert ids.shape == (3, 32, 40)
    with pytest.raises(SystemExit):
        tool.main(["--root", out, "--frames", "1"])
    assert "frames" in capsys.readouterr().err
