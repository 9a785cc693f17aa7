"""detectron2's own ``DatasetMapper``, selectable as ``INPUT.DATASET_MAPPER_NAME: "detectron2"``.

``train_net.py`` builds its training mapper from that name, so registering detectron2's mapper
here is what lets the same trainer run detectron2's R-CNN configs (Mask R-CNN, Cascade Mask
R-CNN): boxes, masks as polygons or bitmasks (``INPUT.MASK_FORMAT``), optional crop, multi-scale
shortest-edge resize (``INPUT.MIN_SIZE_TRAIN`` with ``MIN_SIZE_TRAIN_SAMPLING``) and flip, all
read by detectron2's ``DatasetMapper.from_config``. The subclass changes one thing, and only
when ``INPUT.RESIZE_CROP_RESIZE.ENABLED``: the training resize becomes DETR's "resize, crop,
resize" choice (``seg_zoo.data.augmentation.build_resize_crop_resize_augmentation``), with boxes
recomputed from the cropped masks; otherwise it is detectron2's mapper unchanged.
"""

from __future__ import annotations

from detectron2.data import DatasetMapper
from detectron2.data import transforms as T

from ..augmentation import build_resize_crop_resize_augmentation
from . import register_dataset_mapper

__all__ = ["Detectron2DatasetMapper"]


@register_dataset_mapper("detectron2")
class Detectron2DatasetMapper(DatasetMapper):
    """detectron2's ``DatasetMapper``, plus ``INPUT.RESIZE_CROP_RESIZE`` in training."""

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        # .get: a plain detectron2 config (no seg_zoo keys) builds detectron2's mapper as it is
        rcr = cfg.INPUT.get("RESIZE_CROP_RESIZE")
        if not (is_train and rcr is not None and rcr.ENABLED):
            return ret
        if cfg.INPUT.CROP.ENABLED:
            raise ValueError(
                "INPUT.RESIZE_CROP_RESIZE.ENABLED and INPUT.CROP.ENABLED are both set; the "
                "resize-crop-resize augmentation has its own crop (INPUT.RESIZE_CROP_RESIZE."
                "CROP_SIZE): disable INPUT.CROP"
            )
        # detectron2's list is [ResizeShortestEdge, RandomFlip?]: the resize is replaced
        augs = [a for a in ret["augmentations"] if not isinstance(a, T.ResizeShortestEdge)]
        ret["augmentations"] = [build_resize_crop_resize_augmentation(cfg), *augs]
        # A crop cuts masks: boxes are taken from what is left of them, as detectron2 does for
        # its own crop (mmdet instead clips the original boxes to the crop, which can leave a
        # box larger than its mask, or a box whose mask the crop removed).
        ret["recompute_boxes"] = cfg.MODEL.MASK_ON
        return ret
