"""Segmenter's Mask Transformer turned into a panoptic head for the MaskFormer meta-architecture.

Strudel et al., "Segmenter: Transformer for Semantic Segmentation", ICCV 2021, Sec. 3.2 notes
that replacing the K class embeddings by N object embeddings makes the Mask Transformer a
panoptic model. Each object output then needs its own class, so a linear layer reads K + 1
logits (the last one "no object") from it, and the masks come from the same normalised
patch-object dot products as the semantic decoder. The outputs follow ``MaskFormerHead``'s
contract, so :class:`~seg_zoo.modeling.meta_arch.maskformer_model.MaskFormer`'s Hungarian
matcher, set criterion and panoptic / instance / semantic inference are used unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from .segmenter import (
    SegmenterLinearDecoder,
    _init_weights,
    mask_transformer_blocks,
    segmenter_decoder_input,
)

__all__ = ["PanopticSegmenterHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class PanopticSegmenterHead(nn.Module):
    """Mask Transformer with N object embeddings: per-object class logits and patch masks.

    Patch tokens are projected to ``d_model``, the N learnable object embeddings are appended,
    and the sequence goes through ``n_layers`` pre-norm blocks and a LayerNorm. Each object
    output gives K + 1 class logits (``class_embed``); patch and object outputs are projected
    (``proj_patch``, ``proj_objects``), L2-normalised, and their dot products (B, Hp*Wp, N)
    pass through a LayerNorm over the N objects (``mask_norm``) to give mask logits.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        num_queries: int,
        in_feature: str = "vit",
        d_model: int | None = None,
        n_layers: int = 2,
        n_heads: int | None = None,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        drop_path_rate: float = 0.0,
        deep_supervision: bool = False,
    ):
        """
        Args:
            in_channels: D of the encoder's patch tokens.
            num_classes: K, the number of classes (the class head has K + 1 outputs).
            num_queries: N, the number of object embeddings.
            in_feature: backbone output holding the patch map.
            d_model: decoder width; default the encoder's (``in_channels``).
            n_layers: decoder blocks.
            n_heads: attention heads; default ``d_model // 64``, at least one.
            mlp_ratio: MLP width over ``d_model``.
            dropout: of the attention weights, projections and MLP.
            drop_path_rate: stochastic depth, rising linearly to this value over the blocks.
            deep_supervision: also predict after every block but the last ("aux_outputs"),
                through the same norm and prediction layers, so each block gets a set loss.
        """
        super().__init__()
        if num_queries < 1:
            raise ValueError(f"PanopticSegmenterHead needs num_queries >= 1, got {num_queries}")
        d_model = d_model or in_channels
        n_heads = n_heads or max(1, d_model // 64)
        self.in_feature = in_feature
        self.in_channels = in_channels
        # MaskFormer builds its criterion from the head's num_classes.
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.deep_supervision = deep_supervision
        # Same blocks as the semantic Mask Transformer.
        self.blocks = mask_transformer_blocks(
            d_model, n_heads, n_layers, mlp_ratio, dropout, drop_path_rate
        )
        self.obj_emb = nn.Parameter(torch.zeros(1, num_queries, d_model))
        self.proj_dec = nn.Linear(in_channels, d_model)
        scale = d_model**-0.5
        self.proj_patch = nn.Parameter(scale * torch.randn(d_model, d_model))
        self.proj_objects = nn.Parameter(scale * torch.randn(d_model, d_model))
        self.decoder_norm = nn.LayerNorm(d_model)
        self.mask_norm = nn.LayerNorm(num_queries)
        self.class_embed = nn.Linear(d_model, num_classes + 1)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.obj_emb, std=0.02)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> dict:
        args = SegmenterLinearDecoder.from_config(cfg, input_shape)
        seg, mf = cfg.MODEL.SEGMENTER, cfg.MODEL.MASK_FORMER
        if mf.DEEP_SUPERVISION and mf.DEC_LAYERS != seg.N_LAYERS:
            # MaskFormer weights DEC_LAYERS - 1 auxiliary losses and silently drops the rest.
            raise ValueError(
                f"PanopticSegmenterHead with MODEL.MASK_FORMER.DEEP_SUPERVISION predicts after "
                f"each of its MODEL.SEGMENTER.N_LAYERS={seg.N_LAYERS} blocks, so "
                f"MODEL.MASK_FORMER.DEC_LAYERS must equal it (got {mf.DEC_LAYERS})"
            )
        args.update(
            num_queries=mf.NUM_OBJECT_QUERIES,
            n_layers=seg.N_LAYERS,
            dropout=seg.DROPOUT,
            drop_path_rate=seg.DROP_PATH_RATE,
            deep_supervision=mf.DEEP_SUPERVISION,
        )
        return args

    def predict(self, x: torch.Tensor, hp: int, wp: int) -> dict:
        """Class and mask logits from the decoder's tokens (B, Hp*Wp + N, d), before the norm."""
        x = self.decoder_norm(x)
        patches, objects = x[:, : hp * wp], x[:, hp * wp :]
        logits = self.class_embed(objects)  # (B, N, K + 1)
        patches = F.normalize(patches @ self.proj_patch, dim=-1)
        objects = F.normalize(objects @ self.proj_objects, dim=-1)
        masks = self.mask_norm(patches @ objects.transpose(1, 2))  # (B, Hp*Wp, N)
        masks = masks.transpose(1, 2).reshape(x.shape[0], self.num_queries, hp, wp)
        return {"pred_logits": logits, "pred_masks": masks}

    def forward(self, features: dict, mask: torch.Tensor | None = None) -> dict:
        """{"pred_logits" (B, N, K+1), "pred_masks" (B, N, Hp, Wp), "aux_outputs" [...]}.

        Masks stay at patch resolution: the criterion samples points in normalised
        coordinates and MaskFormer's inference resizes them to the padded input.
        """
        x = segmenter_decoder_input(
            features, self.in_feature, self.in_channels, "PanopticSegmenterHead"
        )
        n, _, hp, wp = x.shape
        x = self.proj_dec(x.flatten(2).transpose(1, 2))  # (B, Hp*Wp, d)
        x = torch.cat([x, self.obj_emb.expand(n, -1, -1)], dim=1)  # patches, then objects
        aux = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.deep_supervision and i < len(self.blocks) - 1:
                aux.append(self.predict(x, hp, wp))
        out = self.predict(x, hp, wp)
        out["aux_outputs"] = aux
        return out
