"""Large-scale-jitter (LSJ) mapper for COCO panoptic segmentation (``coco_panoptic_lsj``)."""

from __future__ import annotations

import numpy as np
from detectron2.structures import BitMasks
from panopticapi.utils import rgb2id

from . import register_dataset_mapper
from .coco_instance_new_baseline_dataset_mapper import LSJDatasetMapper
from .mask_former_panoptic_dataset_mapper import (
    check_segments,
    read_panoptic_png,
    segment_targets,
)

__all__ = ["COCOPanopticNewBaselineDatasetMapper"]


@register_dataset_mapper("coco_panoptic_lsj")
class COCOPanopticNewBaselineDatasetMapper(LSJDatasetMapper):
    """COCO panoptic dict -> LSJ-augmented "image" (3, S, S) uint8, "padding_mask" (S, S) bool
    and, in training, "instances": one mask per non-crowd segment (``gt_classes`` =
    contiguous category_id, ``gt_masks`` (N, S, S) bool, ``gt_boxes`` from the masks).
    Segments the crop removed entirely are dropped (the official mapper keeps them with empty
    masks). With ``is_train=False`` annotations are dropped.
    """

    # detectron2's panoptic metadata lists every category (things and stuff) here.
    class_key = "stuff_classes"

    def __call__(self, dataset_dict: dict) -> dict:
        """Map one dataset dict (left unmodified) to a new dict of tensors."""
        dataset_dict, image, transforms, in_hw = self._map_image(dataset_dict)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        pan_file = dataset_dict.pop("pan_seg_file_name", None)
        if pan_file is None:
            return dataset_dict
        if "segments_info" not in dataset_dict:
            raise ValueError(
                f"{dataset_dict['file_name']!r}: 'pan_seg_file_name' without 'segments_info'"
            )
        segments_info = dataset_dict["segments_info"]
        check_segments(segments_info, self.num_classes, pan_file)
        pan_rgb = read_panoptic_png(pan_file, in_hw, dataset_dict["file_name"])
        # FixedSizeCrop pads segmentations with 255 (white = an id no COCO segment has) or 0
        # (VOID), so padded pixels fall in no segment either way.
        pan_ids = rgb2id(transforms.apply_segmentation(pan_rgb)).astype(np.int64)
        instances = segment_targets(pan_ids, segments_info, image.shape[:2])
        instances.gt_boxes = BitMasks(instances.gt_masks).get_bounding_boxes()
        dataset_dict["instances"] = instances
        return dataset_dict
