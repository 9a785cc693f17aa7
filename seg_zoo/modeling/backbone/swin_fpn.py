"""Swin as the backbone of detectron2's own detectors (Mask R-CNN, Cascade Mask R-CNN).

The Swin paper (Liu et al., ICCV 2021, Sec. 4.2) reports COCO detection with an FPN over the
four Swin stages. These builders are the Swin counterparts of detectron2's
``build_resnet_backbone`` and ``build_resnet_fpn_backbone``, so any ``GeneralizedRCNN`` config
takes a Swin by changing ``MODEL.BACKBONE.NAME`` and setting ``MODEL.SWIN.*``.

The FPN wraps the same ``D2SwinTransformer`` Mask2Former uses, as its ``bottom_up``: a Swin
ImageNet checkpoint converted to detectron2 format (keys ``layers.*``, ``patch_embed.*``) loads
into ``backbone.bottom_up.*`` through detectron2's suffix matching ("matching_heuristics").
"""

from __future__ import annotations

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from .swin import D2SwinTransformer

__all__ = ["build_swin_backbone", "build_swin_fpn_backbone"]


@BACKBONE_REGISTRY.register()
def build_swin_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """``D2SwinTransformer`` from ``MODEL.SWIN.*``: features "res2".."res5" (strides 4..32)."""
    return D2SwinTransformer(cfg, input_shape)


@BACKBONE_REGISTRY.register()
def build_swin_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """detectron2's ``FPN`` over the Swin stages, with a max-pooled extra level.

    Outputs "p2".."p6" (strides 4..64 for ``MODEL.FPN.IN_FEATURES`` res2..res5), each with
    ``MODEL.FPN.OUT_CHANNELS`` channels, as ``build_resnet_fpn_backbone`` does for a ResNet.
    """
    bottom_up = build_swin_backbone(cfg, input_shape)
    in_features = list(cfg.MODEL.FPN.IN_FEATURES)
    available = list(bottom_up.output_shape())
    missing = [name for name in in_features if name not in available]
    if missing:
        # FPN itself would fail with a bare KeyError on the first missing name.
        raise ValueError(
            f"MODEL.FPN.IN_FEATURES {in_features} asks for {missing}, which the Swin backbone "
            f"does not output; MODEL.SWIN.OUT_FEATURES is {available} (add them there)"
        )
    return FPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
