"""Meta-architectures and their heads; importing this package registers them with detectron2."""

from .mask_former_head import MaskFormerHead
from .maskformer_model import MaskFormer
from .pix2seq_d import Pix2SeqD  # noqa: F401
from .postprocessing import (
    boxes_from_masks,
    instance_inference,
    panoptic_inference,
    semantic_inference,
)
from .segmenter import Segmenter  # noqa: F401
from .upernet_model import UperNet  # noqa: F401

__all__ = [
    "MaskFormer",
    "MaskFormerHead",
    "boxes_from_masks",
    "instance_inference",
    "panoptic_inference",
    "semantic_inference",
]
