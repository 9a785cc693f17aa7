"""MaskFormer's pixel decoders: an FPN, optionally with a transformer encoder on res5.

(Cheng et al. 2021, "Per-Pixel Classification is Not All You Need for Semantic Segmentation",
Sec. 3.4; Mask2Former, Cheng et al. 2022, Sec. 4.4, Table 4e.) ``BasePixelDecoder`` is a
light FPN whose coarsest level is a 3x3 conv; ``TransformerEncoderPixelDecoder`` puts a
standard transformer encoder (DETR, Carion et al. 2020) in front of that conv.
:func:`build_pixel_decoder` builds whichever decoder the config names.

Module and parameter names follow the official implementation: ``adapter_<k>`` (lateral 1x1
convs), ``layer_<k>`` (output 3x3 convs), ``mask_features``, and for the transformer variant
``input_proj``, ``transformer.encoder.layers.<j>.{self_attn,linear1,linear2,norm1,norm2}``.
"""

from __future__ import annotations

from collections.abc import Callable

import fvcore.nn.weight_init as weight_init
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

from ..transformer_decoder.position_encoding import PositionEmbeddingSine
from ..transformer_decoder.transformer import TransformerEncoder, TransformerEncoderLayer

__all__ = [
    "BasePixelDecoder",
    "TransformerEncoderOnly",
    "TransformerEncoderPixelDecoder",
    "build_pixel_decoder",
]

Norm = str | Callable[[int], nn.Module] | None


def build_pixel_decoder(cfg, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """Build the pixel decoder named by ``cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME``.

    Pixel decoders live in detectron2's ``SEM_SEG_HEADS_REGISTRY`` (as in the official code);
    a head registered there can serve only if it has ``forward_features``.
    """
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    model = SEM_SEG_HEADS_REGISTRY.get(name)(cfg, input_shape)
    if not callable(getattr(model, "forward_features", None)):
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME is {name!r}, which has no "
            "forward_features(features) method; a pixel decoder must implement it to return "
            "(mask_features, transformer_encoder_features, multi_scale_features)"
        )
    return model


def _output_conv(in_channels: int, conv_dim: int, norm: Norm) -> Conv2d:
    """3x3 conv + norm + ReLU, biased only when there is no norm (norm == "")."""
    conv = Conv2d(
        in_channels,
        conv_dim,
        kernel_size=3,
        stride=1,
        padding=1,
        bias=norm == "",
        norm=get_norm(norm, conv_dim),
        activation=F.relu,
    )
    weight_init.c2_xavier_fill(conv)
    return conv


def _lateral_conv(in_channels: int, conv_dim: int, norm: Norm) -> Conv2d:
    """1x1 conv + norm, biased only when there is no norm (norm == "")."""
    conv = Conv2d(
        in_channels, conv_dim, kernel_size=1, bias=norm == "", norm=get_norm(norm, conv_dim)
    )
    weight_init.c2_xavier_fill(conv)
    return conv


@SEM_SEG_HEADS_REGISTRY.register()
class BasePixelDecoder(nn.Module):
    """FPN (Lin et al. 2017) with a 3x3 conv + norm + ReLU after every top-down merge."""

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        conv_dim: int,
        mask_dim: int,
        norm: Norm = None,
    ):
        """
        Args:
            input_shape: channels and stride of every backbone feature the decoder reads.
            conv_dim: channels of the FPN convs.
            mask_dim: channels of the per-pixel embeddings (mask features).
            norm: normalization of the FPN convs ("GN", ...); "" gives biased convs without.
        """
        super().__init__()
        # Fine to coarse ("res2" -> "res5").
        input_shape = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in input_shape]
        feature_channels = [v.channels for _, v in input_shape]

        lateral_convs: list[Conv2d | None] = []
        output_convs: list[Conv2d] = []
        for idx, in_channels in enumerate(feature_channels):
            if idx == len(self.in_features) - 1:
                # The coarsest level has nothing to merge: its output conv reads it directly.
                output_conv = _output_conv(in_channels, conv_dim, norm)
                lateral_convs.append(None)
            else:
                lateral_conv = _lateral_conv(in_channels, conv_dim, norm)
                output_conv = _output_conv(conv_dim, conv_dim, norm)
                self.add_module(f"adapter_{idx + 1}", lateral_conv)
                lateral_convs.append(lateral_conv)
            self.add_module(f"layer_{idx + 1}", output_conv)
            output_convs.append(output_conv)
        # Plain lists (the modules are registered above under their official names), in
        # top-down order: coarse to fine.
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=3, stride=1, padding=1)
        weight_init.c2_xavier_fill(self.mask_features)

        # The transformer decoder reads the three coarsest maps.
        self.maskformer_num_feature_levels = 3

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
        }

    def _coarsest(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The coarsest level's output, and what the transformer decoder may read from it."""
        return self.output_convs[0](x), None

    def forward_features(
        self, features: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        """
        Args:
            features: backbone maps by name, (N, C_f, H_f, W_f).

        Returns:
            mask_features (N, mask_dim, H, W) at the finest level; the transformer encoder's
            output on the coarsest level, or None without one; the 3 coarsest output maps
            (N, conv_dim, H, W), coarse to fine.
        """
        multi_scale_features = []
        transformer_encoder_features = None
        y = None
        for idx, f in enumerate(self.in_features[::-1]):
            x = features[f]
            lateral_conv = self.lateral_convs[idx]
            if lateral_conv is None:
                y, transformer_encoder_features = self._coarsest(x)
            else:
                lateral = lateral_conv(x)
                y = lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest")
                y = self.output_convs[idx](y)
            if len(multi_scale_features) < self.maskformer_num_feature_levels:
                multi_scale_features.append(y)
        return self.mask_features(y), transformer_encoder_features, multi_scale_features

    def forward(self, features: dict[str, Tensor]) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        return self.forward_features(features)


class TransformerEncoderOnly(nn.Module):
    """A transformer encoder over one feature map: (N, C, H, W) -> (N, C, H, W)."""

    def __init__(
        self,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        normalize_before: bool = False,
    ):
        super().__init__()
        layer = TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout, activation, normalize_before
        )
        self.encoder = TransformerEncoder(
            layer, num_encoder_layers, nn.LayerNorm(d_model) if normalize_before else None
        )
        self.d_model = d_model
        self.nhead = nhead
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src: Tensor, mask: Tensor | None, pos_embed: Tensor) -> Tensor:
        """src, pos_embed: (N, C, H, W); mask: (N, H, W) bool, True at padding, or None."""
        n, c, h, w = src.shape
        # (N, C, H, W) -> (H*W, N, C)
        src = src.flatten(2).permute(2, 0, 1)
        pos_embed = pos_embed.flatten(2).permute(2, 0, 1)
        if mask is not None:
            mask = mask.flatten(1)
        memory = self.encoder(src, src_key_padding_mask=mask, pos=pos_embed)
        # (H*W, N, C) -> (N, C, H, W)
        return memory.permute(1, 2, 0).view(n, c, h, w)


@SEM_SEG_HEADS_REGISTRY.register()
class TransformerEncoderPixelDecoder(BasePixelDecoder):
    """:class:`BasePixelDecoder` with a transformer encoder on the coarsest feature."""

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        transformer_pre_norm: bool,
        conv_dim: int,
        mask_dim: int,
        norm: Norm = None,
    ):
        """
        Args:
            input_shape: channels and stride of every backbone feature the decoder reads.
            transformer_dropout: dropout in the encoder layers.
            transformer_nheads: attention heads of the encoder.
            transformer_dim_feedforward: hidden width of the encoder's feed-forward networks.
            transformer_enc_layers: number of encoder layers.
            transformer_pre_norm: LayerNorm before (True) rather than after each block.
            conv_dim: channels of the encoder and of the FPN convs.
            mask_dim: channels of the per-pixel embeddings (mask features).
            norm: normalization of the FPN convs ("GN", ...); "" gives biased convs without.
        """
        super().__init__(input_shape, conv_dim=conv_dim, mask_dim=mask_dim, norm=norm)
        in_channels = max(input_shape.values(), key=lambda v: v.stride).channels
        self.input_proj = Conv2d(in_channels, conv_dim, kernel_size=1)
        weight_init.c2_xavier_fill(self.input_proj)
        self.transformer = TransformerEncoderOnly(
            d_model=conv_dim,
            dropout=transformer_dropout,
            nhead=transformer_nheads,
            dim_feedforward=transformer_dim_feedforward,
            num_encoder_layers=transformer_enc_layers,
            normalize_before=transformer_pre_norm,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        # The coarsest output conv now reads the encoder's conv_dim channels: replace it
        # (same name, so the state_dict keeps the official layout).
        output_conv = _output_conv(conv_dim, conv_dim, norm)
        setattr(self, f"layer_{len(self.in_features)}", output_conv)
        self.output_convs[0] = output_conv

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> dict:
        ret = super().from_config(cfg, input_shape)
        ret["transformer_dropout"] = cfg.MODEL.MASK_FORMER.DROPOUT
        ret["transformer_nheads"] = cfg.MODEL.MASK_FORMER.NHEADS
        ret["transformer_dim_feedforward"] = cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD
        ret["transformer_enc_layers"] = cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS
        ret["transformer_pre_norm"] = cfg.MODEL.MASK_FORMER.PRE_NORM
        return ret

    def _coarsest(self, x: Tensor) -> tuple[Tensor, Tensor]:
        encoded = self.transformer(self.input_proj(x), None, self.pe_layer(x))
        # The encoder's output is what the transformer decoder reads (MaskFormer, Sec. 3.4).
        return self.output_convs[0](encoded), encoded
