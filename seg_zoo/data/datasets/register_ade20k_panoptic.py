"""ADE20K-150 panoptic segmentation: `ade20k_panoptic_train` / `ade20k_panoptic_val`.

Layout (official Mask2Former), under `$DETECTRON2_DATASETS`:
    ADEChallengeData2016/images/{training,validation}/*.jpg
    ADEChallengeData2016/ade20k_panoptic_{train,val}/*.png + ade20k_panoptic_{train,val}.json
        (tools/prepare_ade20k_pan_seg.py)
    ADEChallengeData2016/annotations_detectron2/{training,validation}/*.png
        (tools/prepare_ade20k_sem_seg.py)
    ADEChallengeData2016/ade20k_instance_{train,val}.json  (tools/prepare_ade20k_ins_seg.py; only
        named in the metadata, for the instance half of the panoptic evaluator)

All 150 classes appear in `stuff_*` (so the semantic evaluator can score the same predictions),
and the 100 thing classes appear again in `thing_*`, both indexed by the 150-class label.
"""

import copy
import json
import os
from collections.abc import Mapping

from ._paths import check_path, get_datasets_root, register_replacing
from .categories import ADE20K_150_CATEGORIES
from .register_coco_panoptic_annos_semseg import panoptic_metadata_from_categories

__all__ = [
    "ADE20K_PANOPTIC_SPLITS",
    "get_ade20k_panoptic_metadata",
    "load_panoptic_json_checked",
    "register_panoptic_splits",
    "register_all_ade20k_panoptic",
]

_PAN_PRODUCER = "tools/prepare_ade20k_pan_seg.py"
_SEM_PRODUCER = "tools/prepare_ade20k_sem_seg.py"

# name -> (image dir, panoptic PNG dir, panoptic json, semantic label dir, instance json)
ADE20K_PANOPTIC_SPLITS = {
    "ade20k_panoptic_train": (
        "ADEChallengeData2016/images/training",
        "ADEChallengeData2016/ade20k_panoptic_train",
        "ADEChallengeData2016/ade20k_panoptic_train.json",
        "ADEChallengeData2016/annotations_detectron2/training",
        "ADEChallengeData2016/ade20k_instance_train.json",
    ),
    "ade20k_panoptic_val": (
        "ADEChallengeData2016/images/validation",
        "ADEChallengeData2016/ade20k_panoptic_val",
        "ADEChallengeData2016/ade20k_panoptic_val.json",
        "ADEChallengeData2016/annotations_detectron2/validation",
        "ADEChallengeData2016/ade20k_instance_val.json",
    ),
}


def get_ade20k_panoptic_metadata() -> dict:
    """Metadata shared by both ADE20K panoptic splits (official key names)."""
    return panoptic_metadata_from_categories(ADE20K_150_CATEGORIES)


def load_panoptic_json_checked(
    dataset_name: str,
    root: str,
    json_file: str,
    image_dir: str,
    panoptic_dir: str,
    semseg_dir: str,
    meta: dict,
    producers: dict[str, str | None],
) -> list[dict]:
    """Read a COCO-format panoptic json into detectron2 dicts, with actionable errors.

    `producers` maps "panoptic" and "semantic" to the script that writes those files (or None
    for raw release files). Images are `<stem>.jpg`, labels `<stem>.png`, as in the official
    loaders. Only the first record's files are checked, as the official loaders do, so that
    registering 20k images does not cost 60k stat calls.
    """
    check_path(image_dir, dataset_name, root)
    check_path(panoptic_dir, dataset_name, root, producers.get("panoptic"))
    check_path(json_file, dataset_name, root, producers.get("panoptic"), is_dir=False)
    check_path(semseg_dir, dataset_name, root, producers.get("semantic"))
    try:
        with open(json_file) as f:
            json_info = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"Dataset '{dataset_name}': {json_file} is not valid JSON: {e}") from e
    if "annotations" not in json_info:
        raise ValueError(f"Dataset '{dataset_name}': {json_file} has no 'annotations' list")

    thing_map = meta["thing_dataset_id_to_contiguous_id"]
    stuff_map = meta["stuff_dataset_id_to_contiguous_id"]
    records = []
    for ann in json_info["annotations"]:
        stem = os.path.splitext(ann["file_name"])[0]
        segments = []
        for seg in ann["segments_info"]:
            cat = seg["category_id"]
            if cat not in stuff_map and cat not in thing_map:
                raise ValueError(
                    f"Dataset '{dataset_name}': segment {seg.get('id')} of image "
                    f"{ann['image_id']!r} ({ann['file_name']}) has unknown category_id {cat} "
                    f"in {json_file}"
                )
            seg = dict(seg)
            seg["isthing"] = cat in thing_map
            seg["category_id"] = thing_map[cat] if seg["isthing"] else stuff_map[cat]
            segments.append(seg)
        records.append(
            {
                "file_name": os.path.join(image_dir, stem + ".jpg"),
                "image_id": ann["image_id"],
                "pan_seg_file_name": os.path.join(panoptic_dir, ann["file_name"]),
                "sem_seg_file_name": os.path.join(semseg_dir, ann["file_name"]),
                "segments_info": segments,
            }
        )
    if not records:
        raise ValueError(f"Dataset '{dataset_name}': {json_file} lists no annotations")
    first = records[0]
    check_path(first["file_name"], dataset_name, root, is_dir=False)
    check_path(
        first["pan_seg_file_name"], dataset_name, root, producers.get("panoptic"), is_dir=False
    )
    check_path(
        first["sem_seg_file_name"], dataset_name, root, producers.get("semantic"), is_dir=False
    )
    return records


def register_panoptic_splits(
    root: str,
    splits: Mapping[str, tuple[str, ...]],
    metadata: dict,
    producers: dict[str, str | None],
    *,
    evaluator_type: str,
    ignore_label: int,
) -> None:
    """(Re-)register panoptic splits read by :func:`load_panoptic_json_checked`.

    Args:
        root: the dataset root; ``splits`` paths are relative to it.
        splits: name -> (image dir, panoptic PNG dir, panoptic json, semantic label dir[,
            instance json]). The optional instance json becomes ``json_file`` in the metadata
            (None without it), for the instance half of a panoptic evaluator.
        metadata: class lists and id maps (see :func:`panoptic_metadata_from_categories`);
            every split's catalog entry gets its own deep copy.
        producers: see :func:`load_panoptic_json_checked`.
        evaluator_type, ignore_label: copied into the metadata.
    """
    for name, rels in splits.items():
        image_dir, pan_dir, pan_json, sem_dir, *ins = (os.path.join(root, r) for r in rels)
        register_replacing(
            name,
            lambda n=name, j=pan_json, i=image_dir, p=pan_dir, s=sem_dir: (
                load_panoptic_json_checked(n, root, j, i, p, s, metadata, producers)
            ),
            panoptic_root=pan_dir,
            image_root=image_dir,
            panoptic_json=pan_json,
            json_file=ins[0] if ins else None,
            evaluator_type=evaluator_type,
            ignore_label=ignore_label,
            label_divisor=1000,
            **copy.deepcopy(metadata),
        )


def register_all_ade20k_panoptic(root: str) -> None:
    """(Re-)register the ADE20K panoptic splits with their data under `root`."""
    register_panoptic_splits(
        root,
        ADE20K_PANOPTIC_SPLITS,
        get_ade20k_panoptic_metadata(),
        {"panoptic": _PAN_PRODUCER, "semantic": _SEM_PRODUCER},
        evaluator_type="ade20k_panoptic_seg",
        ignore_label=255,
    )


register_all_ade20k_panoptic(get_datasets_root())
