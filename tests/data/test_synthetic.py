"""Tests for the synthetic dataset: determinism, real formats, registrations, evaluators.

Formats are re-read with independent tools (panopticapi's rgb2id, pycocotools' decoder, PIL) and
checked against quantities recomputed here from the pixels, never against the generator's own
helpers.
"""

import filecmp
import json
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from panopticapi.utils import rgb2id
from PIL import Image
from pycocotools import mask as mask_util

import seg_zoo.data  # noqa: F401  (registers the datasets)
from seg_zoo.data.datasets.synthetic import (
    SYNTHETIC_DIRNAME,
    generate_synthetic_dataset,
    register_all_synthetic,
)

NUM_TRAIN, NUM_VAL = 6, 3
SPLITS = ("train", "val")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A small dataset in a tmp root, registered for the tests of this module."""
    root = str(tmp_path_factory.mktemp("synthetic_root"))
    generate_synthetic_dataset(root, num_train=NUM_TRAIN, num_val=NUM_VAL, seed=0)
    register_all_synthetic(root)
    yield root
    # Leave the registrations bound to $DETECTRON2_DATASETS, as after `import seg_zoo`.
    register_all_synthetic()


def _dir(root):
    return os.path.join(root, SYNTHETIC_DIRNAME)


def _load(root, rel):
    with open(os.path.join(_dir(root), rel)) as f:
        return json.load(f)


def _read(path):
    return np.asarray(Image.open(path))


def _all_files(folder):
    return sorted(
        os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs
    )


# ----------------------------------------------------------------------------- generation


def test_same_seed_gives_identical_bytes_and_other_seed_differs(root, tmp_path):
    again = tmp_path / "again"
    other = tmp_path / "other"
    generate_synthetic_dataset(str(again), num_train=NUM_TRAIN, num_val=NUM_VAL, seed=0)
    generate_synthetic_dataset(str(other), num_train=NUM_TRAIN, num_val=NUM_VAL, seed=1)
    a, b = _dir(root), str(again / SYNTHETIC_DIRNAME)
    files = _all_files(a)
    assert files == _all_files(b)
    # categories + stamp + 4 jsons + per image: jpg + 3 pngs + Cityscapes' 4 pngs and a json
    assert len(files) == 1 + 1 + 4 + 9 * (NUM_TRAIN + NUM_VAL)
    for rel in files:
        assert filecmp.cmp(os.path.join(a, rel), os.path.join(b, rel), shallow=False), rel
    c = str(other / SYNTHETIC_DIRNAME)
    differ = [
        rel
        for rel in files
        if rel.endswith(".jpg")
        and not filecmp.cmp(os.path.join(a, rel), os.path.join(c, rel), shallow=False)
    ]
    assert len(differ) == NUM_TRAIN + NUM_VAL


def test_stamp_skips_unchanged_and_regenerates_changed(tmp_path):
    out = generate_synthetic_dataset(str(tmp_path), num_train=2, num_val=1, seed=3)
    jpg = os.path.join(out, "images", "train", "000001.jpg")
    os.utime(jpg, (0, 0))
    generate_synthetic_dataset(str(tmp_path), num_train=2, num_val=1, seed=3)
    assert os.stat(jpg).st_mtime == 0  # untouched: skipped
    generate_synthetic_dataset(str(tmp_path), num_train=3, num_val=1, seed=3)
    assert len(os.listdir(os.path.join(out, "images", "train"))) == 3
    assert os.stat(jpg).st_mtime != 0
    generate_synthetic_dataset(str(tmp_path), num_train=3, num_val=1, seed=3, force=True)
    assert _load(str(tmp_path), ".stamp.json")["num_train"] == 3


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="num_train"):
        generate_synthetic_dataset(str(tmp_path), num_train=0)
    with pytest.raises(ValueError, match="seed"):
        generate_synthetic_dataset(str(tmp_path), seed=-1)


# ----------------------------------------------------------------------------- formats


def test_categories_are_coco_style_with_non_contiguous_ids(root):
    cats = _load(root, "categories.json")
    assert [(c["id"], c["name"], c["isthing"]) for c in cats] == [
        (1, "circle", 1),
        (2, "square", 1),
        (4, "triangle", 1),
        (7, "cross", 1),
        (10, "sky", 0),
        (11, "grass", 0),
        (12, "water", 0),
    ]
    for c in cats:
        assert set(c) == {"id", "name", "isthing", "color", "supercategory"}
    for split in SPLITS:
        assert _load(root, f"annotations/panoptic_{split}.json")["categories"] == cats
        inst_cats = _load(root, f"annotations/instances_{split}.json")["categories"]
        assert inst_cats == [c for c in cats if c["isthing"]]


@pytest.mark.parametrize("split", SPLITS)
def test_panoptic_png_matches_json(root, split):
    pan = _load(root, f"annotations/panoptic_{split}.json")
    num = NUM_TRAIN if split == "train" else NUM_VAL
    assert len(pan["images"]) == len(pan["annotations"]) == num
    images = {im["id"]: im for im in pan["images"]}
    sizes = set()
    for ann in pan["annotations"]:
        im = images[ann["image_id"]]
        assert ann["file_name"] == f"{ann['image_id']:06d}.png"
        assert im["file_name"] == f"{ann['image_id']:06d}.jpg"
        rgb = _read(os.path.join(_dir(root), f"panoptic_{split}", ann["file_name"]))
        assert rgb.dtype == np.uint8 and rgb.shape == (im["height"], im["width"], 3)
        jpg = Image.open(os.path.join(_dir(root), "images", split, im["file_name"]))
        assert jpg.size == (im["width"], im["height"]) and jpg.mode == "RGB"
        assert 96 <= im["width"] <= 160 and 96 <= im["height"] <= 160
        sizes.add((im["width"], im["height"]))

        ids = rgb2id(rgb)
        segs = ann["segments_info"]
        assert sorted(s["id"] for s in segs) == sorted(set(np.unique(ids).tolist()) - {0})
        for s in segs:
            mask = ids == s["id"]
            ys, xs = np.where(mask)
            assert s["area"] == len(ys) >= 20
            assert s["bbox"] == [
                xs.min(),
                ys.min(),
                xs.max() - xs.min() + 1,
                ys.max() - ys.min() + 1,
            ]
            assert s["iscrowd"] == 0
        stuff_ids = [s["category_id"] for s in segs if s["category_id"] >= 10]
        assert len(stuff_ids) == len(set(stuff_ids)) >= 1  # one segment per stuff class
        assert (ids == 0).any()  # void outlines
    assert len(sizes) > 1


@pytest.mark.parametrize("split", SPLITS)
def test_instances_decode_to_panoptic_thing_segments(root, split):
    inst = _load(root, f"annotations/instances_{split}.json")
    pan = _load(root, f"annotations/panoptic_{split}.json")
    by_image = {}
    for a in inst["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    assert len({a["id"] for a in inst["annotations"]}) == len(inst["annotations"])
    for ann in pan["annotations"]:
        ids = rgb2id(_read(os.path.join(_dir(root), f"panoptic_{split}", ann["file_name"])))
        things = [s for s in ann["segments_info"] if s["category_id"] < 10]
        insts = by_image.get(ann["image_id"], [])
        assert len(insts) == len(things) >= 1
        for s, a in zip(things, insts):
            assert isinstance(a["segmentation"]["counts"], str)
            rle = dict(a["segmentation"], counts=a["segmentation"]["counts"].encode())
            decoded = mask_util.decode(rle).astype(bool)
            np.testing.assert_array_equal(decoded, ids == s["id"])
            assert a["category_id"] == s["category_id"]
            assert a["area"] == s["area"] and a["bbox"] == s["bbox"] and a["iscrowd"] == 0


@pytest.mark.parametrize("split", SPLITS)
def test_semantic_pngs_agree_with_panoptic(root, split):
    cats = _load(root, "categories.json")
    index = {c["id"]: i for i, c in enumerate(cats)}
    pan = _load(root, f"annotations/panoptic_{split}.json")
    for ann in pan["annotations"]:
        ids = rgb2id(_read(os.path.join(_dir(root), f"panoptic_{split}", ann["file_name"])))
        expected = np.full(ids.shape, 255, dtype=np.uint8)
        for s in ann["segments_info"]:
            expected[ids == s["id"]] = index[s["category_id"]]
        sem = _read(os.path.join(_dir(root), "sem_seg", split, ann["file_name"]))
        from_pan = _read(os.path.join(_dir(root), f"panoptic_semseg_{split}", ann["file_name"]))
        assert sem.dtype == np.uint8 and sem.ndim == 2
        np.testing.assert_array_equal(sem, expected)
        np.testing.assert_array_equal(from_pan, expected)
        np.testing.assert_array_equal(sem == 255, ids == 0)


def test_scenes_are_learnable(root):
    """Classes look different, all appear, and none is negligible; void stays a small share."""
    cats = _load(root, "categories.json")
    sums = np.zeros((len(cats), 3))
    counts = np.zeros(len(cats) + 1)
    for name in sorted(os.listdir(os.path.join(_dir(root), "sem_seg", "train"))):
        sem = _read(os.path.join(_dir(root), "sem_seg", "train", name))
        img = _read(os.path.join(_dir(root), "images", "train", name[:-4] + ".jpg"))
        for k in range(len(cats)):
            sums[k] += img[sem == k].reshape(-1, 3).sum(0)
        counts += np.bincount(np.where(sem == 255, len(cats), sem).ravel(), minlength=8)
    assert (counts[:-1] > 0).all(), f"a class never appears in train: {counts}"
    means = sums / counts[:-1, None]
    for i in range(len(cats)):
        for j in range(i + 1, len(cats)):
            assert np.linalg.norm(means[i] - means[j]) > 40, (cats[i]["name"], cats[j]["name"])
    frac = counts / counts.sum()
    assert (frac[:-1] > 0.002).all(), frac
    assert 0.005 < frac[-1] < 0.15, f"void fraction {frac[-1]}"


# ----------------------------------------------------------------------------- registrations


def test_registered_names_and_metadata(root):
    cats = _load(root, "categories.json")
    names = DatasetCatalog.list()
    for split in SPLITS:
        for name in (
            f"synthetic_sem_seg_{split}",
            f"synthetic_panoptic_{split}",
            f"synthetic_panoptic_{split}_with_sem_seg",
            f"synthetic_instance_{split}",
        ):
            assert name in names
    d = _dir(root)
    sem = MetadataCatalog.get("synthetic_sem_seg_val")
    assert sem.stuff_classes == [c["name"] for c in cats]
    assert sem.stuff_colors == [c["color"] for c in cats]
    assert sem.ignore_label == 255 and sem.evaluator_type == "sem_seg"
    assert sem.image_root == os.path.join(d, "images", "val")
    assert sem.sem_seg_root == os.path.join(d, "sem_seg", "val")

    for name in ("synthetic_panoptic_val", "synthetic_panoptic_val_with_sem_seg"):
        pan = MetadataCatalog.get(name)
        assert pan.evaluator_type == "coco_panoptic_seg"
        assert pan.ignore_label == 255 and pan.label_divisor == 1000
        assert pan.thing_classes == ["circle", "square", "triangle", "cross"]
        assert pan.stuff_classes == [c["name"] for c in cats]
        # Written out by hand: one index over all 7 categories in json order.
        assert pan.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 4: 2, 7: 3}
        assert pan.stuff_dataset_id_to_contiguous_id == {
            1: 0, 2: 1, 4: 2, 7: 3, 10: 4, 11: 5, 12: 6,
        }  # fmt: skip
        assert pan.panoptic_root == os.path.join(d, "panoptic_val")
        assert pan.panoptic_json == os.path.join(d, "annotations", "panoptic_val.json")
        assert pan.json_file == os.path.join(d, "annotations", "instances_val.json")
        assert pan.image_root == os.path.join(d, "images", "val")
    with_sem = MetadataCatalog.get("synthetic_panoptic_val_with_sem_seg")
    assert with_sem.sem_seg_root == os.path.join(d, "panoptic_semseg_val")

    inst = MetadataCatalog.get("synthetic_instance_val")
    assert inst.evaluator_type == "coco"
    assert inst.thing_classes == ["circle", "square", "triangle", "cross"]
    assert inst.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 4: 2, 7: 3}


def test_datasets_load_with_contiguous_ids(root):
    cats = _load(root, "categories.json")
    d = _dir(root)
    sem = DatasetCatalog.get("synthetic_sem_seg_train")
    assert len(sem) == NUM_TRAIN
    assert sem[0]["file_name"] == os.path.join(d, "images", "train", "000001.jpg")
    assert sem[0]["sem_seg_file_name"] == os.path.join(d, "sem_seg", "train", "000001.png")

    raw = {a["image_id"]: a for a in _load(root, "annotations/panoptic_val.json")["annotations"]}
    for name in ("synthetic_panoptic_val", "synthetic_panoptic_val_with_sem_seg"):
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == NUM_VAL
        for dic in dicts:
            stem = f"{dic['image_id']:06d}"
            assert dic["file_name"] == os.path.join(d, "images", "val", stem + ".jpg")
            assert dic["pan_seg_file_name"] == os.path.join(d, "panoptic_val", stem + ".png")
            if name.endswith("_with_sem_seg"):
                sem_file = os.path.join(d, "panoptic_semseg_val", stem + ".png")
                assert dic["sem_seg_file_name"] == sem_file
            else:
                assert "sem_seg_file_name" not in dic
            for seg, seg_raw in zip(dic["segments_info"], raw[dic["image_id"]]["segments_info"]):
                cat = next(c for c in cats if c["id"] == seg_raw["category_id"])
                assert seg["category_id"] == cats.index(cat)
                assert seg["isthing"] == bool(cat["isthing"])
                assert seg["id"] == seg_raw["id"]
        # Loading twice must not see ids converted twice.
        assert DatasetCatalog.get(name)[0]["segments_info"] == dicts[0]["segments_info"]

    inst = DatasetCatalog.get("synthetic_instance_val")
    raw_inst = _load(root, "annotations/instances_val.json")["annotations"]
    thing_index = {1: 0, 2: 1, 4: 2, 7: 3}
    got = [a["category_id"] for dic in inst for a in dic["annotations"]]
    assert got == [thing_index[a["category_id"]] for a in raw_inst]


# ----------------------------------------------------------------------------- errors


def test_missing_root_names_path_dataset_and_tool(tmp_path):
    empty = str(tmp_path / "nowhere")
    register_all_synthetic(empty)
    try:
        for name in (
            "synthetic_sem_seg_train",
            "synthetic_panoptic_val",
            "synthetic_panoptic_val_with_sem_seg",
            "synthetic_instance_val",
        ):
            with pytest.raises(FileNotFoundError) as err:
                DatasetCatalog.get(name)
            msg = str(err.value)
            assert name in msg and empty in msg, msg
            assert "DETECTRON2_DATASETS" in msg and "tools/make_synthetic_dataset.py" in msg
        assert MetadataCatalog.get("synthetic_sem_seg_val").image_root.startswith(empty)
    finally:
        register_all_synthetic()


def test_root_may_be_the_synthetic_folder_itself(root):
    """DETECTRON2_DATASETS=<root>/seg_zoo_synthetic serves both these and Cityscapes' builtins."""
    register_all_synthetic(_dir(root))
    try:
        assert MetadataCatalog.get("synthetic_sem_seg_val").image_root == os.path.join(
            _dir(root), "images", "val"
        )
        assert len(DatasetCatalog.get("synthetic_panoptic_val")) == NUM_VAL
        # Generating into it recognises the existing dataset (stamp unchanged: skipped).
        assert generate_synthetic_dataset(
            _dir(root), num_train=NUM_TRAIN, num_val=NUM_VAL, seed=0
        ) == _dir(root)
        assert not os.path.exists(os.path.join(_dir(root), SYNTHETIC_DIRNAME))
    finally:
        register_all_synthetic(root)


@pytest.fixture
def corrupt_root(root, tmp_path):
    """A copy of the dataset's val annotations whose files we may damage."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(_dir(root), copy / SYNTHETIC_DIRNAME)
    register_all_synthetic(str(copy))
    yield copy / SYNTHETIC_DIRNAME
    register_all_synthetic(root)


def test_unknown_category_in_panoptic_json(corrupt_root):
    path = corrupt_root / "annotations" / "panoptic_val.json"
    data = json.loads(path.read_text())
    data["annotations"][1]["segments_info"][0]["category_id"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as err:
        DatasetCatalog.get("synthetic_panoptic_val_with_sem_seg")
    msg = str(err.value)
    assert "99" in msg and str(path) in msg and data["annotations"][1]["file_name"] in msg


def test_unknown_category_in_instances_json(corrupt_root):
    path = corrupt_root / "annotations" / "instances_val.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 3
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as err:
        DatasetCatalog.get("synthetic_instance_val")
    msg = str(err.value)
    assert "category_id 3" in msg and str(path) in msg and "image_id" in msg


def test_image_listed_but_missing(corrupt_root):
    missing = corrupt_root / "images" / "val" / "100002.jpg"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=str(missing)):
        DatasetCatalog.get("synthetic_panoptic_val")


# ----------------------------------------------------------------------------- evaluators


def test_sem_seg_evaluator_scores_ground_truth_100(root):
    from detectron2.evaluation import SemSegEvaluator

    evaluator = SemSegEvaluator("synthetic_sem_seg_val", distributed=False)
    evaluator.reset()
    num_classes = len(MetadataCatalog.get("synthetic_sem_seg_val").stuff_classes)
    for dic in DatasetCatalog.get("synthetic_sem_seg_val"):
        gt = torch.from_numpy(_read(dic["sem_seg_file_name"]).astype(np.int64))
        gt[gt == 255] = 0  # void pixels are ignored; any class will do
        scores = torch.nn.functional.one_hot(gt, num_classes).permute(2, 0, 1).float()
        evaluator.process([dic], [{"sem_seg": scores}])
    res = evaluator.evaluate()["sem_seg"]
    assert res["mIoU"] == pytest.approx(100.0)
    assert res["pACC"] == pytest.approx(100.0)


def test_coco_panoptic_evaluator_scores_ground_truth_100(root, tmp_path):
    from detectron2.evaluation import COCOPanopticEvaluator

    name = "synthetic_panoptic_val_with_sem_seg"
    evaluator = COCOPanopticEvaluator(name, str(tmp_path))
    evaluator.reset()
    for dic in DatasetCatalog.get(name):
        ids = torch.from_numpy(rgb2id(_read(dic["pan_seg_file_name"])).astype(np.int32))
        segments = [
            {"id": s["id"], "category_id": s["category_id"], "isthing": s["isthing"]}
            for s in dic["segments_info"]
        ]
        evaluator.process([dic], [{"panoptic_seg": (ids, segments)}])
    res = evaluator.evaluate()["panoptic_seg"]
    assert res["PQ"] == pytest.approx(100.0)
    assert res["PQ_th"] == pytest.approx(100.0) and res["PQ_st"] == pytest.approx(100.0)


def test_coco_evaluator_scores_ground_truth_100(root, tmp_path):
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import BitMasks, Boxes, Instances

    name = "synthetic_instance_val"
    evaluator = COCOEvaluator(name, tasks=("segm",), distributed=False, output_dir=str(tmp_path))
    evaluator.reset()
    for dic in DatasetCatalog.get(name):
        anns = dic["annotations"]
        masks = np.stack([mask_util.decode(a["segmentation"]) for a in anns]).astype(bool)
        inst = Instances((dic["height"], dic["width"]))
        inst.pred_masks = BitMasks(torch.from_numpy(masks)).tensor
        inst.pred_boxes = Boxes(torch.tensor([a["bbox"] for a in anns], dtype=torch.float32))
        inst.scores = torch.ones(len(anns))
        inst.pred_classes = torch.tensor([a["category_id"] for a in anns])
        evaluator.process([dic], [{"instances": inst}])
    res = evaluator.evaluate()["segm"]
    assert res["AP"] == pytest.approx(100.0)


# ----------------------------------------------------------------------------- Cityscapes tree


def _cityscapes_dirs(root, split):
    base = os.path.join(_dir(root), "cityscapes")
    return os.path.join(base, "leftImg8bit", split), os.path.join(base, "gtFine", split)


def test_cityscapes_label_mapping_uses_real_cityscapes_ids():
    from cityscapesscripts.helpers.labels import name2label

    from seg_zoo.data.datasets.synthetic import CITYSCAPES_LABELS

    things = {1, 2, 4, 7}
    for cat_id, (name, label_id, train_id) in CITYSCAPES_LABELS.items():
        label = name2label[name]
        assert (label.id, label.trainId) == (label_id, train_id)
        assert label.hasInstances == (cat_id in things) and not label.ignoreInEval
    assert len({v[0] for v in CITYSCAPES_LABELS.values()}) == len(CITYSCAPES_LABELS)


@pytest.mark.parametrize("split", SPLITS)
def test_cityscapes_pngs_agree_with_semantic_and_panoptic(root, split):
    from cityscapesscripts.helpers.labels import name2label

    from seg_zoo.data.datasets.synthetic import CITYSCAPES_CITIES, CITYSCAPES_LABELS

    cats = _load(root, "categories.json")
    name_of = {i: CITYSCAPES_LABELS[c["id"]][0] for i, c in enumerate(cats)}
    img_dir, gt_dir = _cityscapes_dirs(root, split)
    city = CITYSCAPES_CITIES[split]
    pan = _load(root, f"annotations/panoptic_{split}.json")
    for ann in pan["annotations"]:
        stem = os.path.join(gt_dir, city, f"{city}_{ann['image_id']:06d}_000019_gtFine_")
        sem = _read(os.path.join(_dir(root), "sem_seg", split, ann["file_name"]))
        train_ids = _read(stem + "labelTrainIds.png")
        label_ids = _read(stem + "labelIds.png")
        inst = _read(stem + "instanceIds.png").astype(np.int64)
        for k, name in name_of.items():
            assert (train_ids[sem == k] == name2label[name].trainId).all()
            assert (label_ids[sem == k] == name2label[name].id).all()
        assert (train_ids[sem == 255] == 255).all() and (label_ids[sem == 255] == 0).all()
        # Every thing segment is one Cityscapes instance with the same pixels.
        ids = rgb2id(_read(os.path.join(_dir(root), f"panoptic_{split}", ann["file_name"])))
        things = [s for s in ann["segments_info"] if s["category_id"] < 10]
        inst_values = sorted(v for v in np.unique(inst) if v >= 1000)
        assert len(inst_values) == len(things)
        for s in things:
            values = np.unique(inst[ids == s["id"]])
            assert len(values) == 1 and values[0] // 1000 == label_ids[ids == s["id"]][0]
        leftimg = os.path.join(
            img_dir, city, f"{city}_{ann['image_id']:06d}_000019_leftImg8bit.png"
        )
        assert Image.open(leftimg).size == (sem.shape[1], sem.shape[0])


def test_detectron2_cityscapes_loaders_read_the_tree(root):
    from detectron2.data.datasets.cityscapes import (
        load_cityscapes_instances,
        load_cityscapes_semantic,
    )

    img_dir, gt_dir = _cityscapes_dirs(root, "val")
    sem = load_cityscapes_semantic(img_dir, gt_dir)
    assert len(sem) == NUM_VAL
    assert all(d["sem_seg_file_name"].endswith("_gtFine_labelTrainIds.png") for d in sem)
    num_things = sum(
        sum(s["category_id"] < 10 for s in a["segments_info"])
        for a in _load(root, "annotations/panoptic_val.json")["annotations"]
    )
    from_png = load_cityscapes_instances(img_dir, gt_dir, from_json=False, to_polygons=False)
    assert sum(len(d["annotations"]) for d in from_png) == num_things
    from_json = load_cityscapes_instances(img_dir, gt_dir, from_json=True, to_polygons=True)
    assert len(from_json) == NUM_VAL
    # An occluded thing may be split into parts, each its own polygon object.
    assert sum(len(d["annotations"]) for d in from_json) >= num_things
    # detectron2 maps labels onto its 8 thing classes (person, rider, car, truck, bus, train,
    # motorcycle, bicycle): ours are person 0, car 2, truck 3, bicycle 7.
    for d in from_json + from_png:
        assert {a["category_id"] for a in d["annotations"]} <= {0, 2, 3, 7}


def test_cityscapes_sem_seg_evaluator_scores_ground_truth_100(root):
    from detectron2.data.datasets.cityscapes import load_cityscapes_semantic
    from detectron2.evaluation import CityscapesSemSegEvaluator

    img_dir, gt_dir = _cityscapes_dirs(root, "val")
    name = "h1_test_synthetic_cityscapes_sem_seg_val"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: load_cityscapes_semantic(img_dir, gt_dir))
    MetadataCatalog.get(name).set(
        gt_dir=gt_dir, ignore_label=255, evaluator_type="cityscapes_sem_seg"
    )
    evaluator = CityscapesSemSegEvaluator(name)
    evaluator.reset()
    for dic in DatasetCatalog.get(name):
        gt = torch.from_numpy(_read(dic["sem_seg_file_name"]).astype(np.int64))
        gt[gt == 255] = 0
        scores = torch.nn.functional.one_hot(gt, 19).permute(2, 0, 1).float()
        evaluator.process([dic], [{"sem_seg": scores}])
    res = evaluator.evaluate()["sem_seg"]
    assert res["IoU"] == pytest.approx(100.0)
