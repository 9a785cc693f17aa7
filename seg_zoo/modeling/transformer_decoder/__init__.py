"""Transformer decoders of the mask-classification models and their position encodings."""

from .mask2former_transformer_decoder import (
    MultiScaleMaskedTransformerDecoder,
    compute_attention_mask,
)
from .maskformer_transformer_decoder import (
    TRANSFORMER_DECODER_REGISTRY,
    StandardTransformerDecoder,
    build_transformer_decoder,
)
from .position_encoding import PositionEmbeddingSine

__all__ = [
    "TRANSFORMER_DECODER_REGISTRY",
    "MultiScaleMaskedTransformerDecoder",
    "PositionEmbeddingSine",
    "StandardTransformerDecoder",
    "build_transformer_decoder",
    "compute_attention_mask",
]
