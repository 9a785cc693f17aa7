"""DETR-style Transformer (Carion et al., "End-to-End Object Detection with Transformers",
ECCV 2020), as used by MaskFormer's ``StandardTransformerDecoder`` and by the encoder of
``TransformerEncoderPixelDecoder``.

It differs from ``torch.nn.Transformer`` where DETR does: positional encodings are added to the
queries and keys of every attention (never to the values), the encoder has no final LayerNorm
in the post-norm setting, and the decoder can return the normalised output of every layer for
deep supervision. Module and parameter names follow the official Mask2Former file
(``encoder.layers.<i>.{self_attn,linear1,linear2,norm1,norm2}``,
``decoder.layers.<i>.{self_attn,multihead_attn,linear1,linear2,norm1,norm2,norm3}``,
``decoder.norm``), so MaskFormer checkpoints load unchanged.

Tensors are sequence-first, as ``nn.MultiheadAttention`` expects by default:
``(HW, N, C)`` for the memory and ``(Q, N, C)`` for the queries.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Transformer",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
]


def _get_activation_fn(activation: str) -> Callable[[Tensor], Tensor]:
    """The activation named ``activation`` ("relu", "gelu" or "glu")."""
    activations = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}
    if activation not in activations:
        raise ValueError(f"activation should be one of {sorted(activations)}, not {activation!r}")
    return activations[activation]


def _get_clones(module: nn.Module, n: int) -> nn.ModuleList:
    """``n`` independent deep copies of ``module``."""
    return nn.ModuleList(copy.deepcopy(module) for _ in range(n))


def _with_pos_embed(tensor: Tensor, pos: Tensor | None) -> Tensor:
    return tensor if pos is None else tensor + pos


class TransformerEncoderLayer(nn.Module):
    """Self-attention over the flattened feature map, then a two-layer FFN."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        normalize_before: bool = False,
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)

        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

        self.activation = _get_activation_fn(activation)
        self.normalize_before = normalize_before

    def _self_attention(
        self, x: Tensor, src_mask: Tensor | None, padding_mask: Tensor | None, pos: Tensor | None
    ) -> Tensor:
        q = k = _with_pos_embed(x, pos)
        # need_weights=False lets nn.MultiheadAttention use scaled_dot_product_attention.
        return self.self_attn(
            q, k, value=x, attn_mask=src_mask, key_padding_mask=padding_mask, need_weights=False
        )[0]

    def _ffn(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        pos: Tensor | None = None,
    ) -> Tensor:
        """``src``, ``pos``: (HW, N, C); ``src_key_padding_mask``: (N, HW), True = padding."""
        if self.normalize_before:
            x = self.norm1(src)
            src = src + self.dropout1(self._self_attention(x, src_mask, src_key_padding_mask, pos))
            return src + self.dropout2(self._ffn(self.norm2(src)))
        src = src + self.dropout1(self._self_attention(src, src_mask, src_key_padding_mask, pos))
        src = self.norm1(src)
        src = src + self.dropout2(self._ffn(src))
        return self.norm2(src)


class TransformerDecoderLayer(nn.Module):
    """Self-attention among the queries, cross-attention to the memory, then a two-layer FFN."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        normalize_before: bool = False,
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)

        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

        self.activation = _get_activation_fn(activation)
        self.normalize_before = normalize_before

    def _self_attention(
        self,
        x: Tensor,
        tgt_mask: Tensor | None,
        padding_mask: Tensor | None,
        query_pos: Tensor | None,
    ) -> Tensor:
        q = k = _with_pos_embed(x, query_pos)
        return self.self_attn(q, k, value=x, attn_mask=tgt_mask, key_padding_mask=padding_mask)[0]

    def _cross_attention(
        self,
        x: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None,
        padding_mask: Tensor | None,
        pos: Tensor | None,
        query_pos: Tensor | None,
    ) -> Tensor:
        return self.multihead_attn(
            query=_with_pos_embed(x, query_pos),
            key=_with_pos_embed(memory, pos),
            value=memory,
            attn_mask=memory_mask,
            key_padding_mask=padding_mask,
        )[0]

    def _ffn(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        pos: Tensor | None = None,
        query_pos: Tensor | None = None,
    ) -> Tensor:
        """``tgt``, ``query_pos``: (Q, N, C); ``memory``, ``pos``: (HW, N, C)."""
        if self.normalize_before:
            x = self.norm1(tgt)
            tgt = tgt + self.dropout1(
                self._self_attention(x, tgt_mask, tgt_key_padding_mask, query_pos)
            )
            x = self.norm2(tgt)
            tgt = tgt + self.dropout2(
                self._cross_attention(
                    x, memory, memory_mask, memory_key_padding_mask, pos, query_pos
                )
            )
            return tgt + self.dropout3(self._ffn(self.norm3(tgt)))
        tgt = tgt + self.dropout1(
            self._self_attention(tgt, tgt_mask, tgt_key_padding_mask, query_pos)
        )
        tgt = self.norm1(tgt)
        tgt = tgt + self.dropout2(
            self._cross_attention(tgt, memory, memory_mask, memory_key_padding_mask, pos, query_pos)
        )
        tgt = self.norm2(tgt)
        tgt = tgt + self.dropout3(self._ffn(tgt))
        return self.norm3(tgt)


class TransformerEncoder(nn.Module):
    """A stack of ``num_layers`` copies of ``encoder_layer``, optionally followed by ``norm``."""

    def __init__(self, encoder_layer: nn.Module, num_layers: int, norm: nn.Module | None = None):
        super().__init__()
        self.layers = _get_clones(encoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(
        self,
        src: Tensor,
        mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        pos: Tensor | None = None,
    ) -> Tensor:
        output = src
        for layer in self.layers:
            output = layer(
                output, src_mask=mask, src_key_padding_mask=src_key_padding_mask, pos=pos
            )
        if self.norm is not None:
            output = self.norm(output)
        return output


class TransformerDecoder(nn.Module):
    """A stack of decoder layers; returns (L, Q, N, C), every layer's output when
    ``return_intermediate`` (L = num_layers), else only the last one (L = 1).

    Every returned output goes through ``norm``, so the prediction heads of all layers see the
    same normalisation (DETR's auxiliary decoding losses, Sec. 3.2).
    """

    def __init__(
        self,
        decoder_layer: nn.Module,
        num_layers: int,
        norm: nn.Module | None = None,
        return_intermediate: bool = False,
    ):
        super().__init__()
        self.layers = _get_clones(decoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm
        self.return_intermediate = return_intermediate

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        pos: Tensor | None = None,
        query_pos: Tensor | None = None,
    ) -> Tensor:
        norm = self.norm if self.norm is not None else nn.Identity()
        output = tgt
        intermediate = []
        for layer in self.layers:
            output = layer(
                output,
                memory,
                tgt_mask=tgt_mask,
                memory_mask=memory_mask,
                tgt_key_padding_mask=tgt_key_padding_mask,
                memory_key_padding_mask=memory_key_padding_mask,
                pos=pos,
                query_pos=query_pos,
            )
            if self.return_intermediate:
                intermediate.append(norm(output))
        if self.return_intermediate:
            return torch.stack(intermediate)
        return norm(output).unsqueeze(0)


class Transformer(nn.Module):
    """DETR's encoder-decoder: encode the feature map, decode ``num_queries`` learned queries.

    The decoder input starts at zero; the learned query embeddings act as positional encodings
    of the queries (DETR Sec. 3.2, "object queries").
    """

    def __init__(
        self,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        normalize_before: bool = False,
        return_intermediate_dec: bool = False,
    ):
        super().__init__()
        encoder_layer = TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout, activation, normalize_before
        )
        # With pre-norm the last encoder layer's output is un-normalised, so a final LN is added.
        encoder_norm = nn.LayerNorm(d_model) if normalize_before else None
        self.encoder = TransformerEncoder(encoder_layer, num_encoder_layers, encoder_norm)

        decoder_layer = TransformerDecoderLayer(
            d_model, nhead, dim_feedforward, dropout, activation, normalize_before
        )
        self.decoder = TransformerDecoder(
            decoder_layer,
            num_decoder_layers,
            nn.LayerNorm(d_model),
            return_intermediate=return_intermediate_dec,
        )

        self._reset_parameters()
        self.d_model = d_model
        self.nhead = nhead

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(
        self, src: Tensor, mask: Tensor | None, query_embed: Tensor, pos_embed: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Encode ``src`` and decode the queries.

        Args:
            src: (N, C, H, W) input features (already projected to ``d_model`` channels).
            mask: (N, H, W) bool, True on padding, or None.
            query_embed: (Q, C) learned query embeddings.
            pos_embed: (N, C, H, W) positional encoding of ``src``.

        Returns:
            hs: (L, N, Q, C) decoder outputs (see ``TransformerDecoder``).
            memory: (N, C, H, W) encoder output.
        """
        n, c, h, w = src.shape
        src = src.flatten(2).permute(2, 0, 1)  # (HW, N, C)
        pos_embed = pos_embed.flatten(2).permute(2, 0, 1)  # (HW, N, C)
        query_embed = query_embed.unsqueeze(1).repeat(1, n, 1)  # (Q, N, C)
        if mask is not None:
            mask = mask.flatten(1)  # (N, HW)

        tgt = torch.zeros_like(query_embed)
        memory = self.encoder(src, src_key_padding_mask=mask, pos=pos_embed)
        hs = self.decoder(
            tgt, memory, memory_key_padding_mask=mask, pos=pos_embed, query_pos=query_embed
        )
        return hs.transpose(1, 2), memory.permute(1, 2, 0).view(n, c, h, w)
