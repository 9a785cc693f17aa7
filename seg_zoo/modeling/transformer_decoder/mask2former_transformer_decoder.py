"""Mask2Former's masked-attention transformer decoder (Cheng et al., "Masked-attention Mask
Transformer for Universal Image Segmentation", CVPR 2022, Sec. 3.2).

Each layer does masked cross-attention, then self-attention, then an FFN (Sec. 3.2.1:
cross-attention first, so the learnable query features are updated from the image before the
queries talk to each other). Cross-attention of layer ``i`` reads feature level ``i % 3`` of the
three levels (1/32, 1/16, 1/8 from the pixel decoder, Sec. 3.2.2), and only where the previous
layer's mask prediction, resized to that level, is foreground (eq. 2). Predictions are made
from the learnable queries before the first layer and after every layer; all but the last are
returned for deep supervision.

Module and parameter names follow the official code (``transformer_self_attention_layers``,
``transformer_cross_attention_layers``, ``transformer_ffn_layers``, ``decoder_norm``,
``query_feat``, ``query_embed``, ``level_embed``, ``input_proj``, ``class_embed``,
``mask_embed``), so the official model-zoo checkpoints load unchanged.
"""

from __future__ import annotations

import logging

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d
from torch import Tensor, nn

from .maskformer_transformer_decoder import MLP, TRANSFORMER_DECODER_REGISTRY, aux_outputs
from .position_encoding import PositionEmbeddingSine
from .transformer import _get_activation_fn

__all__ = [
    "CrossAttentionLayer",
    "FFNLayer",
    "MultiScaleMaskedTransformerDecoder",
    "SelfAttentionLayer",
    "compute_attention_mask",
]


def compute_attention_mask(
    outputs_mask: Tensor, target_size: tuple[int, int], num_heads: int
) -> Tensor:
    """The cross-attention mask of eq. 2 from mask logits, in ``nn.MultiheadAttention``'s format.

    A query may attend to a pixel where its predicted mask, bilinearly resized to
    ``target_size``, has ``sigmoid >= 0.5``. A query whose resized mask is empty everywhere
    attends to every pixel instead (otherwise its attention would be a softmax over nothing).

    Args:
        outputs_mask: (N, Q, H, W) mask logits.
        target_size: (h, w) of the feature level that will be attended to.
        num_heads: attention heads; the mask is repeated for each.

    Returns:
        (N * num_heads, Q, h * w) bool, True where attention is NOT allowed (PyTorch's
        convention for boolean masks), batch-major as ``nn.MultiheadAttention`` expects.
        Detached: no gradient flows through the mask.
    """
    resized = F.interpolate(outputs_mask, size=target_size, mode="bilinear", align_corners=False)
    blocked = resized.detach().sigmoid().flatten(2) < 0.5  # (N, Q, hw)
    blocked &= ~blocked.all(dim=-1, keepdim=True)  # all-blocked rows attend everywhere
    return blocked.repeat_interleave(num_heads, dim=0)  # (N * num_heads, Q, hw)


def _xavier_init_matrices(module: nn.Module) -> None:
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class SelfAttentionLayer(nn.Module):
    """Self-attention among the queries with a residual connection and a LayerNorm."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dropout: float = 0.0,
        activation: str = "relu",
        normalize_before: bool = False,
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.activation = _get_activation_fn(activation)
        self.normalize_before = normalize_before
        _xavier_init_matrices(self)

    def forward(
        self,
        tgt: Tensor,
        tgt_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        query_pos: Tensor | None = None,
    ) -> Tensor:
        """``tgt``, ``query_pos``: (Q, N, C)."""
        x = self.norm(tgt) if self.normalize_before else tgt
        q = k = x if query_pos is None else x + query_pos
        attended = self.self_attn(
            q, k, value=x, attn_mask=tgt_mask, key_padding_mask=tgt_key_padding_mask
        )[0]
        tgt = tgt + self.dropout(attended)
        return tgt if self.normalize_before else self.norm(tgt)


class CrossAttentionLayer(nn.Module):
    """(Masked) attention from the queries to image features, residual and LayerNorm."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dropout: float = 0.0,
        activation: str = "relu",
        normalize_before: bool = False,
    ):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.activation = _get_activation_fn(activation)
        self.normalize_before = normalize_before
        _xavier_init_matrices(self)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        pos: Tensor | None = None,
        query_pos: Tensor | None = None,
    ) -> Tensor:
        """``tgt``, ``query_pos``: (Q, N, C); ``memory``, ``pos``: (HW, N, C);
        ``memory_mask``: (N * nhead, Q, HW) bool, True = not allowed."""
        x = self.norm(tgt) if self.normalize_before else tgt
        attended = self.multihead_attn(
            query=x if query_pos is None else x + query_pos,
            key=memory if pos is None else memory + pos,
            value=memory,
            attn_mask=memory_mask,
            key_padding_mask=memory_key_padding_mask,
        )[0]
        tgt = tgt + self.dropout(attended)
        return tgt if self.normalize_before else self.norm(tgt)


class FFNLayer(nn.Module):
    """Two-layer feed-forward network with a residual connection and a LayerNorm."""

    def __init__(
        self,
        d_model: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.0,
        activation: str = "relu",
        normalize_before: bool = False,
    ):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.activation = _get_activation_fn(activation)
        self.normalize_before = normalize_before
        _xavier_init_matrices(self)

    def forward(self, tgt: Tensor) -> Tensor:
        x = self.norm(tgt) if self.normalize_before else tgt
        x = self.linear2(self.dropout(self.activation(self.linear1(x))))
        tgt = tgt + self.dropout(x)
        return tgt if self.normalize_before else self.norm(tgt)


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Mask2Former's decoder: masked attention, round-robin over 3 feature levels."""

    # Version 2 renamed the learnable query features from "static_query" to "query_feat".
    _version = 2

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
        dim_feedforward: int,
        dec_layers: int,
        pre_norm: bool,
        mask_dim: int,
        enforce_input_project: bool,
    ):
        """
        Args:
            in_channels: channels of each of the three input feature levels.
            mask_classification: must be True (Mask2Former always classifies its masks).
            num_classes: number of classes K; the classifier has K + 1 outputs ("no object").
            hidden_dim: Transformer width.
            num_queries: number of queries.
            nheads: attention heads.
            dim_feedforward: hidden width of the FFNs.
            dec_layers: Transformer decoder layers (9 in the paper; the config's DEC_LAYERS is
                one more, counting the prediction from the learnable queries).
            pre_norm: LayerNorm before (True) or after (False) each sub-layer.
            mask_dim: channels of the per-pixel mask features.
            enforce_input_project: add the 1x1 input projections even when
                ``in_channels == hidden_dim``.
        """
        super().__init__()
        if not mask_classification:
            raise ValueError("MultiScaleMaskedTransformerDecoder needs mask_classification=True")
        self.mask_classification = mask_classification
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)

        self.num_heads = nheads
        self.num_layers = dec_layers
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, dropout=0.0, normalize_before=pre_norm)
            for _ in range(dec_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, dropout=0.0, normalize_before=pre_norm)
            for _ in range(dec_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, dropout=0.0, normalize_before=pre_norm)
            for _ in range(dec_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)

        self.num_queries = num_queries
        self.query_feat = nn.Embedding(num_queries, hidden_dim)  # learnable query features
        self.query_embed = nn.Embedding(num_queries, hidden_dim)  # learnable query positions

        self.num_feature_levels = 3
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                proj = Conv2d(in_channels, hidden_dim, kernel_size=1)
                weight_init.c2_xavier_fill(proj)
            else:
                proj = nn.Sequential()
            self.input_proj.append(proj)

        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels: int, mask_classification: bool) -> dict:
        # DEC_LAYERS counts the prediction from the learnable queries as a layer, so that the
        # number of supervised predictions equals DEC_LAYERS (official configs: 10 = 9 + 1).
        assert cfg.MODEL.MASK_FORMER.DEC_LAYERS >= 1
        return {
            "in_channels": in_channels,
            "mask_classification": mask_classification,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "hidden_dim": cfg.MODEL.MASK_FORMER.HIDDEN_DIM,
            "num_queries": cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES,
            "nheads": cfg.MODEL.MASK_FORMER.NHEADS,
            "dim_feedforward": cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD,
            "dec_layers": cfg.MODEL.MASK_FORMER.DEC_LAYERS - 1,
            "pre_norm": cfg.MODEL.MASK_FORMER.PRE_NORM,
            "enforce_input_project": cfg.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
        }

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        version = local_metadata.get("version", None)
        if version is None or version < 2:
            renamed = False
            for key in [k for k in state_dict if k.startswith(prefix + "static_query")]:
                new_key = prefix + "query_feat" + key[len(prefix + "static_query") :]
                state_dict[new_key] = state_dict.pop(key)
                renamed = True
            if renamed:
                logging.getLogger(__name__).warning(
                    f"{type(self).__name__}: renamed the old 'static_query' weights to "
                    "'query_feat'; re-save the checkpoint to drop this conversion."
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: list[Tensor], mask_features: Tensor, mask: Tensor | None = None) -> dict:
        """Predict classes and masks of every query.

        Args:
            x: three (N, C_in, H_l, W_l) feature maps, lowest resolution first (1/32, 1/16, 1/8).
            mask_features: (N, mask_dim, H_m, W_m) per-pixel embeddings (1/4 resolution).
            mask: ignored; padding is not masked (as in the official code, it does not change
                the results).

        Returns:
            dict with "pred_logits" (N, Q, K + 1), "pred_masks" (N, Q, H_m, W_m) of the last
            layer and "aux_outputs": ``num_layers`` dicts of the same two keys, from the
            learnable queries and from every layer but the last.
        """
        del mask
        assert len(x) == self.num_feature_levels
        src, pos, size_list = [], [], []
        for i, feature in enumerate(x):
            size_list.append(feature.shape[-2:])
            level_pos = self.pe_layer(feature, None).flatten(2)  # (N, C, HW)
            level_src = self.input_proj[i](feature).flatten(2)  # (N, C, HW)
            level_src = level_src + self.level_embed.weight[i][None, :, None]
            pos.append(level_pos.permute(2, 0, 1))  # (HW, N, C)
            src.append(level_src.permute(2, 0, 1))  # (HW, N, C)

        batch_size = src[0].shape[1]
        query_embed = self.query_embed.weight.unsqueeze(1).repeat(1, batch_size, 1)  # (Q, N, C)
        output = self.query_feat.weight.unsqueeze(1).repeat(1, batch_size, 1)  # (Q, N, C)

        outputs_class, outputs_mask = self.forward_prediction_heads(output, mask_features)
        predictions_class, predictions_mask = [outputs_class], [outputs_mask]

        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            attn_mask = compute_attention_mask(outputs_mask, size_list[level], self.num_heads)
            output = self.transformer_cross_attention_layers[i](
                output,
                src[level],
                memory_mask=attn_mask,
                memory_key_padding_mask=None,
                pos=pos[level],
                query_pos=query_embed,
            )
            output = self.transformer_self_attention_layers[i](
                output, tgt_mask=None, tgt_key_padding_mask=None, query_pos=query_embed
            )
            output = self.transformer_ffn_layers[i](output)

            outputs_class, outputs_mask = self.forward_prediction_heads(output, mask_features)
            predictions_class.append(outputs_class)
            predictions_mask.append(outputs_mask)

        return {
            "pred_logits": predictions_class[-1],
            "pred_masks": predictions_mask[-1],
            "aux_outputs": aux_outputs(predictions_class, predictions_mask),
        }

    def forward_prediction_heads(
        self, output: Tensor, mask_features: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Class logits (N, Q, K + 1) and mask logits (N, Q, H_m, W_m) from (Q, N, C) queries."""
        decoder_output = self.decoder_norm(output).transpose(0, 1)  # (N, Q, C)
        outputs_class = self.class_embed(decoder_output)
        mask_embed = self.mask_embed(decoder_output)
        outputs_mask = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
        return outputs_class, outputs_mask
