"""COCO-Stuff-10k preparation on a hand-made two-image release, against labels worked out by hand.

The expected labels come from the class lists, not from the code under test: in the 171-class
list (COCO ids sorted, the 11 unannotated thing ids left out) person (id 1) is 0, stop sign
(id 13, after the missing 12) is 11, backpack (id 27, after the missing 26) is 24, toothbrush
(id 90) is 79, banner (id 92, the first stuff id) is 80 and wood (id 182) is 170. Release v1.0
numbers the same classes 2..172 in the same order (1 = unlabeled); v1.1 uses the COCO ids
(0 = unlabeled).
"""

import numpy as np
import pytest
import scipy.io
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from seg_zoo.data import prepare
from seg_zoo.data.datasets import register_coco_stuff_10k
from seg_zoo.data.datasets._paths import get_datasets_root

# One scene, written in both releases' numbering.
S_V11 = np.array(
    [
        [0, 1, 1, 13, 27],
        [92, 92, 182, 182, 0],
        [12, 91, 90, 1, 0],  # 12 (street sign) and 91 (hair brush) have no annotations
        [100, 13, 27, 90, 182],
    ],
    dtype=np.uint8,
)
S_V10 = np.array(
    [
        [1, 2, 2, 13, 26],
        [82, 82, 172, 172, 1],
        [1, 1, 81, 2, 1],  # v1.0 has no number for the unannotated thing ids: unlabeled
        [90, 13, 26, 81, 172],
    ],
    dtype=np.uint8,
)
EXPECTED = np.array(
    [
        [255, 0, 0, 11, 24],
        [80, 80, 170, 170, 255],
        [255, 255, 79, 0, 255],
        [88, 11, 24, 79, 170],  # stuff id 100 = the 9th stuff class -> 80 + 8
    ],
    dtype=np.uint8,
)


def _load(path):
    with Image.open(path) as im:
        return np.asarray(im)


@pytest.mark.parametrize(
    "version, S", [("1.0", S_V10), ("1.1", S_V11), ("1.1", S_V11.astype(np.float64))]
)
def test_label_map_by_hand(version, S):
    out = prepare.coco_stuff_10k_label_map(S, version)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, EXPECTED)


@pytest.mark.parametrize(
    "version, S, match",
    [
        ("1.0", S_V11, r"t\.mat: .*values 0\.\.182.*1\.\.172.*release 1\.1: pass version '1\.1'"),
        ("1.1", np.array([[0, 183]]), r"values 0\.\.183, outside 0\.\.182 of .*v1\.1$"),
        ("1.0", np.array([[1, 173]]), r"values 1\.\.173, outside 1\.\.172 of .*v1\.0$"),
        ("1.1", np.array([[-1, 5]]), r"values -1\.\.5"),
        ("1.1", np.array([[1.5, 2.0]]), "non-integer"),
        ("1.1", np.array([[np.nan, 2.0]]), "non-integer"),
        ("1.1", np.zeros((2, 3, 3), np.uint8), r"2-D.*\(2, 3, 3\)"),
        ("1.1", np.array([["a", "b"]]), "dtype <U1"),
        ("2.0", S_V11, r"version '2\.0'"),
    ],
)
def test_label_map_rejects_bad_input(version, S, match):
    with pytest.raises(ValueError, match=match):
        prepare.coco_stuff_10k_label_map(S, version, source="t.mat")


def _release(root, version="1.1", hw=(4, 5)):
    """Write a two-image cocostuff-10k release under root/coco/coco_stuff_10k; return its path."""
    base = root / "coco" / "coco_stuff_10k"
    (base / "images").mkdir(parents=True)
    (base / "annotations").mkdir()
    (base / "imageLists").mkdir()
    S = S_V11 if version == "1.1" else S_V10
    rng = np.random.default_rng(0)
    for name in ("COCO_train2014_000000000077", "COCO_train2014_000000000078"):
        image = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
        Image.fromarray(image).save(base / "images" / f"{name}.jpg")
        # Other variables of the real files ride along; the converter must pick "S".
        scipy.io.savemat(base / "annotations" / f"{name}.mat", {"S": S, "names": ["a", "b"]})
    # A blank line and trailing spaces, as hand-edited lists have.
    (base / "imageLists" / "train.txt").write_text("COCO_train2014_000000000077  \n\n")
    (base / "imageLists" / "test.txt").write_text("COCO_train2014_000000000078\n")
    return base


def test_read_mat_picks_S_and_names_missing_key(tmp_path):
    base = _release(tmp_path)
    mat = base / "annotations" / "COCO_train2014_000000000077.mat"
    np.testing.assert_array_equal(prepare.read_coco_stuff_10k_mat(mat), S_V11)
    scipy.io.savemat(tmp_path / "x.mat", {"labels": S_V11})
    with pytest.raises(ValueError, match=r"x\.mat: no variable 'S' \(has \['labels'\]\)"):
        prepare.read_coco_stuff_10k_mat(tmp_path / "x.mat")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(ValueError, match=r"junk\.mat: not a readable MATLAB file"):
        prepare.read_coco_stuff_10k_mat(tmp_path / "junk.mat")


def test_read_v73_mat_without_h5py_says_so(tmp_path, monkeypatch):
    # A MATLAB v7.3 header: 116 bytes of text, 8 of subsystem offset, version 0x0200, "IM".
    header = b"MATLAB 7.3 MAT-file".ljust(116) + b"\0" * 8 + b"\x00\x02" + b"IM"
    (tmp_path / "v73.mat").write_bytes(header.ljust(512, b"\0"))
    monkeypatch.setitem(__import__("sys").modules, "h5py", None)  # import h5py -> ImportError
    with pytest.raises(ValueError, match=r"v73\.mat is a MATLAB v7\.3 \(HDF5\).*h5py"):
        prepare.read_coco_stuff_10k_mat(tmp_path / "v73.mat")


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_prepare_writes_detectron2_layout(tmp_path, version):
    base = _release(tmp_path, version)
    counts = prepare.prepare_coco_stuff_10k_sem_seg(base, version=version)
    assert counts == {"train": 1, "test": 1}
    for split, name in [
        ("train", "COCO_train2014_000000000077"),
        ("test", "COCO_train2014_000000000078"),
    ]:
        assert sorted(p.name for p in (base / "images_detectron2" / split).iterdir()) == [
            f"{name}.jpg"
        ]
        assert sorted(p.name for p in (base / "annotations_detectron2" / split).iterdir()) == [
            f"{name}.png"
        ]
        copied = (base / "images_detectron2" / split / f"{name}.jpg").read_bytes()
        assert copied == (base / "images" / f"{name}.jpg").read_bytes()
        label = _load(base / "annotations_detectron2" / split / f"{name}.png")
        assert label.dtype == np.uint8
        np.testing.assert_array_equal(label, EXPECTED)


def test_prepare_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"COCO-Stuff-10k folder: .*nowhere"):
        prepare.prepare_coco_stuff_10k_sem_seg(tmp_path / "nowhere")

    base = _release(tmp_path / "a")
    (base / "imageLists" / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"image list: .*imageLists/test\.txt"):
        prepare.prepare_coco_stuff_10k_sem_seg(base, version="1.1")
    # Lists are all read first, so the missing test list stopped the train split too.
    assert not (base / "annotations_detectron2").exists()

    base = _release(tmp_path / "b")
    (base / "images" / "COCO_train2014_000000000078.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"imageLists/test\.txt.*000078\.jpg"):
        prepare.prepare_coco_stuff_10k_sem_seg(base, version="1.1")

    base = _release(tmp_path / "c")
    (base / "annotations" / "COCO_train2014_000000000077.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"annotation: .*000077\.mat"):
        prepare.prepare_coco_stuff_10k_sem_seg(base, version="1.1")

    base = _release(tmp_path / "d", hw=(5, 4))
    with pytest.raises(ValueError, match=r"000077\.mat: label map S is \(4, 5\).*is \(5, 4\)"):
        prepare.prepare_coco_stuff_10k_sem_seg(base, version="1.1")

    base = _release(tmp_path / "e", version="1.1")
    with pytest.raises(ValueError, match=r"000077\.mat: .*pass version '1\.1', --release 1\.1"):
        prepare.prepare_coco_stuff_10k_sem_seg(base, version="1.0")

    base = _release(tmp_path / "f")
    (base / "imageLists" / "train.txt").write_text("COCO_train2014_000000000077\n" * 2)
    with pytest.raises(ValueError, match=r"train\.txt: lists some image names more than once"):
        prepare.prepare_coco_stuff_10k_sem_seg(base, version="1.1")


@pytest.fixture
def restore_registration():
    yield
    register_coco_stuff_10k.register_all_coco_stuff_10k(get_datasets_root())


def test_registration_loads_prepared_files(tmp_path, restore_registration):
    base = _release(tmp_path)
    register_coco_stuff_10k.register_all_coco_stuff_10k(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"prepare_coco_stuff_10k_v1\.0_sem_seg\.py"):
        DatasetCatalog.get("coco_2017_train_stuff_10k_sem_seg")

    prepare.prepare_coco_stuff_10k_sem_seg(base, version="1.1")
    for split, name in [
        ("train", "COCO_train2014_000000000077"),
        ("test", "COCO_train2014_000000000078"),
    ]:
        dicts = DatasetCatalog.get(f"coco_2017_{split}_stuff_10k_sem_seg")
        assert len(dicts) == 1
        assert dicts[0]["file_name"] == str(base / "images_detectron2" / split / f"{name}.jpg")
        np.testing.assert_array_equal(_load(dicts[0]["sem_seg_file_name"]), EXPECTED)
        meta = MetadataCatalog.get(f"coco_2017_{split}_stuff_10k_sem_seg")
        # The written labels index the registered class list: spot-check it by name.
        assert [meta.stuff_classes[i] for i in (0, 11, 24, 79, 80, 170)] == [
            "person",
            "stop sign",
            "backpack",
            "toothbrush",
            "banner",
            "wood",
        ]


def test_cli_converts_and_names_missing_input(tmp_path, monkeypatch, capsys):
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).parents[2] / "tools" / "prepare_coco_stuff_10k_v1.0_sem_seg.py"
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "missing"))
    monkeypatch.setattr(sys, "argv", [str(script)])
    with pytest.raises(SystemExit, match=r"error: .*missing.*coco_stuff_10k"):
        runpy.run_path(str(script), run_name="__main__")

    base = _release(tmp_path / "root", version="1.0")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "root"))
    runpy.run_path(str(script), run_name="__main__")
    assert "train: 1" in capsys.readouterr().out
    label = _load(base / "annotations_detectron2" / "test" / "COCO_train2014_000000000078.png")
    np.testing.assert_array_equal(label, EXPECTED)


def test_read_v73_mat_with_h5py_transposes_back(tmp_path):
    """MATLAB v7.3 files are HDF5 with a 512-byte MATLAB header; S is stored column-major."""
    h5py = pytest.importorskip("h5py")
    from seg_zoo.data.prepare import read_coco_stuff_10k_mat

    label = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = tmp_path / "v73.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("S", data=label.T)  # what MATLAB writes for a 3x4 matrix
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 HDF5"
    header = header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as f:
        f.write(header)
    np.testing.assert_array_equal(read_coco_stuff_10k_mat(path), label)
