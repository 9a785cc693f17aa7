"""MaskFormer's transformer decoder (Cheng et al., "Per-Pixel Classification is Not All You Need
for Semantic Segmentation", NeurIPS 2021), the registry of transformer decoders, and the MLP
mask-embedding head shared with Mask2Former.

``StandardTransformerDecoder`` is DETR's encoder-decoder on one feature map: ``num_queries``
learned queries become per-segment embeddings, each classified (``class_embed``, K + 1 classes
with "no object") and turned into a mask by a dot product with the per-pixel embeddings
(``mask_embed``, MaskFormer Sec. 3.3). Names follow the official code, so its checkpoints load.
"""

from __future__ import annotations

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d
from detectron2.utils.registry import Registry
from torch import Tensor, nn

from .position_encoding import PositionEmbeddingSine
from .transformer import Transformer

__all__ = [
    "MLP",
    "TRANSFORMER_DECODER_REGISTRY",
    "StandardTransformerDecoder",
    "build_transformer_decoder",
]

TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_MODULE")
TRANSFORMER_DECODER_REGISTRY.__doc__ = """
Registry for the transformer decoders of MaskFormer-style heads: modules that turn multi-scale
features and per-pixel mask features into per-query class logits and mask logits.
"""


def build_transformer_decoder(cfg, in_channels: int, mask_classification: bool = True):
    """Build the decoder named by ``cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME``."""
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    return TRANSFORMER_DECODER_REGISTRY.get(name)(cfg, in_channels, mask_classification)


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (none after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = F.relu(x)
        return x


def aux_outputs(class_logits: list[Tensor] | None, mask_logits: list[Tensor]) -> list[dict]:
    """Deep-supervision targets: every prediction but the last, as a list of output dicts."""
    if class_logits is None:
        return [{"pred_masks": m} for m in mask_logits[:-1]]
    return [
        {"pred_logits": c, "pred_masks": m} for c, m in zip(class_logits[:-1], mask_logits[:-1])
    ]


@TRANSFORMER_DECODER_REGISTRY.register()
class StandardTransformerDecoder(nn.Module):
    """MaskFormer's decoder: a DETR Transformer on one feature map, then class and mask heads."""

    @configurable
    def __init__(
        self,
        in_channels: int,
        mask_classification: bool = True,
        *,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dropout: float,
        dim_feedforward: int,
        enc_layers: int,
        dec_layers: int,
        pre_norm: bool,
        deep_supervision: bool,
        mask_dim: int,
        enforce_input_project: bool,
    ):
        """
        Args:
            in_channels: channels of the input feature map.
            mask_classification: add the per-query classifier (``class_embed``).
            num_classes: number of classes K; the classifier has K + 1 outputs ("no object").
            hidden_dim: Transformer width.
            num_queries: number of queries.
            nheads: attention heads.
            dropout: dropout in the Transformer.
            dim_feedforward: hidden width of the Transformer FFNs.
            enc_layers: Transformer encoder layers (0 skips the encoder).
            dec_layers: Transformer decoder layers.
            pre_norm: LayerNorm before (True) or after (False) each sub-layer.
            deep_supervision: also return every decoder layer's predictions (``aux_outputs``).
            mask_dim: channels of the per-pixel mask features.
            enforce_input_project: add the 1x1 input projection even when
                ``in_channels == hidden_dim``.
        """
        super().__init__()
        self.mask_classification = mask_classification
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.transformer = Transformer(
            d_model=hidden_dim,
            dropout=dropout,
            nhead=nheads,
            dim_feedforward=dim_feedforward,
            num_encoder_layers=enc_layers,
            num_decoder_layers=dec_layers,
            normalize_before=pre_norm,
            return_intermediate_dec=deep_supervision,
        )
        self.num_queries = num_queries
        self.query_embed = nn.Embedding(num_queries, hidden_dim)

        if in_channels != hidden_dim or enforce_input_project:
            self.input_proj = Conv2d(in_channels, hidden_dim, kernel_size=1)
            weight_init.c2_xavier_fill(self.input_proj)
        else:
            self.input_proj = nn.Sequential()
        self.aux_loss = deep_supervision

        if self.mask_classification:
            self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels: int, mask_classification: bool) -> dict:
        return {
            "in_channels": in_channels,
            "mask_classification": mask_classification,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "hidden_dim": cfg.MODEL.MASK_FORMER.HIDDEN_DIM,
            "num_queries": cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES,
            "nheads": cfg.MODEL.MASK_FORMER.NHEADS,
            "dropout": cfg.MODEL.MASK_FORMER.DROPOUT,
            "dim_feedforward": cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD,
            "enc_layers": cfg.MODEL.MASK_FORMER.ENC_LAYERS,
            "dec_layers": cfg.MODEL.MASK_FORMER.DEC_LAYERS,
            "pre_norm": cfg.MODEL.MASK_FORMER.PRE_NORM,
            "deep_supervision": cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION,
            "enforce_input_project": cfg.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
        }

    def forward(self, x: Tensor, mask_features: Tensor, mask: Tensor | None = None) -> dict:
        """Predict classes and masks of every query.

        Args:
            x: (N, C_in, H, W) the feature map the Transformer attends to.
            mask_features: (N, mask_dim, H_m, W_m) per-pixel embeddings.
            mask: (N, H', W') bool padding mask (True on padding), or None.

        Returns:
            dict with "pred_logits" (N, Q, K + 1) when ``mask_classification``, "pred_masks"
            (N, Q, H_m, W_m), and with deep supervision "aux_outputs": one such dict per decoder
            layer but the last.
        """
        if mask is not None:
            mask = F.interpolate(mask[None].float(), size=x.shape[-2:]).to(torch.bool)[0]
        pos = self.pe_layer(x, mask)
        hs, _ = self.transformer(self.input_proj(x), mask, self.query_embed.weight, pos)
        # hs: (L, N, Q, C); L = dec_layers with deep supervision, else 1

        out = {}
        outputs_class = None
        if self.mask_classification:
            outputs_class = self.class_embed(hs)  # (L, N, Q, K + 1)
            out["pred_logits"] = outputs_class[-1]
        if self.aux_loss:
            mask_embed = self.mask_embed(hs)
            outputs_masks = torch.einsum("lbqc,bchw->lbqhw", mask_embed, mask_features)
            out["pred_masks"] = outputs_masks[-1]
            out["aux_outputs"] = aux_outputs(
                list(outputs_class) if outputs_class is not None else None, list(outputs_masks)
            )
        else:
            mask_embed = self.mask_embed(hs[-1])
            out["pred_masks"] = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
        return out
