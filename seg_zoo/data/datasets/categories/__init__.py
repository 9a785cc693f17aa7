"""Official class lists of the builtin datasets, kept as plain data (one module per dataset)."""

from .ade20k import ADE20K_150_CATEGORIES, ADE20K_INSTANCE_CATEGORIES
from .ade20k_full import ADE20K_FULL_CATEGORIES
from .coco_stuff import COCO_STUFF_171_CATEGORIES
from .mapillary_vistas import (
    MAPILLARY_VISTAS_PANOPTIC_CATEGORIES,
    MAPILLARY_VISTAS_SEM_SEG_CATEGORIES,
)

__all__ = [
    "ADE20K_150_CATEGORIES",
    "ADE20K_INSTANCE_CATEGORIES",
    "ADE20K_FULL_CATEGORIES",
    "COCO_STUFF_171_CATEGORIES",
    "MAPILLARY_VISTAS_PANOPTIC_CATEGORIES",
    "MAPILLARY_VISTAS_SEM_SEG_CATEGORIES",
]
