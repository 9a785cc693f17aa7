"""Pixel decoders: backbone features -> per-pixel embeddings and multi-scale features.

Importing this package registers them in detectron2's ``SEM_SEG_HEADS_REGISTRY`` (as the
official Mask2Former does); :func:`build_pixel_decoder` picks one by
``MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME``.
"""

from .fpn import BasePixelDecoder, TransformerEncoderPixelDecoder, build_pixel_decoder
from .msdeformattn import MSDeformAttnPixelDecoder, MSDeformAttnTransformerEncoderOnly

__all__ = [
    "BasePixelDecoder",
    "MSDeformAttnPixelDecoder",
    "MSDeformAttnTransformerEncoderOnly",
    "TransformerEncoderPixelDecoder",
    "build_pixel_decoder",
]
