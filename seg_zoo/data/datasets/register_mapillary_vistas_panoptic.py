"""Mapillary Vistas v1.2 panoptic segmentation (65 classes).

Names: `mapillary_vistas_panoptic_train`, `mapillary_vistas_panoptic_val`. Layout (the raw
release, as Mask2Former reads it), under `$DETECTRON2_DATASETS`:
    mapillary_vistas/{training,validation}/images/*.jpg
    mapillary_vistas/{training,validation}/panoptic/*.png + panoptic/panoptic_2018.json
    mapillary_vistas/{training,validation}/labels/*.png
Unlike ADE20K, the official metadata lists all 65 classes under `thing_classes` too, and the
ignore value is 65 (the "unlabeled" label), so both are kept as the official has them.
"""

from ._paths import get_datasets_root
from .categories import MAPILLARY_VISTAS_PANOPTIC_CATEGORIES
from .register_ade20k_panoptic import register_panoptic_splits
from .register_coco_panoptic_annos_semseg import panoptic_metadata_from_categories

__all__ = [
    "MAPILLARY_VISTAS_PANOPTIC_SPLITS",
    "get_mapillary_vistas_panoptic_metadata",
    "register_all_mapillary_vistas_panoptic",
]

# name -> (image dir, panoptic PNG dir, panoptic json, semantic label dir)
MAPILLARY_VISTAS_PANOPTIC_SPLITS = {
    "mapillary_vistas_panoptic_train": (
        "mapillary_vistas/training/images",
        "mapillary_vistas/training/panoptic",
        "mapillary_vistas/training/panoptic/panoptic_2018.json",
        "mapillary_vistas/training/labels",
    ),
    "mapillary_vistas_panoptic_val": (
        "mapillary_vistas/validation/images",
        "mapillary_vistas/validation/panoptic",
        "mapillary_vistas/validation/panoptic/panoptic_2018.json",
        "mapillary_vistas/validation/labels",
    ),
}


def get_mapillary_vistas_panoptic_metadata() -> dict:
    """Metadata shared by both Vistas panoptic splits (official key names and contents)."""
    return panoptic_metadata_from_categories(
        MAPILLARY_VISTAS_PANOPTIC_CATEGORIES, things_only_in_thing_lists=False
    )


def register_all_mapillary_vistas_panoptic(root: str) -> None:
    """(Re-)register the Vistas panoptic splits with their data under `root`."""
    # Raw release files only: there is no seg_zoo script to point a missing file at.
    register_panoptic_splits(
        root,
        MAPILLARY_VISTAS_PANOPTIC_SPLITS,
        get_mapillary_vistas_panoptic_metadata(),
        {"panoptic": None, "semantic": None},
        evaluator_type="mapillary_vistas_panoptic_seg",
        ignore_label=65,
    )


register_all_mapillary_vistas_panoptic(get_datasets_root())
