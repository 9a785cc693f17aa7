"""COCO panoptic with semantic labels derived from panoptic, as Mask2Former registers it.

Registers ``coco_2017_{train,val}_panoptic_with_sem_seg`` under ``$DETECTRON2_DATASETS/coco``:

- images: ``coco/{train,val}2017/*.jpg``
- panoptic PNGs + json: ``coco/panoptic_{train,val}2017/``, ``coco/annotations/panoptic_*.json``
- semantic PNGs: ``coco/panoptic_semseg_{train,val}2017/`` (one contiguous index over ALL 133
  categories, 255 = void; the format of Mask2Former's
  ``prepare_coco_semantic_annos_from_panoptic_images.py``)
- instances json (for mask AP of a panoptic model): ``coco/annotations/instances_*.json``

Each dataset dict holds ``file_name``, ``image_id``, ``pan_seg_file_name``, ``sem_seg_file_name``
and ``segments_info`` whose ``category_id`` is already contiguous, with ``isthing`` added.

Contiguous ids follow Mask2Former's panoptic convention: one index over all categories in their
listed order, things and stuff together, so that the same index serves the per-pixel semantic
target and the mask classifier. ``stuff_*`` therefore lists every category and ``thing_*`` only
the things, with ``thing_dataset_id_to_contiguous_id`` pointing into the full list.

detectron2's own ``coco_2017_{train,val}_panoptic`` stay registered; like Mask2Former, only their
``thing_classes``/``thing_colors`` metadata are (re)set here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from detectron2.data import MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from ._paths import get_datasets_root, register_replacing, require_path

__all__ = [
    "panoptic_metadata_from_categories",
    "get_coco_panoptic_metadata",
    "load_coco_panoptic_json",
    "register_coco_panoptic_annos_sem_seg",
    "register_all_coco_panoptic_annos_sem_seg",
]

# name -> (panoptic_root, panoptic_json, sem_seg_root, image_root, instances_json), relative to
# the dataset root. The first two and the last two are the paths of detectron2's builtins.
_PREDEFINED_SPLITS_COCO_PANOPTIC = {
    "coco_2017_train_panoptic": (
        "coco/panoptic_train2017",
        "coco/annotations/panoptic_train2017.json",
        "coco/panoptic_semseg_train2017",
        "coco/train2017",
        "coco/annotations/instances_train2017.json",
    ),
    "coco_2017_val_panoptic": (
        "coco/panoptic_val2017",
        "coco/annotations/panoptic_val2017.json",
        "coco/panoptic_semseg_val2017",
        "coco/val2017",
        "coco/annotations/instances_val2017.json",
    ),
}

_COCO_HINT = (
    "COCO panoptic needs the official images and panoptic annotations, and semantic PNGs "
    "derived from them (Mask2Former's datasets/prepare_coco_semantic_annos_from_panoptic_images.py "
    "format: contiguous index over all 133 categories, 255 = void)."
)


def panoptic_metadata_from_categories(
    categories: Sequence[dict], things_only_in_thing_lists: bool = True
) -> dict:
    """Mask2Former-style panoptic metadata for COCO-style ``categories`` (json order kept).

    Each category needs ``id``, ``name``, ``isthing`` and ``color``. Every category, things
    included, gets a stuff entry: the semantic evaluator and the semantic targets use the single
    full index. ``things_only_in_thing_lists=False`` reproduces Mapillary Vistas' official
    metadata, whose ``thing_classes``/``thing_colors`` list every class; the id maps are the same
    either way.
    """
    listed = [c for c in categories if c["isthing"]] if things_only_in_thing_lists else categories
    return {
        "thing_classes": [c["name"] for c in listed],
        "thing_colors": [list(c["color"]) for c in listed],
        "stuff_classes": [c["name"] for c in categories],
        "stuff_colors": [list(c["color"]) for c in categories],
        "thing_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(categories) if c["isthing"]
        },
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
    }


def get_coco_panoptic_metadata() -> dict:
    """Metadata for COCO panoptic (133 categories) in Mask2Former's convention."""
    return panoptic_metadata_from_categories(COCO_CATEGORIES)


def load_coco_panoptic_json(
    json_file: str,
    image_dir: str,
    gt_dir: str,
    semseg_dir: str | None,
    meta: dict,
    *,
    dataset_name: str = "<unnamed>",
    root: str | None = None,
    hint: str | None = None,
) -> list[dict]:
    """Read a COCO panoptic json into detectron2 dicts (contiguous category ids, ``isthing``).

    Args:
        json_file: panoptic json (``annotations`` with ``file_name`` + ``segments_info``).
        image_dir: folder of the images.
        gt_dir: folder of the panoptic PNGs.
        semseg_dir: folder of semantic PNGs with the same names as the panoptic ones; None to
            leave ``sem_seg_file_name`` out of the dicts.
        meta: holds ``thing_dataset_id_to_contiguous_id`` and
            ``stuff_dataset_id_to_contiguous_id``.
        dataset_name, root, hint: only used to make error messages specific.

    Raises:
        FileNotFoundError: a folder, the json, or a listed image is missing.
        ValueError: a segment's category_id is not among the known categories.
    """
    root = get_datasets_root(root)
    ctx = dict(dataset_name=dataset_name, root=root, hint=hint)
    require_path(json_file, what="panoptic json", is_dir=False, **ctx)
    require_path(image_dir, what="image folder", is_dir=True, **ctx)
    require_path(gt_dir, what="panoptic PNG folder", is_dir=True, **ctx)
    if semseg_dir is not None:
        require_path(semseg_dir, what="semantic PNG folder", is_dir=True, **ctx)

    thing_map = meta["thing_dataset_id_to_contiguous_id"]
    stuff_map = meta["stuff_dataset_id_to_contiguous_id"]
    with open(json_file) as f:
        json_info = json.load(f)

    # The json's image entries name the image files; fall back to COCO's "same stem, .jpg" rule
    # for jsons without them.
    image_files = {int(im["id"]): im["file_name"] for im in json_info.get("images", [])}

    ret = []
    for ann in json_info["annotations"]:
        image_id = int(ann["image_id"])
        image_name = image_files.get(image_id, os.path.splitext(ann["file_name"])[0] + ".jpg")
        image_file = os.path.join(image_dir, image_name)
        if not os.path.isfile(image_file):
            raise FileNotFoundError(
                f"Dataset '{dataset_name}': image {image_file} (image_id {image_id}), listed in "
                f"{json_file}, does not exist."
            )
        segments_info = []
        for seg in ann["segments_info"]:
            seg = dict(seg)
            dataset_id = seg["category_id"]
            if dataset_id in thing_map:
                seg["category_id"] = thing_map[dataset_id]
                seg["isthing"] = True
            elif dataset_id in stuff_map:
                seg["category_id"] = stuff_map[dataset_id]
                seg["isthing"] = False
            else:
                raise ValueError(
                    f"Dataset '{dataset_name}': segment {seg.get('id')} of image "
                    f"{ann['file_name']} (image_id {image_id}) in {json_file} has category_id "
                    f"{dataset_id}, which is not a known category (known ids: "
                    f"{sorted(stuff_map)})."
                )
            segments_info.append(seg)
        record = {
            "file_name": image_file,
            "image_id": image_id,
            "pan_seg_file_name": os.path.join(gt_dir, ann["file_name"]),
            "segments_info": segments_info,
        }
        if semseg_dir is not None:
            record["sem_seg_file_name"] = os.path.join(semseg_dir, ann["file_name"])
        ret.append(record)
    if not ret:
        raise ValueError(f"Dataset '{dataset_name}': {json_file} lists no annotations.")
    return ret


def register_coco_panoptic_annos_sem_seg(
    name: str,
    metadata: dict,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: str,
    instances_json: str,
    *,
    root: str | None = None,
    hint: str | None = None,
) -> None:
    """Register ``name + "_with_sem_seg"``: panoptic dicts that also carry ``sem_seg_file_name``.

    ``name`` is the plain panoptic dataset (e.g. detectron2's ``coco_2017_train_panoptic``); its
    ``thing_classes``/``thing_colors`` metadata are reset to ``metadata``'s, as Mask2Former does,
    and everything else about it is left alone. Calling this again replaces the
    ``_with_sem_seg`` registration. ``root`` and ``hint`` only feed error messages.
    """
    base_meta = MetadataCatalog.get(name)
    for key in ("thing_classes", "thing_colors"):
        # Metadata.set refuses to change a key, so drop the old value first.
        if hasattr(base_meta, key):
            delattr(base_meta, key)
    base_meta.set(thing_classes=metadata["thing_classes"], thing_colors=metadata["thing_colors"])

    semantic_name = name + "_with_sem_seg"
    register_replacing(
        semantic_name,
        lambda: load_coco_panoptic_json(
            panoptic_json,
            image_root,
            panoptic_root,
            sem_seg_root,
            metadata,
            dataset_name=semantic_name,
            root=root,
            hint=hint,
        ),
        sem_seg_root=sem_seg_root,
        panoptic_root=panoptic_root,
        image_root=image_root,
        panoptic_json=panoptic_json,
        json_file=instances_json,
        evaluator_type="coco_panoptic_seg",
        ignore_label=255,
        label_divisor=1000,
        **metadata,
    )


def register_all_coco_panoptic_annos_sem_seg(root: str | None = None) -> None:
    """Register ``coco_2017_{train,val}_panoptic_with_sem_seg`` under ``root/coco``."""
    root = get_datasets_root(root)
    for name, (
        pan_root,
        pan_json,
        sem_root,
        image_root,
        inst_json,
    ) in _PREDEFINED_SPLITS_COCO_PANOPTIC.items():
        register_coco_panoptic_annos_sem_seg(
            name,
            get_coco_panoptic_metadata(),
            os.path.join(root, image_root),
            os.path.join(root, pan_root),
            os.path.join(root, pan_json),
            os.path.join(root, sem_root),
            os.path.join(root, inst_json),
            root=root,
            hint=_COCO_HINT,
        )


register_all_coco_panoptic_annos_sem_seg()
