"""ADE20K-full (847 classes): `ade20k_full_sem_seg_train` / `ade20k_full_sem_seg_val`.

Layout (official Mask2Former), under `$DETECTRON2_DATASETS`:
    ADE20K_2021_17_01/images_detectron2/{training,validation}/*.jpg
    ADE20K_2021_17_01/annotations_detectron2/{training,validation}/*.tif
Both are written by tools/prepare_ade20k_full_sem_seg.py. Labels are uint16 because 847 classes
do not fit in a byte, so the ignore value is 65535 rather than 255.
"""

from ._paths import get_datasets_root, register_sem_seg_splits
from .categories import ADE20K_FULL_CATEGORIES

__all__ = ["ADE20K_FULL_SPLITS", "register_all_ade20k_full"]

_PRODUCER = "tools/prepare_ade20k_full_sem_seg.py"

ADE20K_FULL_SPLITS = {
    "ade20k_full_sem_seg_train": (
        "ADE20K_2021_17_01/images_detectron2/training",
        "ADE20K_2021_17_01/annotations_detectron2/training",
    ),
    "ade20k_full_sem_seg_val": (
        "ADE20K_2021_17_01/images_detectron2/validation",
        "ADE20K_2021_17_01/annotations_detectron2/validation",
    ),
}


def register_all_ade20k_full(root: str) -> None:
    """(Re-)register the ADE20K-full splits with their data under `root`."""
    register_sem_seg_splits(
        root,
        ADE20K_FULL_SPLITS,
        gt_ext="tif",
        ignore_label=65535,
        image_producer=_PRODUCER,
        gt_producer=_PRODUCER,
        stuff_classes=[c["name"] for c in ADE20K_FULL_CATEGORIES],
    )


register_all_ade20k_full(get_datasets_root())
