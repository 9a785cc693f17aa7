"""A small synthetic scene dataset written in real on-disk formats, and its registrations.

No real dataset can be downloaded where seg_zoo is developed, so this generator writes scenes
that detectron2's loaders, Mask2Former-style mappers and detectron2's evaluators read unchanged.
Scenes are learnable by a tiny model: three textured stuff classes split the background along wavy
boundaries, and 1-6 things of four shape/colour families are drawn over it with occlusion, varied
size, colour jitter and noise. A 1-2 px outline around every thing is left unlabeled (255 / void),
as annotators do, so ignore-label paths are exercised. Image width and height are each drawn from
96-160 px so resize and padding paths are exercised. Every image has its own RNG seeded from
(seed, split, index), so the same arguments give byte-identical files.

Layout under ``<root>/seg_zoo_synthetic/`` (``<id>`` is the image id, ``%06d``; train ids are
1..N, val ids 100001..100000+N)::

    categories.json                    COCO-style categories (id, name, isthing, color,
                                       supercategory); non-contiguous ids
    images/{train,val}/<id>.jpg        RGB JPEG, quality 95
    sem_seg/{train,val}/<id>.png       uint8, contiguous index over all categories, 255 = void
                                       (ADE20K-detectron2 semantic format)
    panoptic_{train,val}/<id>.png      COCO panoptic PNG (segment id = R + 256 G + 256^2 B,
                                       0 = void)
    panoptic_semseg_{train,val}/<id>.png
                                       semantic PNG computed from the panoptic PNG + json (the
                                       format of Mask2Former's COCO prepare script)
    annotations/panoptic_{train,val}.json
                                       COCO panoptic json (images, annotations with
                                       segments_info, categories)
    annotations/instances_{train,val}.json
                                       COCO instance json of the thing segments (compressed RLE,
                                       category_id = dataset id; thing categories only)
    cityscapes/leftImg8bit/{train,val}/<city>/<city>_<id>_000019_leftImg8bit.png
    cityscapes/gtFine/{train,val}/<city>/<city>_<id>_000019_gtFine_{labelIds,labelTrainIds,
                                       instanceIds}.png and ..._gtFine_polygons.json
                                       the same scenes in Cityscapes' format (city "synthtown" for
                                       train, "synthville" for val), classes mapped onto
                                       Cityscapes labels by CITYSCAPES_LABELS; with
                                       DETECTRON2_DATASETS=<root>/seg_zoo_synthetic detectron2's
                                       builtin cityscapes_fine_* datasets load it
    .stamp.json                        generator version + arguments; generation is skipped when
                                       they are unchanged

Contiguous ids follow Mask2Former's panoptic convention (one index over all categories in json
order); see :mod:`.register_coco_panoptic_annos_semseg`.

Registered names (paths bound to ``$DETECTRON2_DATASETS``, checked when loaded):
``synthetic_sem_seg_{train,val}``, ``synthetic_panoptic_{train,val}``,
``synthetic_panoptic_{train,val}_with_sem_seg``, ``synthetic_instance_{train,val}``.
"""

from __future__ import annotations

import json
import os
import shutil

import cv2
import numpy as np
from detectron2.data.datasets import load_coco_json, load_sem_seg
from panopticapi.utils import id2rgb
from PIL import Image
from pycocotools import mask as mask_util

from ..prepare import semantic_from_panoptic_image
from ._paths import get_datasets_root, register_replacing, require_path
from .register_coco_panoptic_annos_semseg import (
    load_coco_panoptic_json,
    panoptic_metadata_from_categories,
    register_coco_panoptic_annos_sem_seg,
)

__all__ = [
    "SYNTHETIC_DIRNAME",
    "SYNTHETIC_CATEGORIES",
    "GENERATOR_VERSION",
    "IMAGE_SIZE_RANGE",
    "VAL_IMAGE_ID_OFFSET",
    "CITYSCAPES_LABELS",
    "CITYSCAPES_CITIES",
    "synthetic_dir",
    "get_synthetic_metadata",
    "render_scene",
    "generate_synthetic_dataset",
    "register_all_synthetic",
]

# Bump whenever the generated files change, so that existing copies are regenerated.
GENERATOR_VERSION = 1
SYNTHETIC_DIRNAME = "seg_zoo_synthetic"
SPLITS = ("train", "val")
VAL_IMAGE_ID_OFFSET = 100000
# Inclusive range for both width and height.
IMAGE_SIZE_RANGE = (96, 160)
MAX_INSTANCES = 6
# Things whose labeled area ends up below this are dropped (their pixels become void).
MIN_INSTANCE_AREA = 20
IGNORE_LABEL = 255

# Non-contiguous ids on purpose, so that every dataset-id -> contiguous-id mapping is exercised.
# `color` is the visualization colour and also the centre of the rendered colour family.
SYNTHETIC_CATEGORIES = [
    {"id": 1, "name": "circle", "isthing": 1, "color": [210, 40, 40], "supercategory": "shape"},
    {"id": 2, "name": "square", "isthing": 1, "color": [230, 200, 30], "supercategory": "shape"},
    {"id": 4, "name": "triangle", "isthing": 1, "color": [140, 50, 190], "supercategory": "shape"},
    {"id": 7, "name": "cross", "isthing": 1, "color": [240, 240, 240], "supercategory": "shape"},
    {"id": 10, "name": "sky", "isthing": 0, "color": [135, 190, 240], "supercategory": "scene"},
    {"id": 11, "name": "grass", "isthing": 0, "color": [60, 150, 50], "supercategory": "scene"},
    {"id": 12, "name": "water", "isthing": 0, "color": [20, 80, 120], "supercategory": "scene"},
]
_THINGS = [c for c in SYNTHETIC_CATEGORIES if c["isthing"]]

# Synthetic category id -> (Cityscapes label name, labelId, trainId), facts from
# cityscapesscripts.helpers.labels. Things go to Cityscapes classes with instances; Cityscapes has
# no water, so it stands in for "road" (another flat class). Void is "unlabeled" (0, trainId 255).
CITYSCAPES_LABELS = {
    1: ("car", 26, 13),
    2: ("truck", 27, 14),
    4: ("person", 24, 11),
    7: ("bicycle", 33, 18),
    10: ("sky", 23, 10),
    11: ("terrain", 22, 9),
    12: ("road", 7, 0),
}
CITYSCAPES_VOID = ("unlabeled", 0, 255)
CITYSCAPES_CITIES = {"train": "synthtown", "val": "synthville"}
_STUFF = [c for c in SYNTHETIC_CATEGORIES if not c["isthing"]]


def synthetic_dir(root: str | None = None) -> str:
    """The dataset folder for a root: ``<root>/seg_zoo_synthetic``, or ``root`` itself if it is one.

    Pointing ``$DETECTRON2_DATASETS`` at the synthetic folder is how detectron2's builtin
    ``cityscapes_fine_*`` datasets find its ``cityscapes/`` tree; accepting that folder as a root
    keeps the synthetic registrations valid under the same setting. Decided by name only, so
    no disk access happens at import.
    """
    root = get_datasets_root(root)
    if os.path.basename(os.path.normpath(root)) == SYNTHETIC_DIRNAME:
        return root
    return os.path.join(root, SYNTHETIC_DIRNAME)


def get_synthetic_metadata() -> dict:
    """Panoptic metadata (Mask2Former convention) for :data:`SYNTHETIC_CATEGORIES`."""
    return panoptic_metadata_from_categories(SYNTHETIC_CATEGORIES)


def semantic_from_panoptic_file(
    panoptic_png: str, segments_info: list[dict], dataset_id_to_contiguous_id: dict[int, int]
) -> np.ndarray:
    """Semantic map (H, W) uint8 read back from a written panoptic PNG (255 = no segment),
    through the same function as tools/prepare_coco_semantic_annos_from_panoptic_images.py."""
    rgb = np.asarray(Image.open(panoptic_png).convert("RGB"))
    return semantic_from_panoptic_image(
        rgb, segments_info, dataset_id_to_contiguous_id, panoptic_png
    )


# ----------------------------------------------------------------------------- rendering


def _stuff_texture(name: str, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray):
    """(H, W, 3) float texture for a stuff class: colour plus a class-specific pattern."""
    base = np.array(next(c["color"] for c in _STUFF if c["name"] == name), dtype=np.float32)
    base = base + rng.uniform(-12, 12, size=3)
    h, w = yy.shape
    if name == "sky":
        # Smooth: brighter towards the top of the image, little noise.
        pattern = (1.0 - yy / h)[..., None] * np.array([25.0, 25.0, 10.0])
        noise = rng.normal(0, 2.0, size=(h, w, 1))
    elif name == "grass":
        # Vertical blades: high-frequency stripes and strong per-pixel noise.
        phase = rng.uniform(0, 2 * np.pi)
        stripes = np.sin(xx * 1.7 + np.sin(yy * 0.3) + phase)[..., None]
        pattern = stripes * np.array([10.0, 28.0, 8.0])
        noise = rng.normal(0, 10.0, size=(h, w, 1))
    else:  # water
        # Horizontal ripples.
        phase = rng.uniform(0, 2 * np.pi)
        ripples = np.sin(yy * 0.9 + 2.0 * np.sin(xx * 0.12) + phase)[..., None]
        pattern = ripples * np.array([10.0, 22.0, 30.0])
        noise = rng.normal(0, 3.0, size=(h, w, 1))
    return base + pattern + noise


def _shape_mask(kind: str, cx, cy, r, angle, yy, xx) -> np.ndarray:
    """Boolean mask (H, W) of a thing of shape ``kind`` centred at (cx, cy), size ``r``."""
    dx, dy = xx - cx, yy - cy
    if kind == "circle":
        return dx * dx + dy * dy <= r * r
    # The polygonal shapes are drawn in a frame rotated by `angle`.
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if kind == "square":
        half = 0.8 * r
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if kind == "cross":
        arm = r / 3.0
        return ((np.abs(u) <= r) & (np.abs(v) <= arm)) | ((np.abs(v) <= r) & (np.abs(u) <= arm))
    # triangle: vertices at angles -90, 30, 150 degrees on the circle of radius r.
    angles = np.deg2rad([-90.0, 30.0, 150.0])
    pts = np.stack([r * np.cos(angles), r * np.sin(angles)], axis=1)
    inside = np.ones_like(u, dtype=bool)
    for i in range(3):
        (x0, y0), (x1, y1) = pts[i], pts[(i + 1) % 3]
        # Vertices are in clockwise screen order, so the interior is where the cross product
        # of the edge with (point - start) is non-negative.
        inside &= (x1 - x0) * (v - y0) - (y1 - y0) * (u - x0) >= 0
    return inside


def render_scene(rng: np.random.Generator):
    """Draw one scene.

    Returns:
        image: (H, W, 3) uint8 RGB.
        pan_ids: (H, W) int64 panoptic segment ids, 0 = void.
        segments: list of {"id", "category_id"} (dataset ids) for the labeled segments, stuff
            first, then things in drawing order.
    """
    lo, hi = IMAGE_SIZE_RANGE
    h, w = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    # Background: 2 or 3 stuff classes stacked top to bottom, split by wavy boundaries.
    num_stuff = int(rng.integers(2, len(_STUFF) + 1))
    stuff = [_STUFF[i] for i in rng.choice(len(_STUFF), size=num_stuff, replace=False)]
    cuts = np.sort(rng.uniform(0.25, 0.75, size=num_stuff - 1)) * h
    band = np.zeros((h, w), dtype=np.int64)
    for cut in cuts:
        amp, period, phase = rng.uniform(2, 10), rng.uniform(30, 90), rng.uniform(0, 2 * np.pi)
        boundary = cut + amp * np.sin(2 * np.pi * xx[0] / period + phase)
        band += yy >= boundary[None, :]
    image = np.zeros((h, w, 3), dtype=np.float32)
    pan_ids = np.zeros((h, w), dtype=np.int64)
    for i, cat in enumerate(stuff):
        region = band == i
        image[region] = _stuff_texture(cat["name"], rng, yy, xx)[region]
        # Stuff segment ids: the category id times 1000 (unique, and clear when debugging).
        pan_ids[region] = cat["id"] * 1000

    # Things: later ones occlude earlier ones. Sizes are log-uniform so both small and large
    # objects are common.
    num_things = int(rng.integers(1, MAX_INSTANCES + 1))
    things = []
    for k in range(num_things):
        cat = _THINGS[int(rng.integers(len(_THINGS)))]
        r = float(np.exp(rng.uniform(np.log(5.0), np.log(0.4 * min(h, w)))))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        angle = rng.uniform(-0.35, 0.35)
        mask = _shape_mask(cat["name"], cx, cy, r, angle, yy, xx)
        colour = np.array(cat["color"], dtype=np.float32) + rng.uniform(-20, 20, size=3)
        # A gentle left-to-right shading so things are not flat colour.
        shade = 1.0 + 0.12 * (xx - cx) / max(r, 1.0)
        image[mask] = np.clip(colour[None, :] * shade[mask][:, None], 0, 255)
        seg_id = cat["id"] * 1000 + k + 1
        pan_ids[mask] = seg_id
        things.append({"id": seg_id, "category_id": cat["id"]})

    # Void outline: pixels on either side of a boundary that touches a thing (1 px each side).
    is_thing = pan_ids % 1000 != 0
    void = np.zeros((h, w), dtype=bool)
    for a, b in ((np.s_[:, :-1], np.s_[:, 1:]), (np.s_[:-1, :], np.s_[1:, :])):
        edge = (pan_ids[a] != pan_ids[b]) & (is_thing[a] | is_thing[b])
        void[a] |= edge
        void[b] |= edge
    pan_ids[void] = 0

    # Drop things that are hidden or too small to annotate; their pixels stay void.
    kept_things = []
    for seg in things:
        area = int((pan_ids == seg["id"]).sum())
        if area < MIN_INSTANCE_AREA:
            pan_ids[pan_ids == seg["id"]] = 0
        else:
            kept_things.append(seg)
    stuff_segments = [
        {"id": c["id"] * 1000, "category_id": c["id"]}
        for c in stuff
        if (pan_ids == c["id"] * 1000).any()
    ]

    # Sensor-like noise over the whole image.
    image += rng.normal(0, 4.0, size=image.shape)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image, pan_ids, stuff_segments + kept_things


def _bbox_xywh(mask: np.ndarray) -> list[int]:
    """COCO bbox [x, y, width, height] of a boolean mask (width counts both end pixels)."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    return [x0, y0, x1 - x0 + 1, y1 - y0 + 1]


# ----------------------------------------------------------------------------- writing


def _write_cityscapes(out, split, image_id, image, pan_ids, segments) -> None:
    """Write one scene in Cityscapes' layout and formats (see the module docstring)."""
    city = CITYSCAPES_CITIES[split]
    stem = f"{city}_{image_id:06d}_000019"
    img_dir = os.path.join(out, "cityscapes", "leftImg8bit", split, city)
    gt_dir = os.path.join(out, "cityscapes", "gtFine", split, city)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(gt_dir, exist_ok=True)
    h, w = pan_ids.shape
    label_ids = np.full((h, w), CITYSCAPES_VOID[1], dtype=np.uint8)
    train_ids = np.full((h, w), CITYSCAPES_VOID[2], dtype=np.uint8)
    # Cityscapes' instanceIds: labelId * 1000 + index for instances, the plain labelId elsewhere.
    instance_ids = np.full((h, w), CITYSCAPES_VOID[1], dtype=np.uint16)
    objects = []
    per_label = {}
    for seg in segments:
        name, label_id, train_id = CITYSCAPES_LABELS[seg["category_id"]]
        mask = pan_ids == seg["id"]
        label_ids[mask] = label_id
        train_ids[mask] = train_id
        if seg["id"] % 1000:  # a thing
            instance_ids[mask] = label_id * 1000 + per_label.get(label_id, 0)
            per_label[label_id] = per_label.get(label_id, 0) + 1
        else:
            instance_ids[mask] = label_id
        # One polygon per connected part of the visible (labeled) region; parts too thin to form
        # a polygon are left out, as an annotator would.
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        for contour in contours:
            if len(contour) >= 3:
                objects.append({"label": name, "polygon": contour[:, 0, :].tolist()})
    Image.fromarray(image).save(os.path.join(img_dir, stem + "_leftImg8bit.png"))
    Image.fromarray(label_ids).save(os.path.join(gt_dir, stem + "_gtFine_labelIds.png"))
    Image.fromarray(train_ids).save(os.path.join(gt_dir, stem + "_gtFine_labelTrainIds.png"))
    Image.fromarray(instance_ids).save(os.path.join(gt_dir, stem + "_gtFine_instanceIds.png"))
    _write_json(
        os.path.join(gt_dir, stem + "_gtFine_polygons.json"),
        {"imgHeight": h, "imgWidth": w, "objects": objects},
    )


def _image_id(split: str, index: int) -> int:
    return index + 1 + (VAL_IMAGE_ID_OFFSET if split == "val" else 0)


def _write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f)


def _generate_split(out: str, split: str, num: int, seed: int) -> None:
    meta = get_synthetic_metadata()
    full_map = meta["stuff_dataset_id_to_contiguous_id"]
    dirs = {
        "images": os.path.join(out, "images", split),
        "sem_seg": os.path.join(out, "sem_seg", split),
        "panoptic": os.path.join(out, f"panoptic_{split}"),
        "panoptic_semseg": os.path.join(out, f"panoptic_semseg_{split}"),
    }
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)

    images, pan_anns, inst_anns = [], [], []
    split_code = SPLITS.index(split)
    for index in range(num):
        rng = np.random.default_rng(np.random.SeedSequence([seed, split_code, index]))
        image, pan_ids, segments = render_scene(rng)
        h, w = pan_ids.shape
        image_id = _image_id(split, index)
        stem = f"{image_id:06d}"
        Image.fromarray(image).save(
            os.path.join(dirs["images"], stem + ".jpg"), quality=95, subsampling=0
        )

        sem = np.full((h, w), IGNORE_LABEL, dtype=np.uint8)
        segments_info = []
        for seg in segments:
            mask = pan_ids == seg["id"]
            sem[mask] = full_map[seg["category_id"]]
            info = {
                "id": seg["id"],
                "category_id": seg["category_id"],
                "iscrowd": 0,
                "bbox": _bbox_xywh(mask),
                "area": int(mask.sum()),
            }
            segments_info.append(info)
            if seg["category_id"] in meta["thing_dataset_id_to_contiguous_id"]:
                rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                inst_anns.append(
                    {
                        "id": len(inst_anns) + 1,
                        "image_id": image_id,
                        "category_id": seg["category_id"],
                        "segmentation": rle,
                        "area": info["area"],
                        "bbox": info["bbox"],
                        "iscrowd": 0,
                    }
                )
        Image.fromarray(sem).save(os.path.join(dirs["sem_seg"], stem + ".png"))
        pan_png = os.path.join(dirs["panoptic"], stem + ".png")
        Image.fromarray(id2rgb(pan_ids).astype(np.uint8)).save(pan_png)
        # Derived from the written PNG + json entries (not from `sem`), like the COCO prepare
        # script, so the two semantic trees check each other.
        Image.fromarray(semantic_from_panoptic_file(pan_png, segments_info, full_map)).save(
            os.path.join(dirs["panoptic_semseg"], stem + ".png")
        )
        _write_cityscapes(out, split, image_id, image, pan_ids, segments)
        images.append({"id": image_id, "file_name": stem + ".jpg", "height": h, "width": w})
        pan_anns.append(
            {"image_id": image_id, "file_name": stem + ".png", "segments_info": segments_info}
        )

    ann_dir = os.path.join(out, "annotations")
    os.makedirs(ann_dir, exist_ok=True)
    _write_json(
        os.path.join(ann_dir, f"panoptic_{split}.json"),
        {"images": images, "annotations": pan_anns, "categories": SYNTHETIC_CATEGORIES},
    )
    _write_json(
        os.path.join(ann_dir, f"instances_{split}.json"),
        {"images": images, "annotations": inst_anns, "categories": _THINGS},
    )


# Everything the generator writes; only these are removed when regenerating.
_GENERATED_ENTRIES = (
    "categories.json",
    "images",
    "sem_seg",
    "panoptic_train",
    "panoptic_val",
    "panoptic_semseg_train",
    "panoptic_semseg_val",
    "annotations",
    "cityscapes",
    ".stamp.json",
)


def stamp_is_current(stamp_path: str, stamp: dict) -> bool:
    """Whether ``stamp_path`` holds exactly ``stamp`` (a generator's version and arguments)."""
    if not os.path.isfile(stamp_path):
        return False
    with open(stamp_path) as f:
        try:
            return json.load(f) == stamp
        except json.JSONDecodeError:
            return False


def clear_generated(out: str, entries) -> None:
    """Remove the ``entries`` a generator writes under ``out`` (never other files there), then
    make sure ``out`` exists."""
    for entry in entries:
        path = os.path.join(out, entry)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
    os.makedirs(out, exist_ok=True)


def generator_parser(doc: str, unit: str, num_train: int, num_val: int):
    """The command line the generator tools share: --root, --num-train, --num-val, --seed,
    --force (``unit`` names what is counted: "images", "clips")."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(
        "--root",
        default=get_datasets_root(),
        help="dataset root (default: $DETECTRON2_DATASETS, else 'datasets')",
    )
    parser.add_argument(
        "--num-train", type=int, default=num_train, help=f"train {unit} (default {num_train})"
    )
    parser.add_argument(
        "--num-val", type=int, default=num_val, help=f"val {unit} (default {num_val})"
    )
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument(
        "--force", action="store_true", help="regenerate even if the stamp says up to date"
    )
    return parser


def run_generator(parser, args, generate, what: str, **kwargs) -> int:
    """``generate(root, num_train=, num_val=, seed=, force=, **kwargs)`` from ``args``; a bad
    argument exits through ``parser.error``. Prints where the data is and how long it took."""
    import time

    start = time.perf_counter()
    try:
        out = generate(
            args.root,
            num_train=args.num_train,
            num_val=args.num_val,
            seed=args.seed,
            force=args.force,
            **kwargs,
        )
    except ValueError as e:
        parser.error(str(e))
    print(f"{what} ready at {out} ({time.perf_counter() - start:.1f}s)")
    return 0


def generate_synthetic_dataset(
    root: str | None = None,
    num_train: int = 64,
    num_val: int = 16,
    seed: int = 0,
    force: bool = False,
) -> str:
    """Write the synthetic dataset to ``<root>/seg_zoo_synthetic`` and return that folder.

    ``root`` defaults to ``$DETECTRON2_DATASETS`` (else ``datasets``); a root that is itself
    named ``seg_zoo_synthetic`` is used as the dataset folder. Does nothing when the
    folder's stamp records the same generator version and arguments, unless ``force``.
    """
    for name, value, low in (("num_train", num_train, 1), ("num_val", num_val, 1)):
        if not isinstance(value, int) or not low <= value < VAL_IMAGE_ID_OFFSET:
            raise ValueError(f"{name} must be an int in [1, {VAL_IMAGE_ID_OFFSET}), got {value!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")

    out = synthetic_dir(root)
    stamp_path = os.path.join(out, ".stamp.json")
    stamp = {
        "generator_version": GENERATOR_VERSION,
        "num_train": num_train,
        "num_val": num_val,
        "seed": seed,
    }
    if not force and stamp_is_current(stamp_path, stamp):
        return out
    clear_generated(out, _GENERATED_ENTRIES)
    _write_json(os.path.join(out, "categories.json"), SYNTHETIC_CATEGORIES)
    _generate_split(out, "train", num_train, seed)
    _generate_split(out, "val", num_val, seed)
    # Written last: a half-written dataset has no stamp and is regenerated next time.
    _write_json(stamp_path, stamp)
    return out


# ----------------------------------------------------------------------------- registration

_HINT = "Create it with `python tools/make_synthetic_dataset.py` (see --help for --root)."


def _check_instances_json(json_file: str, dataset_name: str) -> None:
    """Fail clearly on annotations whose category_id is not a category of the json."""
    with open(json_file) as f:
        data = json.load(f)
    known = {c["id"] for c in data["categories"]}
    for ann in data["annotations"]:
        if ann["category_id"] not in known:
            raise ValueError(
                f"Dataset '{dataset_name}': annotation {ann.get('id')} of image_id "
                f"{ann['image_id']} in {json_file} has category_id {ann['category_id']}, which is "
                f"not among its categories {sorted(known)}."
            )


def register_all_synthetic(root: str | None = None) -> None:
    """Register every synthetic dataset under ``<root>/seg_zoo_synthetic``.

    ``root`` defaults to ``$DETECTRON2_DATASETS`` (else ``datasets``); a root that is itself
    named ``seg_zoo_synthetic`` is used as the dataset folder. Nothing is read here; a
    missing folder or file is reported when the dataset is loaded. Calling this again with
    another root replaces the registrations.
    """
    root = get_datasets_root(root)
    base = synthetic_dir(root)
    meta = get_synthetic_metadata()

    def need(path, name, what, is_dir):
        require_path(path, dataset_name=name, root=root, what=what, is_dir=is_dir, hint=_HINT)

    for split in SPLITS:
        image_root = os.path.join(base, "images", split)

        # Semantic segmentation, ADE20K-detectron2 style.
        name = f"synthetic_sem_seg_{split}"
        sem_root = os.path.join(base, "sem_seg", split)

        def load_sem(name=name, sem_root=sem_root, image_root=image_root):
            need(image_root, name, "image folder", True)
            need(sem_root, name, "semantic PNG folder", True)
            return load_sem_seg(sem_root, image_root, gt_ext="png", image_ext="jpg")

        register_replacing(
            name,
            load_sem,
            stuff_classes=meta["stuff_classes"],
            stuff_colors=meta["stuff_colors"],
            ignore_label=IGNORE_LABEL,
            evaluator_type="sem_seg",
            image_root=image_root,
            sem_seg_root=sem_root,
        )

        # Panoptic, plus the "_with_sem_seg" variant Mask2Former trains on.
        name = f"synthetic_panoptic_{split}"
        pan_root = os.path.join(base, f"panoptic_{split}")
        pan_json = os.path.join(base, "annotations", f"panoptic_{split}.json")
        pan_sem_root = os.path.join(base, f"panoptic_semseg_{split}")
        inst_json = os.path.join(base, "annotations", f"instances_{split}.json")
        register_replacing(
            name,
            lambda name=name, pan_json=pan_json, image_root=image_root, pan_root=pan_root: (
                load_coco_panoptic_json(
                    pan_json,
                    image_root,
                    pan_root,
                    None,
                    meta,
                    dataset_name=name,
                    root=root,
                    hint=_HINT,
                )
            ),
            panoptic_root=pan_root,
            image_root=image_root,
            panoptic_json=pan_json,
            json_file=inst_json,
            evaluator_type="coco_panoptic_seg",
            ignore_label=IGNORE_LABEL,
            label_divisor=1000,
            **meta,
        )
        register_coco_panoptic_annos_sem_seg(
            name,
            meta,
            image_root,
            pan_root,
            pan_json,
            pan_sem_root,
            inst_json,
            root=root,
            hint=_HINT,
        )

        # Instances: detectron2's COCO loader, thing classes only, contiguous 0..T-1.
        name = f"synthetic_instance_{split}"

        def load_instances(name=name, inst_json=inst_json, image_root=image_root):
            need(inst_json, name, "instances json", False)
            need(image_root, name, "image folder", True)
            _check_instances_json(inst_json, name)
            return load_coco_json(inst_json, image_root, name)

        register_replacing(
            name,
            load_instances,
            json_file=inst_json,
            image_root=image_root,
            evaluator_type="coco",
            thing_classes=[c["name"] for c in _THINGS],
            thing_colors=[list(c["color"]) for c in _THINGS],
            thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(_THINGS)},
        )


register_all_synthetic()
