"""Mask2Former's pixel decoder: a multi-scale deformable-attention encoder plus an FPN.

(Cheng et al. 2022, "Masked-attention Mask Transformer for Universal Image Segmentation",
Sec. 3.2 and 4.) The res3-res5 features are projected to ``conv_dim`` channels and refined
jointly by six deformable-attention encoder layers (Deformable DETR, Zhu et al. 2021, Sec.
4.1); the higher-resolution features (res2) join through FPN lateral/output convs, and a 1x1
conv turns the finest map into the per-pixel embeddings the masks are computed from.

Module and parameter names follow the official implementation, so its checkpoints load
unchanged: ``input_proj.<i>.{0,1}``, ``transformer.level_embed``,
``transformer.encoder.layers.<j>.{self_attn,norm1,linear1,linear2,norm2}``,
``adapter_<k>``, ``layer_<k>``, ``mask_features``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

from seg_zoo.layers import MSDeformAttn

from ..transformer_decoder.position_encoding import PositionEmbeddingSine
from ..transformer_decoder.transformer import _get_activation_fn

__all__ = [
    "MSDeformAttnPixelDecoder",
    "MSDeformAttnTransformerEncoder",
    "MSDeformAttnTransformerEncoderLayer",
    "MSDeformAttnTransformerEncoderOnly",
]


class MSDeformAttnTransformerEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention, then a feed-forward network."""

    def __init__(
        self,
        d_model: int = 256,
        d_ffn: int = 1024,
        dropout: float = 0.1,
        activation: str = "relu",
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
    ):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)

        self.linear1 = nn.Linear(d_model, d_ffn)
        self.activation = _get_activation_fn(activation)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        src: Tensor,
        pos: Tensor | None,
        reference_points: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """src, pos: (N, S, d_model); reference_points: (N, S, n_levels, 2) -> (N, S, d_model)."""
        # The position encoding enters the queries only; values are the plain features.
        query = src if pos is None else src + pos
        attended = self.self_attn(
            query, reference_points, src, spatial_shapes, level_start_index, padding_mask
        )
        src = self.norm1(src + self.dropout1(attended))
        ffn = self.linear2(self.dropout2(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


class MSDeformAttnTransformerEncoder(nn.Module):
    """A stack of :class:`MSDeformAttnTransformerEncoderLayer` sharing reference points."""

    def __init__(self, layers: Sequence[MSDeformAttnTransformerEncoderLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.num_layers = len(self.layers)

    @staticmethod
    def get_reference_points(
        shapes: Sequence[tuple[int, int]], batch_size: int, device: torch.device
    ) -> Tensor:
        """Normalised (x, y) pixel centres of every level, repeated for every level.

        Returns (batch_size, S, L, 2): the query at a pixel of level l samples each level
        around the same relative position. Without padding every valid ratio is 1, which is
        what the official code computes from its all-False masks.
        """
        points = []
        for height, width in shapes:
            ref_y, ref_x = torch.meshgrid(
                torch.linspace(0.5, height - 0.5, height, dtype=torch.float32, device=device),
                torch.linspace(0.5, width - 0.5, width, dtype=torch.float32, device=device),
                indexing="ij",
            )
            points.append(torch.stack((ref_x.reshape(-1) / width, ref_y.reshape(-1) / height), -1))
        # (S, 2) -> (N, S, L, 2)
        reference_points = torch.cat(points, 0)
        return reference_points[None, :, None, :].expand(batch_size, -1, len(shapes), -1)

    def forward(
        self,
        src: Tensor,
        shapes: Sequence[tuple[int, int]],
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        pos: Tensor | None = None,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """
        Args:
            src: (N, S, d_model), the levels flattened and concatenated.
            shapes: (H_l, W_l) of every level, as Python ints.
            spatial_shapes, level_start_index: the same table as int64 tensors, (L, 2) and (L,);
                on the CPU they spare the op a device-to-host copy.
            pos: (N, S, d_model) position (+ level) embeddings added to the queries.
            padding_mask: (N, S) bool, True at padding.
        """
        reference_points = self.get_reference_points(shapes, src.shape[0], src.device)
        output = src
        for layer in self.layers:
            output = layer(
                output, pos, reference_points, spatial_shapes, level_start_index, padding_mask
            )
        return output


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """The encoder of Deformable DETR over a list of feature maps, plus learned level embeddings."""

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        activation: str = "relu",
        num_feature_levels: int = 4,
        enc_n_points: int = 4,
    ):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        self.encoder = MSDeformAttnTransformerEncoder(
            [
                MSDeformAttnTransformerEncoderLayer(
                    d_model,
                    dim_feedforward,
                    dropout,
                    activation,
                    num_feature_levels,
                    nhead,
                    enc_n_points,
                )
                for _ in range(num_encoder_layers)
            ]
        )
        # Tells the encoder which level a token comes from (they share position encodings).
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: Sequence[Tensor], pos_embeds: Sequence[Tensor]):
        """
        Args:
            srcs: L maps (N, d_model, H_l, W_l).
            pos_embeds: their position encodings, same shapes.

        Returns:
            memory (N, S, d_model) with S = sum_l H_l * W_l, levels in the order given;
            spatial_shapes (L, 2) and level_start_index (L,), int64 on memory's device.
        """
        shapes = [(src.shape[2], src.shape[3]) for src in srcs]
        # (N, C, H, W) -> (N, H*W, C), levels concatenated: (N, S, C)
        src_flatten = torch.cat([src.flatten(2).transpose(1, 2) for src in srcs], 1)
        lvl_pos_embed_flatten = torch.cat(
            [
                pos.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
                for lvl, pos in enumerate(pos_embeds)
            ],
            1,
        )
        # The op reads the level table on the host: hand it CPU tensors (no device sync).
        spatial_shapes_cpu = torch.tensor(shapes, dtype=torch.int64).view(-1, 2)
        level_start_index_cpu = torch.cat(
            (spatial_shapes_cpu.new_zeros(1), spatial_shapes_cpu.prod(1).cumsum(0)[:-1])
        )
        memory = self.encoder(
            src_flatten,
            shapes,
            spatial_shapes_cpu,
            level_start_index_cpu,
            pos=lvl_pos_embed_flatten,
        )
        device = src_flatten.device
        return memory, spatial_shapes_cpu.to(device), level_start_index_cpu.to(device)


@SEM_SEG_HEADS_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """Deformable-attention encoder over the coarse levels, FPN convs for the finer ones."""

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        conv_dim: int,
        mask_dim: int,
        norm: str | Callable[[int], nn.Module] | None = None,
        transformer_in_features: Sequence[str],
        common_stride: int,
        transformer_n_points: int = 4,
    ):
        """
        Args:
            input_shape: channels and stride of every backbone feature the decoder reads.
            transformer_dropout: dropout in the encoder layers.
            transformer_nheads: attention heads of the encoder.
            transformer_dim_feedforward: hidden width of the encoder's feed-forward networks.
            transformer_enc_layers: number of encoder layers.
            conv_dim: channels of the encoder and of the FPN convs.
            mask_dim: channels of the per-pixel embeddings (mask features).
            norm: normalization of the FPN convs ("GN", ...); "" gives biased convs without.
            transformer_in_features: the features the encoder attends over (e.g. res3-res5);
                the others, of finer stride, get FPN lateral/output convs.
            common_stride: stride of the mask features; FPN levels are added down to it.
            transformer_n_points: sampling points per head and level.
        """
        super().__init__()
        # Everything below is ordered from fine to coarse ("res2" -> "res5").
        input_shape = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in input_shape]
        self.feature_strides = [v.stride for _, v in input_shape]
        self.feature_channels = [v.channels for _, v in input_shape]

        transformer_shape = [(k, v) for k, v in input_shape if k in transformer_in_features]
        self.transformer_in_features = [k for k, _ in transformer_shape]
        transformer_in_channels = [v.channels for _, v in transformer_shape]
        self.transformer_feature_strides = [v.stride for _, v in transformer_shape]
        self.transformer_num_feature_levels = len(self.transformer_in_features)

        # Input projections from coarse to fine (res5 first), the encoder's level order.
        self.input_proj = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim)
            )
            for in_channels in transformer_in_channels[::-1]
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)

        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim,
            dropout=transformer_dropout,
            nhead=transformer_nheads,
            dim_feedforward=transformer_dim_feedforward,
            num_encoder_layers=transformer_enc_layers,
            num_feature_levels=self.transformer_num_feature_levels,
            enc_n_points=transformer_n_points,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1, stride=1, padding=0)
        weight_init.c2_xavier_fill(self.mask_features)

        # The transformer decoder reads the three coarsest maps (strides 32, 16, 8).
        self.maskformer_num_feature_levels = 3
        self.common_stride = common_stride

        # FPN levels for the features finer than the encoder's, down to common_stride.
        stride = min(self.transformer_feature_strides)
        self.num_fpn_levels = int(math.log2(stride) - math.log2(common_stride))
        use_bias = norm == ""
        lateral_convs = []
        output_convs = []
        for idx, in_channels in enumerate(self.feature_channels[: self.num_fpn_levels]):
            lateral_conv = Conv2d(
                in_channels,
                conv_dim,
                kernel_size=1,
                bias=use_bias,
                norm=get_norm(norm, conv_dim),
            )
            output_conv = Conv2d(
                conv_dim,
                conv_dim,
                kernel_size=3,
                stride=1,
                padding=1,
                bias=use_bias,
                norm=get_norm(norm, conv_dim),
                activation=F.relu,
            )
            weight_init.c2_xavier_fill(lateral_conv)
            weight_init.c2_xavier_fill(output_conv)
            self.add_module(f"adapter_{idx + 1}", lateral_conv)
            self.add_module(f"layer_{idx + 1}", output_conv)
            lateral_convs.append(lateral_conv)
            output_convs.append(output_conv)
        # Plain lists (the modules are registered above under their official names), in
        # top-down order: coarse to fine.
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
            "transformer_dropout": cfg.MODEL.MASK_FORMER.DROPOUT,
            # As the official code: the heads of the transformer decoder, not
            # DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS (declared but unread there too).
            "transformer_nheads": cfg.MODEL.MASK_FORMER.NHEADS,
            # Fixed, as in the official code: MASK_FORMER.DIM_FEEDFORWARD sizes the decoder.
            "transformer_dim_feedforward": 1024,
            "transformer_enc_layers": head.TRANSFORMER_ENC_LAYERS,
            "transformer_in_features": head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES,
            "common_stride": head.COMMON_STRIDE,
            # The official code always uses 4 (the key's default) and does not read the key.
            "transformer_n_points": head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS,
        }

    def forward_features(self, features: dict[str, Tensor]) -> tuple[Tensor, Tensor, list[Tensor]]:
        """
        Args:
            features: backbone maps by name, (N, C_f, H_f, W_f).

        Returns:
            mask_features: (N, mask_dim, H, W) at the finest FPN level (stride common_stride);
            the encoder's output at the coarsest level (N, conv_dim, H_32, W_32);
            multi_scale_features: the 3 coarsest maps (N, conv_dim, H, W), coarse to fine.
        """
        device_type = next(iter(features.values())).device.type
        # The deformable attention runs in fp32 (as the official code: it does not support
        # half precision), so autocast is off for the whole decoder.
        with torch.autocast(device_type=device_type, enabled=False):
            srcs = []
            pos = []
            for idx, f in enumerate(self.transformer_in_features[::-1]):
                x = features[f].float()
                srcs.append(self.input_proj[idx](x))
                pos.append(self.pe_layer(x))
            shapes = [(src.shape[2], src.shape[3]) for src in srcs]
            memory, _, _ = self.transformer(srcs, pos)

            n = memory.shape[0]
            # (N, S, C) -> per level (N, C, H_l, W_l)
            out = [
                z.transpose(1, 2).view(n, -1, h, w)
                for z, (h, w) in zip(memory.split([h * w for h, w in shapes], dim=1), shapes)
            ]
            for idx, f in enumerate(self.in_features[: self.num_fpn_levels][::-1]):
                lateral = self.lateral_convs[idx](features[f].float())
                # Bilinear (the official choice here), not FPN's nearest upsampling.
                top_down = F.interpolate(
                    out[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False
                )
                out.append(self.output_convs[idx](lateral + top_down))
            multi_scale_features = out[: self.maskformer_num_feature_levels]
            return self.mask_features(out[-1]), out[0], multi_scale_features

    def forward(self, features: dict[str, Tensor]) -> tuple[Tensor, Tensor, list[Tensor]]:
        return self.forward_features(features)
