"""ADE20K instance segmentation (100 thing classes): `ade20k_instance_train` / `_val`.

Layout (official Mask2Former), under `$DETECTRON2_DATASETS`:
    ADEChallengeData2016/images/{training,validation}/*.jpg
    ADEChallengeData2016/ade20k_instance_{train,val}.json  (COCO format, RLE masks; written by
        tools/prepare_ade20k_ins_seg.py)
The json's category ids are the 150-class labels of the thing classes, mapped here to [0, 100).
"""

import json
import os

from detectron2.data.datasets import load_coco_json

from ._paths import check_path, get_datasets_root, register_replacing
from .categories import ADE20K_INSTANCE_CATEGORIES

__all__ = ["ADE20K_INSTANCE_SPLITS", "get_ade20k_instance_metadata", "register_all_ade20k_instance"]

_PRODUCER = "tools/prepare_ade20k_ins_seg.py"

ADE20K_INSTANCE_SPLITS = {
    "ade20k_instance_train": (
        "ADEChallengeData2016/images/training",
        "ADEChallengeData2016/ade20k_instance_train.json",
    ),
    "ade20k_instance_val": (
        "ADEChallengeData2016/images/validation",
        "ADEChallengeData2016/ade20k_instance_val.json",
    ),
}


def get_ade20k_instance_metadata() -> dict:
    """Thing classes and the official id -> [0, 100) map."""
    return {
        "thing_classes": [c["name"] for c in ADE20K_INSTANCE_CATEGORIES],
        "thing_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(ADE20K_INSTANCE_CATEGORIES)
        },
    }


def _load_ade20k_instances(dataset_name: str, root: str, json_file: str, image_dir: str):
    check_path(image_dir, dataset_name, root)
    check_path(json_file, dataset_name, root, _PRODUCER, is_dir=False)
    try:
        # Without a dataset name load_coco_json keeps the json's category ids and leaves the
        # metadata alone; the mapping is done below so an unknown id names its image.
        records = load_coco_json(json_file, image_dir)
    except json.JSONDecodeError as e:
        raise ValueError(f"Dataset '{dataset_name}': {json_file} is not valid JSON: {e}") from e
    id_map = get_ade20k_instance_metadata()["thing_dataset_id_to_contiguous_id"]
    for record in records:
        for obj in record.get("annotations", []):
            cat = obj["category_id"]
            if cat not in id_map:
                raise ValueError(
                    f"Dataset '{dataset_name}': an annotation of image {record['image_id']!r} "
                    f"({record['file_name']}) has unknown category_id {cat} in {json_file}"
                )
            obj["category_id"] = id_map[cat]
    return records


def register_all_ade20k_instance(root: str) -> None:
    """(Re-)register the ADE20K instance splits with their data under `root`."""
    for name, (image_rel, json_rel) in ADE20K_INSTANCE_SPLITS.items():
        image_dir = os.path.join(root, image_rel)
        json_file = os.path.join(root, json_rel)
        register_replacing(
            name,
            lambda n=name, j=json_file, i=image_dir: _load_ade20k_instances(n, root, j, i),
            json_file=json_file,
            image_root=image_dir,
            evaluator_type="coco",
            **get_ade20k_instance_metadata(),
        )


register_all_ade20k_instance(get_datasets_root())
