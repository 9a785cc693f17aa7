"""Semantic segmentation heads; importing this package registers them with detectron2."""

from .panoptic_segmenter import PanopticSegmenterHead  # noqa: F401
from .segmenter import SegmenterLinearDecoder, SegmenterMaskTransformer  # noqa: F401
from .upernet import FCNAuxHead, UperNetHead, per_pixel_cross_entropy

__all__ = ["FCNAuxHead", "UperNetHead", "per_pixel_cross_entropy"]
