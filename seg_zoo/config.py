"""All config keys seg_zoo adds to detectron2's, each with its default."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # detectron2 is imported where it is used, so seg_zoo.layers needs only torch
    from detectron2.config import CfgNode


def add_seg_zoo_config(cfg: CfgNode) -> None:
    """Add every seg_zoo key to ``cfg`` in place.

    Includes detectron2's DeepLab keys (poly LR schedule: SOLVER.POLY_LR_POWER,
    SOLVER.POLY_LR_CONSTANT_ENDING, ...), which the official Mask2Former YAMLs set, so those
    files merge unchanged. Calling it twice is harmless.
    """
    from detectron2.projects.deeplab import add_deeplab_config

    if not hasattr(cfg.SOLVER, "POLY_LR_POWER"):
        add_deeplab_config(cfg)
    add_swin_config(cfg)


def add_swin_config(cfg: CfgNode) -> None:
    """Add MODEL.SWIN.*, the keys of ``D2SwinTransformer``, with Mask2Former's names/defaults."""
    from detectron2.config import CfgNode as CN

    if hasattr(cfg.MODEL, "SWIN"):
        return
    cfg.MODEL.SWIN = CN()
    # Image size of ImageNet pre-training; sizes the absolute position embedding (APE).
    cfg.MODEL.SWIN.PRETRAIN_IMG_SIZE = 224
    # Side of the square patches of the patch embedding (stride of "res2").
    cfg.MODEL.SWIN.PATCH_SIZE = 4
    # Channels of stage 1; stage i has EMBED_DIM * 2**i (T/S: 96, B: 128, L: 192).
    cfg.MODEL.SWIN.EMBED_DIM = 96
    # Number of Swin blocks in each of the four stages (T: [2,2,6,2], S/B/L: [2,2,18,2]).
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 6, 2]
    # Attention heads in each stage (head width 32).
    cfg.MODEL.SWIN.NUM_HEADS = [3, 6, 12, 24]
    # Side of the local attention windows (7 for 224 pre-training, 12 for 384).
    cfg.MODEL.SWIN.WINDOW_SIZE = 7
    # Hidden width of the block MLP relative to the block width.
    cfg.MODEL.SWIN.MLP_RATIO = 4.0
    # Learn a bias for the query/key/value projection.
    cfg.MODEL.SWIN.QKV_BIAS = True
    # Attention scale override; None uses head_dim ** -0.5.
    cfg.MODEL.SWIN.QK_SCALE = None
    # Dropout after the position embedding, in the MLP and after the attention projection.
    cfg.MODEL.SWIN.DROP_RATE = 0.0
    # Dropout on the attention weights.
    cfg.MODEL.SWIN.ATTN_DROP_RATE = 0.0
    # Stochastic depth of the last block; it grows linearly from 0 over the blocks.
    cfg.MODEL.SWIN.DROP_PATH_RATE = 0.3
    # Add a learned absolute position embedding after the patch embedding.
    cfg.MODEL.SWIN.APE = False
    # LayerNorm after the patch embedding.
    cfg.MODEL.SWIN.PATCH_NORM = True
    # Stage outputs the backbone returns (strides 4, 8, 16, 32).
    cfg.MODEL.SWIN.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    # Recompute each block in backward (gradient checkpointing) to save memory.
    cfg.MODEL.SWIN.USE_CHECKPOINT = False
