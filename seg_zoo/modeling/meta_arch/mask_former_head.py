"""MaskFormer's segmentation head: a pixel decoder followed by a transformer decoder."""

import logging

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

from ..pixel_decoder import build_pixel_decoder
from ..transformer_decoder import build_transformer_decoder

__all__ = ["MaskFormerHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class MaskFormerHead(nn.Module):
    """Backbone features -> per-query class logits and mask logits.

    ``transformer_in_feature`` says what the transformer decoder attends to:
    "multi_scale_pixel_decoder" (Mask2Former: the pixel decoder's multi-scale features),
    "transformer_encoder" (the output of ``TransformerEncoderPixelDecoder``'s encoder),
    "pixel_embedding" (the per-pixel mask features), or the name of a backbone feature.
    """

    # Version 2 moved the pixel decoder's weights under "pixel_decoder.".
    _version = 2

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        num_classes: int,
        pixel_decoder: nn.Module,
        loss_weight: float = 1.0,
        ignore_value: int = -1,
        transformer_predictor: nn.Module,
        transformer_in_feature: str,
    ):
        """
        Args:
            input_shape: channels and stride of the backbone features the head reads.
            num_classes: K, the number of classes (without "no object").
            pixel_decoder: module with ``forward_features(features)`` returning
                (mask_features, transformer_encoder_features, multi_scale_features).
            loss_weight: kept for config compatibility; the criterion's weights apply.
            ignore_value: label of ignored pixels in semantic targets.
            transformer_predictor: the transformer decoder making the predictions.
            transformer_in_feature: what the transformer decoder reads (see the class doc).
        """
        super().__init__()
        ordered = sorted(input_shape.items(), key=lambda item: item[1].stride)
        self.in_features = [name for name, _ in ordered]
        self.ignore_value = ignore_value
        self.common_stride = 4
        self.loss_weight = loss_weight
        self.pixel_decoder = pixel_decoder
        self.predictor = transformer_predictor
        self.transformer_in_feature = transformer_in_feature
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> dict:
        in_feature = cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE
        if in_feature in ("transformer_encoder", "multi_scale_pixel_decoder"):
            predictor_in_channels = cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM
        elif in_feature == "pixel_embedding":
            predictor_in_channels = cfg.MODEL.SEM_SEG_HEAD.MASK_DIM
        else:
            predictor_in_channels = input_shape[in_feature].channels
        return {
            "input_shape": {
                k: v for k, v in input_shape.items() if k in cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES
            },
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "loss_weight": cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT,
            "transformer_in_feature": in_feature,
            "transformer_predictor": build_transformer_decoder(
                cfg, predictor_in_channels, mask_classification=True
            ),
        }

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        version = local_metadata.get("version", None)
        if version is None or version < 2:
            # Version 1 kept the pixel decoder's weights directly under the head's prefix. Keys
            # already under a child module are left alone, so a state dict without version
            # metadata (e.g. converted from .pkl) in the current layout loads unchanged.
            renamed = False
            for key in [k for k in state_dict if k.startswith(prefix)]:
                child = key[len(prefix) :].split(".", 1)[0]
                if child in ("pixel_decoder", "predictor"):
                    continue
                state_dict[prefix + "pixel_decoder." + key[len(prefix) :]] = state_dict.pop(key)
                renamed = True
            if renamed:
                logging.getLogger(__name__).warning(
                    f"Weight format of {type(self).__name__} has changed; converting the "
                    "pixel decoder's weights to 'pixel_decoder.*'. Re-save the checkpoint to "
                    "drop this conversion."
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, features: dict[str, Tensor], mask: Tensor | None = None) -> dict:
        """Predictions of the transformer decoder: "pred_logits", "pred_masks", "aux_outputs"."""
        mask_features, encoder_features, multi_scale_features = self.pixel_decoder.forward_features(
            features
        )
        if self.transformer_in_feature == "multi_scale_pixel_decoder":
            return self.predictor(multi_scale_features, mask_features, mask)
        if self.transformer_in_feature == "transformer_encoder":
            assert encoder_features is not None, (
                "TRANSFORMER_IN_FEATURE 'transformer_encoder' needs a pixel decoder with a "
                "transformer encoder, e.g. TransformerEncoderPixelDecoder"
            )
            return self.predictor(encoder_features, mask_features, mask)
        if self.transformer_in_feature == "pixel_embedding":
            return self.predictor(mask_features, mask_features, mask)
        return self.predictor(features[self.transformer_in_feature], mask_features, mask)
