"""Mapillary Vistas v1.2 semantic segmentation (65 classes).

Names: `mapillary_vistas_sem_seg_train`, `mapillary_vistas_sem_seg_val`. Layout (the raw
release, as Mask2Former reads it), under `$DETECTRON2_DATASETS`:
    mapillary_vistas/{training,validation}/images/*.jpg
    mapillary_vistas/{training,validation}/labels/*.png  (values 0..64, 65 = unlabeled)
Vistas labels are used unconverted, so the ignore value is the "unlabeled" class 65, not 255.
"""

from ._paths import get_datasets_root, register_sem_seg_splits
from .categories import MAPILLARY_VISTAS_SEM_SEG_CATEGORIES

__all__ = ["MAPILLARY_VISTAS_SEM_SEG_SPLITS", "register_all_mapillary_vistas"]

MAPILLARY_VISTAS_SEM_SEG_SPLITS = {
    "mapillary_vistas_sem_seg_train": (
        "mapillary_vistas/training/images",
        "mapillary_vistas/training/labels",
    ),
    "mapillary_vistas_sem_seg_val": (
        "mapillary_vistas/validation/images",
        "mapillary_vistas/validation/labels",
    ),
}


def register_all_mapillary_vistas(root: str) -> None:
    """(Re-)register the Vistas semantic splits with their data under `root`."""
    evaluated = [c for c in MAPILLARY_VISTAS_SEM_SEG_CATEGORIES if c["evaluate"]]
    register_sem_seg_splits(
        root,
        MAPILLARY_VISTAS_SEM_SEG_SPLITS,
        gt_ext="png",
        ignore_label=65,
        stuff_classes=[c["readable"] for c in evaluated],
        stuff_colors=[c["color"] for c in evaluated],
    )


register_all_mapillary_vistas(get_datasets_root())
