"""Backbones; importing this package registers them in detectron2's BACKBONE_REGISTRY."""

from .swin import D2SwinTransformer, SwinTransformer
from .swin_fpn import build_swin_backbone, build_swin_fpn_backbone  # noqa: F401  (registers)
from .vit import build_vit_backbone  # noqa: F401  (registers)

__all__ = ["D2SwinTransformer", "SwinTransformer"]
