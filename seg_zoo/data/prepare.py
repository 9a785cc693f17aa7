"""Dataset conversions behind `tools/prepare_*.py`: raw releases in, detectron2 layouts out.

Each conversion is split into a pure array function (easy to test on a hand-made 4x5 input) and
a folder/split driver that reads and writes files. The output formats follow the official
Mask2Former / MaskFormer preparation scripts (facebookresearch/Mask2Former `datasets/`,
facebookresearch/MaskFormer `datasets/prepare_ade20k_full_sem_seg.py`) so their registrations
and evaluators read them unchanged; where seg_zoo deliberately differs, the docstring says so.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from panopticapi.utils import rgb2id
from PIL import Image

from .datasets.categories import (
    ADE20K_150_CATEGORIES,
    ADE20K_FULL_CATEGORIES,
    ADE20K_INSTANCE_CATEGORIES,
    COCO_STUFF_171_CATEGORIES,
)

__all__ = [
    "ADE20K_FULL_IGNORE",
    "ADE20K_FULL_MAX_SIZE",
    "COCO_STUFF_10K_VERSIONS",
    "ade20k_full_class_mask",
    "ade20k_full_resize_shape",
    "ade20k_full_train_ids",
    "ade20k_instances_from_annotation",
    "ade20k_panoptic_from_annotations",
    "coco_stuff_10k_label_map",
    "prepare_ade20k_full_sem_seg",
    "prepare_ade20k_instance",
    "prepare_ade20k_panoptic",
    "prepare_ade20k_sem_seg",
    "prepare_coco_stuff_10k_sem_seg",
    "read_coco_stuff_10k_mat",
    "semantic_from_panoptic",
    "semantic_from_panoptic_image",
    "shift_ade20k_labels",
]

# ADE20K-full labels need 847 values, so they are stored as uint16 with the top value as ignore.
ADE20K_FULL_IGNORE = 65535
# The official ADE20K-full preparation shrinks images whose shorter side exceeds this.
ADE20K_FULL_MAX_SIZE = 512

# Raw value k (1..100) of the `annotations_instance` class channel -> 150-class label.
_ADE20K_INSTANCE_CLASS_TO_LABEL = {k + 1: c["id"] for k, c in enumerate(ADE20K_INSTANCE_CATEGORIES)}
_ADE20K_THING_LABELS = {c["id"] for c in ADE20K_150_CATEGORIES if c["isthing"]}


def _require(path: str | os.PathLike, what: str, producer: str | None = None) -> None:
    if not os.path.exists(path):
        hint = f" (create it with `python {producer}`)" if producer else ""
        raise FileNotFoundError(f"missing {what}: {path}{hint}")


def _read_array(path: str | os.PathLike, dtype, ndim: int, what: str) -> np.ndarray:
    """Read an image as an array and insist on the dtype/rank a raw format promises."""
    _require(path, what)
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.dtype != dtype or arr.ndim != ndim or (ndim == 3 and arr.shape[2] < 3):
        raise ValueError(
            f"{what} {path}: expected a {ndim}-D {np.dtype(dtype).name} image"
            f"{' with 3 channels' if ndim == 3 else ''}, got shape {arr.shape} dtype {arr.dtype}"
        )
    return arr


def _bbox_xywh(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]


def _write_json(obj, path: str | os.PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


# ----------------------------------------------------------------------------- ADE20K semantic
def shift_ade20k_labels(label: np.ndarray) -> np.ndarray:
    """Raw SceneParsing labels (0 = unlabeled, k = class k) -> detectron2 labels (255, k-1).

    uint8 wrap-around does both at once: 0 - 1 = 255.
    """
    if label.dtype != np.uint8:
        raise ValueError(f"ADE20K labels must be uint8, got {label.dtype}")
    return label - np.uint8(1)


def prepare_ade20k_sem_seg(annotation_dir: str | os.PathLike, output_dir: str | os.PathLike) -> int:
    """Shift every `*.png` of `annotation_dir` into `output_dir`; returns the file count."""
    annotation_dir, output_dir = Path(annotation_dir), Path(output_dir)
    _require(annotation_dir, "ADE20K annotation folder")
    output_dir.mkdir(parents=True, exist_ok=True)
    files = sorted(annotation_dir.glob("*.png"))
    for src in files:
        label = _read_array(src, np.uint8, 2, "ADE20K annotation")
        Image.fromarray(shift_ade20k_labels(label)).save(output_dir / src.name)
    return len(files)


# -------------------------------------------------------------------------------- ADE20K-full
def ade20k_full_class_mask(seg: np.ndarray) -> np.ndarray:
    """Decode an ADE20K `*_seg.png` (H, W, 3) into its per-pixel class index, int32 (H, W).

    The release packs the class index into the red and green channels as R / 10 * 256 + G
    (integer division; 0 = unlabeled).
    """
    if seg.ndim != 3 or seg.shape[2] < 3 or seg.dtype != np.uint8:
        raise ValueError(f"ADE20K *_seg.png must be uint8 (H, W, 3), got {seg.shape} {seg.dtype}")
    return (seg[:, :, 0] // 10).astype(np.int32) * 256 + seg[:, :, 1].astype(np.int32)


def ade20k_full_resize_shape(
    height: int, width: int, max_size: int = ADE20K_FULL_MAX_SIZE
) -> tuple[int, int] | None:
    """(new_h, new_w) making the shorter side `max_size` when it is longer, else None.

    Uses Python's round() on the longer side, as the official script does.
    """
    if width >= height > max_size:
        return max_size, round(width / float(height) * max_size)
    if height >= width > max_size:
        return round(height / float(width) * max_size), max_size
    return None


def ade20k_full_train_ids(class_mask: np.ndarray) -> np.ndarray:
    """Class indices -> 847-class train ids (uint16), everything else -> 65535."""
    out = np.full(class_mask.shape, ADE20K_FULL_IGNORE, dtype=np.uint16)
    for cat in ADE20K_FULL_CATEGORIES:
        out[class_mask == cat["id"]] = cat["trainId"]
    return out


def _convert_ade20k_full_one(image_path: Path, out_image: Path, out_label: Path) -> None:
    import cv2  # only this conversion needs OpenCV

    seg_path = image_path.with_name(image_path.name.replace(".jpg", "_seg.png"))
    _require(image_path, "ADE20K-full image")
    with Image.open(image_path) as im:
        img = np.asarray(im.convert("RGB"))
    lab = ade20k_full_class_mask(_read_array(seg_path, np.uint8, 3, "ADE20K-full *_seg.png"))
    if lab.shape != img.shape[:2]:
        raise ValueError(f"{seg_path} is {lab.shape} but {image_path} is {img.shape[:2]}")
    new_shape = ade20k_full_resize_shape(*img.shape[:2])
    if new_shape is not None:
        h, w = new_shape
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        # Nearest keeps labels valid; it runs on the class index, before the train-id lookup.
        lab = cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST)
    Image.fromarray(img).save(out_image)
    Image.fromarray(ade20k_full_train_ids(lab)).save(out_label)


def prepare_ade20k_full_sem_seg(
    dataset_dir: str | os.PathLike, index: dict | None = None
) -> dict[str, int]:
    """Convert ADE20K_2021_17_01 into `images_detectron2/` + `annotations_detectron2/` (.tif).

    `index` is the release's `index_ade20k.pkl` content (keys "folder" and "filename"; folders
    are relative to `dataset_dir`); by default it is read from
    `dataset_dir/ADE20K_2021_17_01/index_ade20k.pkl`. A file goes to "validation" when its
    name's second `_` field is "val", else to "training". Returns the count per split.
    """
    dataset_dir = Path(dataset_dir)
    base = dataset_dir / "ADE20K_2021_17_01"
    if index is None:
        index_file = base / "index_ade20k.pkl"
        _require(index_file, "ADE20K-full index (from the ADE20K_2021_17_01 release)")
        with open(index_file, "rb") as f:
            index = pickle.load(f)
    for key in ("folder", "filename"):
        if key not in index:
            raise ValueError(f"ADE20K-full index lacks the {key!r} list")
    counts = {"training": 0, "validation": 0}
    for split in counts:
        (base / "images_detectron2" / split).mkdir(parents=True, exist_ok=True)
        (base / "annotations_detectron2" / split).mkdir(parents=True, exist_ok=True)
    for folder, file_name in zip(index["folder"], index["filename"]):
        parts = file_name.split("_")
        split = "validation" if len(parts) > 1 and parts[1] == "val" else "training"
        _convert_ade20k_full_one(
            dataset_dir / folder / file_name,
            base / "images_detectron2" / split / file_name,
            base / "annotations_detectron2" / split / file_name.replace(".jpg", ".tif"),
        )
        counts[split] += 1
    return counts


# ------------------------------------------------------------------ ADE20K panoptic / instance
def _ade20k_instances(ins_seg: np.ndarray, source: str) -> list[tuple[int, np.ndarray]]:
    """(150-class label, mask) for each instance of an `annotations_instance` PNG.

    The release stores the instance class (1..100, ADE20K_INSTANCE_CATEGORIES order) in the red
    channel and the instance number (0 = none) in the green channel.
    """
    classes, numbers = ins_seg[..., 0], ins_seg[..., 1]
    out = []
    for number in np.unique(numbers):
        if number == 0:
            continue
        mask = numbers == number
        values = np.unique(classes[mask])
        if len(values) != 1:
            raise ValueError(
                f"{source}: instance {int(number)} mixes class values {values.tolist()}"
            )
        value = int(values[0])
        if value not in _ADE20K_INSTANCE_CLASS_TO_LABEL:
            raise ValueError(
                f"{source}: instance {int(number)} has class value {value}, outside 1..100"
            )
        out.append((_ADE20K_INSTANCE_CLASS_TO_LABEL[value], mask))
    return out


def ade20k_panoptic_from_annotations(
    sem_seg: np.ndarray, ins_seg: np.ndarray, source: str = "<array>"
) -> tuple[np.ndarray, list[dict]]:
    """Merge a raw semantic map and an instance PNG into a COCO panoptic PNG + segments_info.

    sem_seg: (H, W) uint8 raw SceneParsing labels (0 = unlabeled, k = class k).
    ins_seg: (H, W, 3) uint8 `annotations_instance` image.
    Returns the (H, W, 3) uint8 panoptic image (segment id = R + 256 G + 256^2 B) and the
    segments, whose category_id is the 150-class label.

    Stuff classes come from the semantic map and are painted first, then every instance is
    painted over them, as in the official script. Unlike it, segment ids are numbered 1, 2, ...
    in paint order (reproducible; the official draws random colours), and area/bbox are measured
    on the final map, dropping a stuff segment that instances covered completely: the panoptic
    evaluator counts areas from the PNG and rejects json segments absent from it.
    """
    if sem_seg.shape != ins_seg.shape[:2]:
        raise ValueError(
            f"{source}: semantic map {sem_seg.shape} and instance map {ins_seg.shape[:2]} differ"
        )
    labels = shift_ade20k_labels(sem_seg)
    ids = np.zeros(sem_seg.shape, dtype=np.int32)
    categories = {}
    next_id = 1
    for label in np.unique(labels):
        if label == 255 or int(label) in _ADE20K_THING_LABELS:
            continue
        ids[labels == label] = next_id
        categories[next_id] = int(label)
        next_id += 1
    for label, mask in _ade20k_instances(ins_seg, source):
        ids[mask] = next_id
        categories[next_id] = label
        next_id += 1

    segments = []
    for segment_id, label in categories.items():
        mask = ids == segment_id
        if not mask.any():
            continue
        segments.append(
            {
                "id": segment_id,
                "category_id": label,
                "area": int(mask.sum()),
                "bbox": _bbox_xywh(mask),
                "iscrowd": 0,
            }
        )
    pan = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    return pan, segments


def ade20k_instances_from_annotation(
    ins_seg: np.ndarray, image_id: str, first_annotation_id: int = 1, source: str = "<array>"
) -> list[dict]:
    """COCO instance annotations (RLE masks) for one `annotations_instance` PNG.

    category_id is the instance's 150-class label, the id space the official
    `ade20k_instance_*.json` shares with the panoptic json. Annotation ids count up from
    `first_annotation_id` in instance-number order.
    """
    import pycocotools.mask as mask_util

    annotations = []
    for k, (label, mask) in enumerate(_ade20k_instances(ins_seg, source)):
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        annotations.append(
            {
                "id": first_annotation_id + k,
                "image_id": image_id,
                "category_id": label,
                "iscrowd": 0,
                "bbox": _bbox_xywh(mask),
                "segmentation": rle,
                "area": int(mask.sum()),
            }
        )
    return annotations


def _ade20k_image_entries(image_dir: Path) -> list[dict]:
    _require(image_dir, "ADE20K image folder")
    entries = []
    for path in sorted(image_dir.glob("*.jpg")):
        with Image.open(path) as im:  # reads the header only
            width, height = im.size
        entries.append({"id": path.stem, "file_name": path.name, "width": width, "height": height})
    return entries


def prepare_ade20k_panoptic(
    image_dir: str | os.PathLike,
    semantic_dir: str | os.PathLike,
    instance_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    output_json: str | os.PathLike,
) -> int:
    """Write `ade20k_panoptic_{split}/` PNGs and `ade20k_panoptic_{split}.json` for one split.

    Inputs are the raw `images/`, `annotations/` (not the shifted copy) and
    `annotations_instance/` folders of that split. Returns the number of images.
    """
    image_dir, semantic_dir, instance_dir = Path(image_dir), Path(semantic_dir), Path(instance_dir)
    _require(semantic_dir, "ADE20K raw annotation folder")
    _require(instance_dir, "ADE20K annotations_instance folder")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    images = _ade20k_image_entries(image_dir)
    annotations = []
    for image in images:
        stem = image["id"]
        sem_path, ins_path = semantic_dir / f"{stem}.png", instance_dir / f"{stem}.png"
        sem = _read_array(sem_path, np.uint8, 2, "ADE20K annotation")
        ins = _read_array(ins_path, np.uint8, 3, "ADE20K instance annotation")[..., :3]
        pan, segments = ade20k_panoptic_from_annotations(sem, ins, source=str(ins_path))
        Image.fromarray(pan).save(output_dir / f"{stem}.png")
        annotations.append(
            {"image_id": stem, "file_name": f"{stem}.png", "segments_info": segments}
        )
    categories = [dict(c, color=list(c["color"])) for c in ADE20K_150_CATEGORIES]
    _write_json(
        {"images": images, "annotations": annotations, "categories": categories}, output_json
    )
    return len(images)


def prepare_ade20k_instance(
    image_dir: str | os.PathLike,
    instance_dir: str | os.PathLike,
    output_json: str | os.PathLike,
) -> int:
    """Write `ade20k_instance_{split}.json` (COCO format) for one split; returns #images."""
    image_dir, instance_dir = Path(image_dir), Path(instance_dir)
    _require(instance_dir, "ADE20K annotations_instance folder")
    images = _ade20k_image_entries(image_dir)
    annotations = []
    for image in images:
        ins_path = instance_dir / f"{image['id']}.png"
        ins = _read_array(ins_path, np.uint8, 3, "ADE20K instance annotation")[..., :3]
        annotations += ade20k_instances_from_annotation(
            ins, image["id"], len(annotations) + 1, source=str(ins_path)
        )
    categories = [{"id": c["id"], "name": c["name"]} for c in ADE20K_INSTANCE_CATEGORIES]
    _write_json(
        {"images": images, "annotations": annotations, "categories": categories}, output_json
    )
    return len(images)


# ------------------------------------------------------------------- semantic from panoptic
def semantic_from_panoptic_image(
    panoptic_rgb: np.ndarray, segments: Sequence[dict], id_map: dict[int, int], source: str = ""
) -> np.ndarray:
    """(H, W, 3) panoptic PNG -> (H, W) uint8 semantic map; unlisted segment ids -> 255."""
    if panoptic_rgb.ndim != 3 or panoptic_rgb.shape[2] < 3:
        raise ValueError(f"{source}: panoptic PNG must be (H, W, 3), got {panoptic_rgb.shape}")
    ids = rgb2id(panoptic_rgb[..., :3].astype(np.int64))
    out = np.full(ids.shape, 255, dtype=np.uint8)
    for seg in segments:
        if seg["category_id"] not in id_map:
            raise ValueError(f"{source}: unknown category_id {seg['category_id']}")
        out[ids == seg["id"]] = id_map[seg["category_id"]]
    return out


def _semantic_from_panoptic_file(src: str, dst: str, segments: list[dict], id_map, source: str):
    pan = _read_array(src, np.uint8, 3, "panoptic PNG")
    Image.fromarray(semantic_from_panoptic_image(pan, segments, id_map, source)).save(dst)


def semantic_from_panoptic(
    panoptic_json: str | os.PathLike,
    panoptic_root: str | os.PathLike,
    sem_seg_root: str | os.PathLike,
    categories: Sequence[dict],
    num_workers: int | None = None,
) -> int:
    """Write one semantic PNG per panoptic annotation; returns the number written.

    The semantic label of a category is its position in `categories` (dicts with "id"), over
    things and stuff alike; pixels of no listed segment become 255. `num_workers=None` uses a
    process pool only when there are enough images to repay starting one; 0 forces serial.
    """
    if len(categories) > 255:
        raise ValueError(f"{len(categories)} categories do not fit a uint8 map with 255 as void")
    _require(panoptic_json, "panoptic json")
    _require(panoptic_root, "panoptic PNG folder")
    try:
        with open(panoptic_json) as f:
            annotations = json.load(f)["annotations"]
    except (json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"{panoptic_json}: not a COCO panoptic json ({e!r})") from e
    id_map = {c["id"]: i for i, c in enumerate(categories)}
    # Validate ids up front so the error names the json and image instead of a worker trace.
    for ann in annotations:
        for seg in ann["segments_info"]:
            if seg["category_id"] not in id_map:
                raise ValueError(
                    f"unknown category_id {seg['category_id']} in image {ann['image_id']!r} "
                    f"({ann['file_name']}) of {panoptic_json}"
                )
    os.makedirs(sem_seg_root, exist_ok=True)
    jobs = [
        (
            os.path.join(panoptic_root, ann["file_name"]),
            os.path.join(sem_seg_root, ann["file_name"]),
            ann["segments_info"],
            id_map,
            f"{ann['file_name']} of {panoptic_json}",
        )
        for ann in annotations
    ]
    if num_workers is None:
        num_workers = min(os.cpu_count() or 1, 8) if len(jobs) >= 256 else 0
    if num_workers > 1:
        # The default start method (fork on Linux) keeps workers cheap: they only run numpy/PIL.
        with mp.get_context().Pool(num_workers) as pool:
            pool.starmap(_semantic_from_panoptic_file, jobs, chunksize=64)
    else:
        for job in jobs:
            _semantic_from_panoptic_file(*job)
    return len(jobs)


# ------------------------------------------------------------------------- COCO-Stuff-10k
# The two releases of COCO-Stuff-10k number the classes of the `S` label map differently
# (nightrome/cocostuff10k README, "Label Names & Indices"):
#   v1.0: 1 = unlabeled, 2..81 = the 80 annotated thing classes, 82..172 = the 91 stuff classes;
#   v1.1: 0 = unlabeled, 1..182 = the COCO ids (91 thing ids, 11 of them never annotated, then
#         the 91 stuff ids 92..182).
# Both orders agree with COCO_STUFF_171_CATEGORIES (sorted by COCO id), whose position is the
# detectron2 label, so v1.0 needs only a shift by 2 while v1.1 needs the id -> position table.
# MaskFormer's official script reads v1.0; v1.1 is the release the dataset site now serves.
COCO_STUFF_10K_VERSIONS = ("1.0", "1.1")


def _coco_stuff_10k_lut(version: str) -> np.ndarray:
    """Lookup table raw `S` value -> uint8 label; it has one entry per legal raw value."""
    if version == "1.0":
        lut = np.full(173, 255, dtype=np.uint8)  # 0 is never written by v1.0; checked below
        lut[2:] = np.arange(171, dtype=np.uint8)
        return lut
    if version == "1.1":
        lut = np.full(183, 255, dtype=np.uint8)  # unlabeled and the 11 unannotated thing ids
        for label, cat in enumerate(COCO_STUFF_171_CATEGORIES):
            lut[cat["id"]] = label
        return lut
    raise ValueError(
        f"unknown COCO-Stuff-10k version {version!r}; expected one of {COCO_STUFF_10K_VERSIONS}"
    )


def coco_stuff_10k_label_map(
    label_S: np.ndarray, version: str = "1.0", source: str = "<array>"
) -> np.ndarray:
    """COCO-Stuff-10k `S` label map (H, W) -> detectron2 labels, uint8 (H, W).

    The label of a class is its index in COCO_STUFF_171_CATEGORIES (0..170); unlabeled pixels,
    and in v1.1 the 11 COCO thing ids that have no annotations, become 255. `label_S` may have
    any integer or float dtype (MATLAB stores doubles) but must hold whole numbers that the
    release can contain: 1..172 for v1.0 (0 there means the file is not v1.0), 0..182 for v1.1.
    """
    lut = _coco_stuff_10k_lut(version)
    label_S = np.asarray(label_S)
    if label_S.ndim != 2:
        raise ValueError(f"{source}: label map S must be 2-D (H, W), got shape {label_S.shape}")
    if not (np.issubdtype(label_S.dtype, np.integer) or np.issubdtype(label_S.dtype, np.floating)):
        raise ValueError(f"{source}: label map S must be numeric, got dtype {label_S.dtype}")
    if label_S.size == 0:
        raise ValueError(f"{source}: label map S is empty, shape {label_S.shape}")
    if np.issubdtype(label_S.dtype, np.floating) and not np.all(np.mod(label_S, 1) == 0):
        raise ValueError(f"{source}: label map S ({label_S.dtype}) holds non-integer values")
    low = 1 if version == "1.0" else 0
    lo, hi = label_S.min(), label_S.max()
    if lo < low or hi >= len(lut):
        raise ValueError(
            f"{source}: label map S holds values {int(lo)}..{int(hi)}, outside "
            f"{low}..{len(lut) - 1} of COCO-Stuff-10k v{version}"
            + (
                " (0 is 'unlabeled' in release 1.1: pass version '1.1', --release 1.1 in the tool)"
                if version == "1.0" and lo == 0
                else ""
            )
        )
    return lut[label_S.astype(np.int64)]


def read_coco_stuff_10k_mat(path: str | os.PathLike) -> np.ndarray:
    """Read the label map `S` (H, W) from a COCO-Stuff-10k annotation `.mat` file.

    Both MATLAB formats occur: classic (v5, read with scipy) and v7.3 (HDF5; the official script
    reads it with h5py). HDF5 stores MATLAB's column-major array, so it comes back transposed.
    """
    import scipy.io

    _require(path, "COCO-Stuff-10k annotation")
    try:
        mat = scipy.io.loadmat(path, variable_names=["S"])
    except NotImplementedError:  # scipy's answer to a v7.3 (HDF5) file
        try:
            import h5py
        except ImportError as e:
            raise ValueError(
                f"{path} is a MATLAB v7.3 (HDF5) file; reading it needs h5py (pip install h5py)"
            ) from e
        with h5py.File(path, "r") as f:
            if "S" not in f:
                raise ValueError(f"{path}: no variable 'S' (has {sorted(f.keys())})") from None
            return np.asarray(f["S"]).T
    except Exception as e:  # scipy raises many different types on junk; name the file
        raise ValueError(f"{path}: not a readable MATLAB file ({type(e).__name__}: {e})") from e
    if "S" not in mat:
        # Only "S" was loaded (the real files also carry captions etc.); list what is there.
        names = sorted(name for name, _, _ in scipy.io.whosmat(path))
        raise ValueError(f"{path}: no variable 'S' (has {names})")
    return mat["S"]


def _read_coco_stuff_10k_list(path: Path) -> list[str]:
    """Image names of an `imageLists/*.txt` (one per line, no extension; blank lines skipped)."""
    _require(path, "COCO-Stuff-10k image list")
    names = []
    for line in path.read_text().splitlines():
        name = line.strip()
        if name:
            names.append(name[: -len(".jpg")] if name.endswith(".jpg") else name)
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: lists some image names more than once")
    return names


def prepare_coco_stuff_10k_sem_seg(
    dataset_dir: str | os.PathLike,
    version: str = "1.0",
    splits: Sequence[str] = ("train", "test"),
) -> dict[str, int]:
    """Convert an unzipped cocostuff-10k release into detectron2's semantic layout.

    Reads `dataset_dir/imageLists/{split}.txt`, `images/{name}.jpg` and `annotations/{name}.mat`
    and writes `images_detectron2/{split}/{name}.jpg` (a byte copy) and
    `annotations_detectron2/{split}/{name}.png` (see :func:`coco_stuff_10k_label_map`), the
    layout `register_coco_stuff_10k` reads. `version` is the release ("1.0" as in the official
    script, or "1.1"). Every list is read before anything is written. Returns the count per split.
    """
    import shutil

    _coco_stuff_10k_lut(version)  # reject a bad version before touching the disk
    dataset_dir = Path(dataset_dir)
    _require(dataset_dir, "COCO-Stuff-10k folder")
    lists = {s: _read_coco_stuff_10k_list(dataset_dir / "imageLists" / f"{s}.txt") for s in splits}
    counts = {}
    for split, names in lists.items():
        image_out = dataset_dir / "images_detectron2" / split
        label_out = dataset_dir / "annotations_detectron2" / split
        image_out.mkdir(parents=True, exist_ok=True)
        label_out.mkdir(parents=True, exist_ok=True)
        for name in names:
            image_path = dataset_dir / "images" / f"{name}.jpg"
            mat_path = dataset_dir / "annotations" / f"{name}.mat"
            _require(image_path, f"COCO-Stuff-10k image (listed in imageLists/{split}.txt)")
            with Image.open(image_path) as im:  # reads the header only
                width, height = im.size
            label = coco_stuff_10k_label_map(
                read_coco_stuff_10k_mat(mat_path), version, source=str(mat_path)
            )
            if label.shape != (height, width):
                raise ValueError(
                    f"{mat_path}: label map S is {label.shape} (H, W) but {image_path} is "
                    f"{(height, width)}"
                )
            shutil.copyfile(image_path, image_out / f"{name}.jpg")
            Image.fromarray(label).save(label_out / f"{name}.png")
        counts[split] = len(names)
    return counts


# ----------------------------------------------------------------------------- Pascal Context
# Pascal Context ships one 459-class label map per PASCAL VOC 2010 train/val image
# (trainval.tar.gz: trainval/<image id>.mat holding `LabelMap`, values = the ids of labels.txt;
# 0 never names a class). The 59-class benchmark keeps the 59 most frequent classes and ignores
# every other pixel. Its train/val split is VOC 2010's main split (4998 / 5105 images), so the
# default lists are ImageSets/Main/{split}.txt of the VOC release; the lists mmsegmentation
# writes (ImageSets/SegmentationContext/{split}.txt) or ov-seg's pascalcontext_val.txt hold the
# same ids and can be passed instead. The official ov-seg script converts the same .mat files;
# the Detail-API route (trainval_merged.json) gives the same 459 ids but needs a compiled extra
# package, so seg_zoo reads the .mat files only.
PASCAL_CONTEXT_NUM_459 = 459
__all__ += [
    "PASCAL_CONTEXT_DEFAULT_SPLIT_LISTS",
    "check_pascal_context_labels_txt",
    "pascal_context_59_label_map",
    "pascal_context_60_label_map",
    "prepare_pascal_context",
    "prepare_pascal_context_59",
    "read_pascal_context_mat",
]
PASCAL_CONTEXT_DEFAULT_SPLIT_LISTS = {
    "train": "ImageSets/Main/train.txt",
    "val": "ImageSets/Main/val.txt",
}


def _pascal_context_59_lut() -> np.ndarray:
    """Lookup table 459-class id (0..459) -> 59-class label, 255 for every other id."""
    from .datasets.categories.pascal_context import PASCAL_CONTEXT_59_CATEGORIES

    lut = np.full(PASCAL_CONTEXT_NUM_459 + 1, 255, dtype=np.uint8)
    for label, cat in enumerate(PASCAL_CONTEXT_59_CATEGORIES):
        lut[cat["id"]] = label
    return lut


def pascal_context_59_label_map(label_map: np.ndarray, source: str = "<array>") -> np.ndarray:
    """Pascal Context 459-class `LabelMap` (H, W) -> 59-class labels, uint8 (H, W).

    A class's label is its index in PASCAL_CONTEXT_59_CATEGORIES (0..58); the other 400 classes
    and 0 become 255 (ignore). Any integer or float dtype is accepted (MATLAB files may store
    doubles) as long as the values are whole numbers in 0..459.
    """
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise ValueError(f"{source}: LabelMap must be 2-D (H, W), got shape {label_map.shape}")
    is_int = np.issubdtype(label_map.dtype, np.integer)
    if not (is_int or np.issubdtype(label_map.dtype, np.floating)):
        raise ValueError(f"{source}: LabelMap must be numeric, got dtype {label_map.dtype}")
    if label_map.size == 0:
        raise ValueError(f"{source}: LabelMap is empty, shape {label_map.shape}")
    if not is_int and not np.all(np.mod(label_map, 1) == 0):
        raise ValueError(f"{source}: LabelMap ({label_map.dtype}) holds non-integer values")
    lo, hi = label_map.min(), label_map.max()
    if lo < 0 or hi > PASCAL_CONTEXT_NUM_459:
        raise ValueError(
            f"{source}: LabelMap holds values {int(lo)}..{int(hi)}, outside the "
            f"0..{PASCAL_CONTEXT_NUM_459} of Pascal Context's 459-class labels"
        )
    return _pascal_context_59_lut()[label_map.astype(np.int64)]


def pascal_context_60_label_map(label_59: np.ndarray) -> np.ndarray:
    """59-class labels -> the 60-class labels of mmsegmentation (and of the official Segmenter):
    0 = "background" (every pixel the 59-class maps ignore: unlabelled and the 400 rarer
    classes), class i of the 59 -> i + 1. Nothing is ignored."""
    label_59 = np.asarray(label_59)
    if label_59.dtype != np.uint8:
        raise ValueError(f"expected uint8 59-class labels, got dtype {label_59.dtype}")
    bad = (label_59 > 58) & (label_59 != 255)
    if bad.any():
        raise ValueError(f"59-class labels must be 0..58 or 255, got {int(label_59[bad][0])}")
    return np.where(label_59 == 255, 0, label_59 + 1).astype(np.uint8)


def read_pascal_context_mat(path: str | os.PathLike) -> np.ndarray:
    """Read the 459-class `LabelMap` (H, W) from a Pascal Context `trainval/*.mat` file."""
    import scipy.io

    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"missing Pascal Context label file: {path} (it comes from the Pascal Context "
            "release, trainval.tar.gz, unpacked into VOCdevkit/VOC2010/trainval)"
        )
    try:
        mat = scipy.io.loadmat(path, variable_names=["LabelMap"])
    except Exception as e:  # scipy raises many different types on junk; name the file
        raise ValueError(f"{path}: not a readable MATLAB file ({type(e).__name__}: {e})") from e
    if "LabelMap" not in mat:
        names = sorted(name for name, _, _ in scipy.io.whosmat(path))
        raise ValueError(f"{path}: no variable 'LabelMap' (has {names})")
    return mat["LabelMap"]


def check_pascal_context_labels_txt(path: str | os.PathLike) -> None:
    """Check that a release's `labels.txt` ("id: name" lines) numbers the 59 classes as we do.

    The id -> class table is data kept in seg_zoo; a release numbered differently would convert
    silently into wrong labels, so the conversion checks it whenever labels.txt is present.
    Names are compared without spaces or case ("potted plant" == "pottedplant").
    """
    from .datasets.categories.pascal_context import PASCAL_CONTEXT_59_CATEGORIES

    names = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        key, sep, name = line.partition(":")
        if not sep:  # blank or free text; a file without the 59 ids fails the check below
            continue
        if not key.strip().isdigit():
            raise ValueError(f"{path}:{lineno}: expected 'id: name', got {line!r}")
        names[int(key)] = name.strip()

    def norm(s: str) -> str:
        return s.replace(" ", "").lower()

    for cat in PASCAL_CONTEXT_59_CATEGORIES:
        found = names.get(cat["id"])
        if found is None or norm(found) != norm(cat["name"]):
            raise ValueError(
                f"{path}: id {cat['id']} is {found!r}, but seg_zoo's 59-class table "
                f"(seg_zoo/data/datasets/categories/pascal_context.py) expects {cat['name']!r}; "
                "this release numbers its classes differently"
            )


def _read_id_list(path: Path, what: str) -> list[str]:
    """Image ids of a split list: first column of each non-blank line, no folder or extension."""
    _require(path, what)
    ids = []
    for line in path.read_text().splitlines():
        if line.strip():
            ids.append(Path(line.split()[0]).stem)
    if not ids:
        raise ValueError(f"{path}: {what} lists no images")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: {what} lists some image ids more than once")
    return ids


def prepare_pascal_context(
    voc2010_dir: str | os.PathLike,
    splits: Sequence[str] = ("train", "val"),
    split_lists: dict[str, str | os.PathLike] | None = None,
) -> dict[str, int]:
    """Convert Pascal Context's 459-class `.mat` labels into 59- and 60-class PNGs.

    Reads, under `voc2010_dir` (VOCdevkit/VOC2010): the split lists (default
    PASCAL_CONTEXT_DEFAULT_SPLIT_LISTS; `split_lists` maps a split to another list, relative to
    `voc2010_dir` or absolute), `JPEGImages/{id}.jpg` (size check only) and `trainval/{id}.mat`;
    writes `annotations_detectron2/pc59_{split}/{id}.png` (see
    :func:`pascal_context_59_label_map`) and `annotations_detectron2/pc60_{split}/{id}.png` (see
    :func:`pascal_context_60_label_map`), the layout `register_pascal_context` reads. When
    `labels.txt` is present its numbering is checked first. Every list is read before anything
    is written. Returns the number of label maps written per split.
    """
    voc2010_dir = Path(voc2010_dir)
    _require(voc2010_dir, "VOCdevkit/VOC2010 folder")
    labels_txt = voc2010_dir / "labels.txt"
    if labels_txt.is_file():
        check_pascal_context_labels_txt(labels_txt)
    lists = dict(PASCAL_CONTEXT_DEFAULT_SPLIT_LISTS)
    lists.update(split_lists or {})
    ids = {}
    for split in splits:
        if split not in lists:
            raise ValueError(
                f"no image list for split {split!r}: known {sorted(lists)}; pass split_lists"
            )
        ids[split] = _read_id_list(voc2010_dir / lists[split], f"{split} image list")
    counts = {}
    for split, names in ids.items():
        out_dir = voc2010_dir / "annotations_detectron2" / f"pc59_{split}"
        out_dir_60 = voc2010_dir / "annotations_detectron2" / f"pc60_{split}"
        out_dir.mkdir(parents=True, exist_ok=True)
        out_dir_60.mkdir(parents=True, exist_ok=True)
        for name in names:
            image_path = voc2010_dir / "JPEGImages" / f"{name}.jpg"
            mat_path = voc2010_dir / "trainval" / f"{name}.mat"
            _require(image_path, f"VOC 2010 image (listed for split {split!r})")
            with Image.open(image_path) as im:  # reads the header only
                width, height = im.size
            label = pascal_context_59_label_map(read_pascal_context_mat(mat_path), str(mat_path))
            if label.shape != (height, width):
                raise ValueError(
                    f"{mat_path}: LabelMap is {label.shape} (H, W) but {image_path} is "
                    f"{(height, width)}"
                )
            Image.fromarray(label).save(out_dir / f"{name}.png")
            Image.fromarray(pascal_context_60_label_map(label)).save(out_dir_60 / f"{name}.png")
        counts[split] = len(names)
    return counts


# The earlier name (it wrote only the 59-class labels); kept so that existing callers still work.
prepare_pascal_context_59 = prepare_pascal_context
