"""Pix2Seq-D image encoder: ResNet-50 'c4' + transformer encoder, and the feature-pyramid merge.

Pix2Seq-D (Chen et al., "A Generalist Framework for Panoptic Segmentation of Images and Videos",
ICCV 2023, Sec. 3.2) encodes the image once with a ResNet followed by transformer encoder
layers, merges the multi-scale maps into one map at mask resolution (concatenated with the noisy
analog bits, conditioning 'cat') and gives the encoder tokens to the denoiser's cross-attention
(conditioning 'attn'). What follows the official TF code (``architectures/resnet.py``,
``architectures/transformers.py`` ``ResNetTransformer``/``TransformerEncoder``,
``architectures/convnet_blocks.py`` ``FeaturePyramidMerge``/``UpsampleBlock``,
``models/panoptic_diffusion.py`` ``encode_images``):

ResNet variant 'c4' in the official code is the standard ResNet (7x7/2 stem conv, 3x3/2 max pool)
with only the first three block groups built: block_group1 (64 -> 256 channels, stride 1,
output stride 4), block_group2 (stride 2, output stride 8) and block_group3 (stride 2, output
stride 16); block_group4 (stride 32) is omitted. The stride of a strided bottleneck sits on its
3x3 conv and the projection shortcut is a strided 1x1 conv + norm. Here that is detectron2's
``ResNet`` made of ``BasicStem`` and three ``make_stage(BottleneckBlock, ...)`` stages named
``res2`` (3 blocks, first stride 1), ``res3`` (4 blocks, first stride 2) and ``res4`` (6 blocks,
first stride 2) for depth 50, with ``stride_in_1x1=False`` by default; there is no ``res5``. The
encoder stride is therefore 16 (``size_divisibility = 16``).

Then the res4 map (N, 1024, H/16, W/16) is flattened to tokens, passed through dropout
(``drop_units``), a linear projection to ``dim`` and a LayerNorm (eps 1e-6), a fixed 2-d sin-cos
position code is added (computed for the run-time grid), ``num_layers`` pre-norm transformer
encoder layers run (self-attention and a GELU MLP, each residual with the same drop-path rate),
and an output LayerNorm follows. No class token (the panoptic configs set use_cls_token=False).
``forward`` returns those tokens and ``[res2, res3, tokens as a map]``, the official
``encoded_list[:-1] + [reshaped tokens]``.

Weights: the ResNet lives under ``backbone`` with detectron2 names, so a detectron2 ResNet state
dict (``stem.conv1.*``, ``res2.0.conv1.*``, ..., ``res4.5.shortcut`` ...) loads into
``encoder.backbone`` (whole-model prefix ``<encoder attr>.backbone.``); a detectron2 R-50 state
dict's ``res5.*`` keys have nowhere to go and must be dropped.

Differences from the official code:
- detectron2's ``BasicStem`` max pool pads one pixel on each side; TF 'SAME' pooling on an even
  input pads only the bottom/right. Output sizes agree, windows are shifted by one pixel.
- detectron2's ImageNet ``R-50.pkl`` (MSRA) was trained with the stride on the 1x1 conv; the
  official encoder has it on the 3x3 conv (``stride_in_1x1=False`` here), which is what a
  torchvision R-50 converted to detectron2 format matches. Pass ``stride_in_1x1=True`` to use
  MSRA weights as trained.
- Only ``pos_encoding="sin_cos"`` is offered: the official learned table is sized by a fixed
  image size, which this encoder does not take.
- A grid of one row or one column gets the official 1-d code; a single-cell grid gets zeros
  (the official formula divides by zero there).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet
from torch import Tensor, nn

from seg_zoo.modeling.backbone.swin import DropPath

__all__ = [
    "FeaturePyramidMerge",
    "ResNetTransformerEncoder",
    "TransformerEncoderLayer",
    "UpsampleBlock",
    "position_codes_1d",
    "position_codes_2d",
    "sincos_encoding",
]

# Coordinates of the fixed position codes are rescaled to [0, 2*pi] (official normalization_max).
POSITION_NORMALIZATION_MAX = 6.2831852
# Blocks per stage (res2, res3, res4) of the bottleneck ResNets; 'c4' never builds res5.
RESNET_C4_BLOCKS = {50: (3, 4, 6), 101: (3, 4, 23), 152: (3, 8, 36), 200: (3, 24, 36)}
# Not in the official code: the basic-block ResNets, for the small CPU configs of the synthetic
# data (detectron2's ResNet-18/34 layout, stages res2..res4).
RESNET_C4_BASIC_BLOCKS = {18: (2, 2, 2), 34: (3, 4, 6)}


# --------------------------------------------------------------------------------------------
# Sin-cos codes (official transformers.positional_encoding / get_{1,2}d_position_codes)
# --------------------------------------------------------------------------------------------
def sincos_encoding(values: Tensor, dim: int) -> Tensor:
    """Encode scalars into ``dim`` features: ``[sin(v * r_k) ..., cos(v * r_k) ...]``.

    ``r_k = 10000 ** (-2k / dim)`` for k < dim/2; all sines come first, then all cosines (the
    official layout, not interleaved). ``values`` of any shape -> ``values.shape + (dim,)``.
    """
    if dim % 2 != 0:
        raise ValueError(f"sincos_encoding: dim must be even, got {dim}")
    half = torch.arange(dim // 2, device=values.device, dtype=torch.float32)
    rates = torch.pow(10000.0, -2.0 * half / dim)
    angles = values.to(torch.float32)[..., None] * rates
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def _normalized_coords(length: int, device: torch.device | None) -> Tensor:
    coords = torch.arange(length, device=device, dtype=torch.float32)
    if length > 1:
        coords = coords / (length - 1) * POSITION_NORMALIZATION_MAX
    return coords


def position_codes_1d(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Fixed 1-d position codes (length, dim) over coordinates rescaled to [0, 2*pi]."""
    return sincos_encoding(_normalized_coords(length, device), dim)


def position_codes_2d(
    height: int, width: int, dim: int, device: torch.device | None = None
) -> Tensor:
    """Fixed 2-d position codes, (height * width, dim), row-major over the grid.

    The first dim/2 channels encode the row, the last dim/2 the column (each a ``dim/2``
    sin-cos code over coordinates rescaled to [0, 2*pi]). As in the official
    ``add_vis_pos_emb``, a grid with one row or one column gets the 1-d code of its length.
    """
    if dim % 4 != 0:
        raise ValueError(f"position_codes_2d: dim must be divisible by 4, got {dim}")
    if height == 1 or width == 1:
        return position_codes_1d(height * width, dim, device)
    rows = sincos_encoding(_normalized_coords(height, device), dim // 2)  # (H, dim/2)
    cols = sincos_encoding(_normalized_coords(width, device), dim // 2)  # (W, dim/2)
    codes = torch.cat(
        [rows[:, None, :].expand(height, width, -1), cols[None, :, :].expand(height, width, -1)],
        dim=-1,
    )  # (H, W, dim)
    return codes.reshape(height * width, dim)


# --------------------------------------------------------------------------------------------
# Transformer encoder (official TransformerEncoderLayer with MLP of one FeedForwardLayer)
# --------------------------------------------------------------------------------------------
class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections (Keras MultiHeadAttention).

    ``key_dim`` is the per-head width; keys/values may come from a ``kv_dim``-wide sequence.
    """

    def __init__(
        self, dim: int, num_heads: int, key_dim: int, kv_dim: int | None = None, dropout=0.0
    ):
        super().__init__()
        kv_dim = dim if kv_dim is None else kv_dim
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.dropout = dropout
        inner = num_heads * key_dim
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(kv_dim, inner)
        self.v_proj = nn.Linear(kv_dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def forward(self, query: Tensor, key_value: Tensor) -> Tensor:
        N, Lq, _ = query.shape
        Lk = key_value.shape[1]
        q = self.q_proj(query).view(N, Lq, self.num_heads, self.key_dim).transpose(1, 2)
        k = self.k_proj(key_value).view(N, Lk, self.num_heads, self.key_dim).transpose(1, 2)
        v = self.v_proj(key_value).view(N, Lk, self.num_heads, self.key_dim).transpose(1, 2)
        # (N, heads, Lq, key_dim)
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(out.transpose(1, 2).reshape(N, Lq, -1))


class FeedForward(nn.Module):
    """Linear -> GELU (exact) -> dropout -> Linear (official FeedForwardLayer, no inner LN)."""

    def __init__(self, dim: int, mlp_dim: int, drop_units: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.dropout = nn.Dropout(drop_units)
        self.fc2 = nn.Linear(mlp_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(F.gelu(self.fc1(x))))


class TransformerEncoderLayer(nn.Module):
    """Pre-norm layer: x + DropPath(MHA(LN(x))), then x + DropPath(MLP(LN(x))); LN eps 1e-6."""

    def __init__(
        self,
        dim: int,
        mlp_dim: int,
        num_heads: int,
        drop_path: float = 0.0,
        drop_units: float = 0.0,
        drop_att: float = 0.0,
    ):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"TransformerEncoderLayer: dim {dim} not divisible by {num_heads}")
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiHeadAttention(dim, num_heads, dim // num_heads, dropout=drop_att)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim, mlp_dim, drop_units)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x_ln = self.norm1(x)
        x = x + self.drop_path(self.attn(x_ln, x_ln))
        return x + self.drop_path(self.mlp(self.norm2(x)))


# --------------------------------------------------------------------------------------------
# ResNet-c4 + transformer encoder
# --------------------------------------------------------------------------------------------
def build_resnet_c4(
    depth: int, norm: str, in_channels: int = 3, stride_in_1x1: bool = False
) -> ResNet:
    """detectron2 ResNet with stem, res2, res3, res4 only (official variant 'c4'), stride 16.

    Depths 50/101/152/200 are the official bottleneck ResNets; 18 and 34 (basic blocks) are a
    seg_zoo addition for small models.
    """
    if depth not in RESNET_C4_BLOCKS and depth not in RESNET_C4_BASIC_BLOCKS:
        raise ValueError(
            f"resnet_depth must be one of "
            f"{sorted(RESNET_C4_BLOCKS) + sorted(RESNET_C4_BASIC_BLOCKS)}, got {depth}"
        )
    stem = BasicStem(in_channels=in_channels, out_channels=64, norm=norm)
    stages = []
    basic = depth in RESNET_C4_BASIC_BLOCKS
    blocks = RESNET_C4_BASIC_BLOCKS[depth] if basic else RESNET_C4_BLOCKS[depth]
    in_ch, bottleneck, out_ch = 64, 64, 64 if basic else 256
    for i, num_blocks in enumerate(blocks):
        first_stride = 1 if i == 0 else 2
        kwargs = dict(
            stride_per_block=[first_stride] + [1] * (num_blocks - 1),
            in_channels=in_ch,
            out_channels=out_ch,
            norm=norm,
        )
        if basic:
            stages.append(ResNet.make_stage(BasicBlock, num_blocks, **kwargs))
        else:
            stages.append(
                ResNet.make_stage(
                    BottleneckBlock,
                    num_blocks,
                    bottleneck_channels=bottleneck,
                    num_groups=1,
                    stride_in_1x1=stride_in_1x1,
                    **kwargs,
                )
            )
        in_ch, bottleneck, out_ch = out_ch, bottleneck * 2, out_ch * 2
    return ResNet(stem, stages, out_features=["res2", "res3", "res4"], freeze_at=0)


class ResNetTransformerEncoder(nn.Module):
    """ResNet-'c4' followed by a transformer encoder over its stride-16 map (official 'resnet-c').

    ``forward(images)`` takes normalised (N, in_channels, H, W) images, H and W multiples of
    ``size_divisibility`` (16), and returns ``(tokens, features)``: tokens (N, H/16 * W/16, dim)
    after the output LayerNorm, row-major over the grid, and features
    ``[res2 (N, 256, H/4, W/4), res3 (N, 512, H/8, W/8), tokens (N, dim, H/16, W/16)]``
    (channel counts for depth 50), high to low resolution.
    """

    size_divisibility = 16

    def __init__(
        self,
        *,
        resnet_depth: int = 50,
        norm: str = "FrozenBN",
        num_layers: int = 12,
        dim: int = 512,
        mlp_dim: int = 2048,
        num_heads: int = 16,
        drop_path: float = 0.1,
        drop_units: float = 0.1,
        drop_att: float = 0.0,
        pos_encoding: str = "sin_cos",
        in_channels: int = 3,
        stride_in_1x1: bool = False,
    ):
        super().__init__()
        if pos_encoding != "sin_cos":
            raise ValueError(
                f"ResNetTransformerEncoder: pos_encoding must be 'sin_cos', got {pos_encoding!r}"
            )
        if norm not in ("FrozenBN", "BN", "GN", "SyncBN"):
            raise ValueError(
                f"ResNetTransformerEncoder: norm must be FrozenBN, BN, GN or SyncBN, got {norm!r}"
            )
        self.dim = dim
        self.in_channels = in_channels
        self.backbone = build_resnet_c4(resnet_depth, norm, in_channels, stride_in_1x1)
        res_shapes = self.backbone.output_shape()
        self.feature_channels = [res_shapes[k].channels for k in ("res2", "res3")] + [dim]
        self.feature_strides = [res_shapes[k].stride for k in ("res2", "res3", "res4")]
        self.token_dropout = nn.Dropout(drop_units)
        self.stem_projection = nn.Linear(res_shapes["res4"].channels, dim)
        self.stem_ln = nn.LayerNorm(dim, eps=1e-6)
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(dim, mlp_dim, num_heads, drop_path, drop_units, drop_att)
            for _ in range(num_layers)
        )
        self.output_ln = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"ResNetTransformerEncoder: images must be (N, {self.in_channels}, H, W), "
                f"got {tuple(images.shape)}"
            )
        H, W = images.shape[-2:]
        s = self.size_divisibility
        if H % s or W % s:
            raise ValueError(
                f"ResNetTransformerEncoder: image size {H}x{W} must be a multiple of {s}"
            )
        res = self.backbone(images)
        res4 = res["res4"]
        N, _, h, w = res4.shape
        tokens = res4.flatten(2).transpose(1, 2)  # (N, h*w, C4)
        tokens = self.stem_ln(self.stem_projection(self.token_dropout(tokens)))
        tokens = tokens + position_codes_2d(h, w, self.dim, tokens.device).to(tokens.dtype)
        for layer in self.layers:
            tokens = layer(tokens)
        tokens = self.output_ln(tokens)
        token_map = tokens.transpose(1, 2).reshape(N, self.dim, h, w)
        return tokens, [res["res2"], res["res3"], token_map]


# --------------------------------------------------------------------------------------------
# Feature pyramid merge (official convnet_blocks.FeaturePyramidMerge)
# --------------------------------------------------------------------------------------------
def _group_norm(channels: int) -> nn.GroupNorm:
    # Official: min(channels // 4, 32) groups, eps 1e-5.
    return nn.GroupNorm(min(channels // 4, 32), channels, eps=1e-5)


class UpsampleBlock(nn.Module):
    """silu(GN(conv3x3(x_hr + up(silu(GN(conv1x1(x_lr))))))); x_hr absent -> 0."""

    def __init__(self, in_channels: int, dim: int, upsample: str = "nearest"):
        super().__init__()
        self.upsample = upsample
        self.conv1 = nn.Conv2d(in_channels, dim, kernel_size=1)
        self.norm1 = _group_norm(dim)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=3, padding=1)
        self.norm2 = _group_norm(dim)

    def forward(self, x_hr: Tensor | None, x_lr: Tensor, size: Sequence[int]) -> Tensor:
        x = F.silu(self.norm1(self.conv1(x_lr)))
        if tuple(x.shape[-2:]) != tuple(size):
            if self.upsample == "nearest":
                x = F.interpolate(x, size=tuple(size), mode="nearest")
            else:
                x = F.interpolate(x, size=tuple(size), mode=self.upsample, align_corners=False)
        if x_hr is not None:
            x = x_hr + x
        return F.silu(self.norm2(self.conv2(x)))


class FeaturePyramidMerge(nn.Module):
    """Merge maps from low to high resolution, then bring the result to ``out_size``.

    ``in_channels`` lists the channels of the inputs from high to low resolution. Going from the
    lowest map up, ``upsample_blocks[i-1]`` merges the running map into input ``i-1`` (1x1 conv
    to its channels, upsample, add, 3x3 conv; no upsampling when the sizes already match). As in
    the official code, a high-resolution input larger than ``out_size`` is skipped (the running
    map is kept), and the final block (to ``out_dim`` channels at ``out_size``) is skipped when
    the running map already has ``out_size``; the output then keeps that map's channels.
    """

    def __init__(self, in_channels: Sequence[int], out_dim: int = 256, upsample: str = "nearest"):
        super().__init__()
        if len(in_channels) < 1:
            raise ValueError("FeaturePyramidMerge: in_channels must list at least one map")
        if upsample not in ("nearest", "bilinear"):
            raise ValueError(
                f"FeaturePyramidMerge: upsample must be nearest|bilinear, got {upsample!r}"
            )
        self.in_channels = list(in_channels)
        self.out_dim = out_dim
        # upsample_blocks[i-1] merges level i (low res) into level i-1 (high res).
        self.upsample_blocks = nn.ModuleList(
            UpsampleBlock(self.in_channels[i], self.in_channels[i - 1], upsample)
            for i in range(1, len(self.in_channels))
        )
        self.final_block = UpsampleBlock(self.in_channels[0], out_dim, upsample)

    def forward(self, features: Sequence[Tensor], out_size: Sequence[int]) -> Tensor:
        if len(features) != len(self.in_channels):
            raise ValueError(
                f"FeaturePyramidMerge: expected {len(self.in_channels)} feature maps, "
                f"got {len(features)}"
            )
        for i, (f, c) in enumerate(zip(features, self.in_channels)):
            if f.dim() != 4 or f.shape[1] != c:
                raise ValueError(
                    f"FeaturePyramidMerge: features[{i}] must be (N, {c}, h, w), "
                    f"got {tuple(f.shape)}"
                )
        out_h, out_w = int(out_size[0]), int(out_size[1])
        x = features[-1]
        for i in range(len(features) - 1, 0, -1):
            hr = features[i - 1]
            if hr.shape[-2] > out_h or hr.shape[-1] > out_w:
                continue  # keep the lower-resolution running map, as the official code does
            x = self.upsample_blocks[i - 1](hr, x, hr.shape[-2:])
        if tuple(x.shape[-2:]) == (out_h, out_w):
            return x
        if x.shape[1] != self.in_channels[0]:
            raise ValueError(
                f"FeaturePyramidMerge: cannot bring a {tuple(x.shape)} map to {out_h}x{out_w}: "
                f"a skipped level left {x.shape[1]} channels, final block expects "
                f"{self.in_channels[0]}"
            )
        return self.final_block(None, x, (out_h, out_w))
