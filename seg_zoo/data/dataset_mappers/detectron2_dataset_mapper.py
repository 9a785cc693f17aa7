"""detectron2's own ``DatasetMapper``, selectable as ``INPUT.DATASET_MAPPER_NAME: "detectron2"``.

``train_net.py`` builds its training mapper from that name, so registering detectron2's class
here is what lets the same trainer run detectron2's R-CNN configs (Mask R-CNN, Cascade Mask
R-CNN): boxes, masks as polygons or bitmasks (``INPUT.MASK_FORMAT``), optional crop, multi-scale
shortest-edge resize (``INPUT.MIN_SIZE_TRAIN`` with ``MIN_SIZE_TRAIN_SAMPLING``) and flip, all
read by detectron2's ``DatasetMapper.from_config``. The class is registered as it is, not
wrapped, so it behaves exactly as in detectron2's ``tools/train_net.py``.
"""

from __future__ import annotations

from detectron2.data import DatasetMapper

from . import register_dataset_mapper

__all__ = ["Detectron2DatasetMapper"]

Detectron2DatasetMapper = register_dataset_mapper("detectron2")(DatasetMapper)
