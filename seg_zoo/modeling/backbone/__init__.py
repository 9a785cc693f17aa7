"""Backbones; importing this package registers them in detectron2's BACKBONE_REGISTRY."""

from .swin import D2SwinTransformer, SwinTransformer

__all__ = ["D2SwinTransformer", "SwinTransformer"]
