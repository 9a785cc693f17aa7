"""Dataset mappers, looked up by the name in ``INPUT.DATASET_MAPPER_NAME``.

Each mapper module registers its class with :func:`register_dataset_mapper` when imported;
importing this package imports them all, so every official name is available.
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = [
    "DATASET_MAPPERS",
    "register_dataset_mapper",
    "build_dataset_mapper",
    "MaskFormerSemanticDatasetMapper",
    "MaskFormerPanopticDatasetMapper",
    "MaskFormerInstanceDatasetMapper",
    "COCOInstanceNewBaselineDatasetMapper",
    "COCOPanopticNewBaselineDatasetMapper",
    "VideoPanopticDatasetMapper",
]

_DATASET_MAPPERS: dict[str, type] = {}
# Read-only view: registering goes through the decorator, which refuses silent overwrites.
DATASET_MAPPERS = MappingProxyType(_DATASET_MAPPERS)


def register_dataset_mapper(name: str):
    """Class decorator that makes a mapper buildable as ``INPUT.DATASET_MAPPER_NAME: name``."""

    def register(cls):
        existing = _DATASET_MAPPERS.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"Dataset mapper name {name!r} is already registered to "
                f"{existing.__module__}.{existing.__qualname__}"
            )
        _DATASET_MAPPERS[name] = cls
        return cls

    return register


def build_dataset_mapper(cfg, is_train: bool = True):
    """Instantiate the mapper named by ``cfg.INPUT.DATASET_MAPPER_NAME`` from ``cfg``."""
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in _DATASET_MAPPERS:
        raise ValueError(
            f"Unknown INPUT.DATASET_MAPPER_NAME {name!r}; known names: "
            f"{', '.join(sorted(_DATASET_MAPPERS))}"
        )
    return _DATASET_MAPPERS[name](cfg, is_train)


# Imported after the registry exists: each module registers itself with it on import.
from .coco_instance_new_baseline_dataset_mapper import (  # noqa: E402
    COCOInstanceNewBaselineDatasetMapper,
)
from .coco_panoptic_new_baseline_dataset_mapper import (  # noqa: E402
    COCOPanopticNewBaselineDatasetMapper,
)
from .detectron2_dataset_mapper import Detectron2DatasetMapper  # noqa: E402, F401
from .mask_former_instance_dataset_mapper import MaskFormerInstanceDatasetMapper  # noqa: E402
from .mask_former_panoptic_dataset_mapper import MaskFormerPanopticDatasetMapper  # noqa: E402
from .mask_former_semantic_dataset_mapper import MaskFormerSemanticDatasetMapper  # noqa: E402
from .video_panoptic_dataset_mapper import VideoPanopticDatasetMapper  # noqa: E402
