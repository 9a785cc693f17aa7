"""COCO-Stuff-10k semantic segmentation (171 classes).

Names: `coco_2017_train_stuff_10k_sem_seg`, `coco_2017_test_stuff_10k_sem_seg`. Layout (official
Mask2Former), under `$DETECTRON2_DATASETS`:
    coco/coco_stuff_10k/images_detectron2/{train,test}/*.jpg
    coco/coco_stuff_10k/annotations_detectron2/{train,test}/*.png  (label = index into
        COCO_STUFF_171_CATEGORIES, 255 = ignore)
These folders come from `tools/prepare_coco_stuff_10k_v1.0_sem_seg.py` (seg_zoo's version of
MaskFormer's `datasets/prepare_coco_stuff_10k_v1.0_sem_seg.py`).
"""

from ._paths import get_datasets_root, register_sem_seg_splits
from .categories import COCO_STUFF_171_CATEGORIES

__all__ = ["COCO_STUFF_10K_SPLITS", "register_all_coco_stuff_10k"]

_PRODUCER = "tools/prepare_coco_stuff_10k_v1.0_sem_seg.py"

COCO_STUFF_10K_SPLITS = {
    "coco_2017_train_stuff_10k_sem_seg": (
        "coco/coco_stuff_10k/images_detectron2/train",
        "coco/coco_stuff_10k/annotations_detectron2/train",
    ),
    "coco_2017_test_stuff_10k_sem_seg": (
        "coco/coco_stuff_10k/images_detectron2/test",
        "coco/coco_stuff_10k/annotations_detectron2/test",
    ),
}


def register_all_coco_stuff_10k(root: str) -> None:
    """(Re-)register the COCO-Stuff-10k splits with their data under `root`."""
    # The semantic label of a class is its position in the list, so evaluation maps it back to
    # the COCO category id through this table.
    stuff_dataset_id_to_contiguous_id = {
        c["id"]: i for i, c in enumerate(COCO_STUFF_171_CATEGORIES)
    }
    register_sem_seg_splits(
        root,
        COCO_STUFF_10K_SPLITS,
        gt_ext="png",
        ignore_label=255,
        image_producer=_PRODUCER,
        gt_producer=_PRODUCER,
        stuff_classes=[c["name"] for c in COCO_STUFF_171_CATEGORIES],
        stuff_dataset_id_to_contiguous_id=stuff_dataset_id_to_contiguous_id,
    )


register_all_coco_stuff_10k(get_datasets_root())
