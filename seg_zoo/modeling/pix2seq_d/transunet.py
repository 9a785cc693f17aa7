"""Pix2Seq-D denoiser: a TransUNet (U-Net of ResNet blocks with a transformer at the bottom).

Pix2Seq-D (Chen et al., ICCV 2023, Sec. 3.2) denoises the noisy analog bits of the panoptic
mask, concatenated with the fused image features, conditioned on the noise level ``gamma`` and
(conditioning 'attn') cross-attending to the image encoder's tokens. What follows the official
TF code (``architectures/transunet.py`` ``TransUNet``/``ConvUnit``/``ResnetBasicBlock``/
``Transformer``/``ScalarEmbedding``, ``architectures/transformers.py`` ``TransformerDecoder``,
wired as in ``models/panoptic_diffusion.py``):

- Time: ``gamma * time_scaling`` gets a ``dim``-wide sin-cos code, then Linear(dim, 4 dim), SiLU,
  Linear(4 dim, 4 dim), SiLU; every ResNet block maps it to a per-channel scale (+1) and shift
  applied after its second GroupNorm.
- Input: conv (``in_kernel_size``) to ``dim * ch_multipliers[0]``, then GroupNorm, no activation.
- Down path: per level, ``n_res_blocks[i]`` ResNet blocks (GN, SiLU, conv, GN * (1+scale) +
  shift, SiLU, dropout, conv; shortcut 1x1 conv when widths differ; output (x + skip)/sqrt(2)),
  then a 3x3 stride-2 conv except at the last level. Every block output and every downsampled
  map is kept for the lateral connections.
- Bottom: GroupNorm, conv (kernel = stride = ``transformer_strides``) to ``transformer_dim``,
  flatten, add 2-d sin-cos codes, append one token Linear(time embedding), ``transformer_blocks``
  pre-norm decoder layers (self-attention, cross-attention to the encoder tokens when
  ``cond_dim`` is set, GELU MLP of ratio 4), drop the time token, GroupNorm, 1x1 conv, and
  depth-to-space by ``transformer_strides`` (TF channel order).
- Up path: per level from the bottom, ``n_res_blocks[i] + 1`` ResNet blocks, each first
  concatenating the last kept lateral map, then nearest 2x upsampling + 3x3 conv except at the
  top level.
- Output: GroupNorm, SiLU, conv (``out_kernel_size``) to ``out_channels``: raw outputs (logits of
  the softmax groups for ``x_softmax_xent``; the caller turns them into bits).
- GroupNorm groups are ``min(channels // 4, 32)`` (eps 1e-5) everywhere, computed from the
  normalised width except where the official code computes them from another width: the
  transformer's input norm uses ``min(transformer_dim // 4, 32)`` groups and the output norm
  ``min(dim // 4, 32)`` groups. LayerNorms have eps 1e-6.
- Level attention (``mhsa_resolutions``): at a level whose input height is listed, each block is
  followed by cross-attention (if ``cond_dim``) and self-attention, each GroupNorm(32) ->
  multi-head attention (``per_head_dim`` wide heads) -> (x + out)/sqrt(2). The panoptic recipe
  uses (0,), i.e. none.

Differences from the official code:
- The official ``time_scaling`` for the panoptic model is not set in the released panoptic
  configs (``config.model.time_scaling`` is read but never defined there; the TransUNet
  constructor default is 1e4 and the shared diffusion base config uses 1000). The default here
  is 1000, the value of the diffusion base config the panoptic model was built from.
- Keras builds level attention only where the build-time height matched; a torch module must
  exist before the first input, so when ``mhsa_resolutions`` lists any positive height, every
  level gets attention modules and uses them only at listed heights (unused ones add
  parameters). With the recipe's (0,) the parameter list is the official one.
- The softmax-group output conv is always 1x1 in the official code; here it is
  ``out_kernel_size`` (1 in the recipe). ``in_strides``, ``n_mlp_blocks`` and vector-valued
  time inputs are not offered (1, 0 and scalar in the recipe).
- Strided convs use TF 'SAME' padding (bottom/right only on even sizes), so ported weights see
  the same pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seg_zoo.modeling.pix2seq_d.encoder import (
    FeedForward,
    MultiHeadAttention,
    position_codes_2d,
    sincos_encoding,
)

__all__ = [
    "ConvUnit",
    "ResnetBasicBlock",
    "ScalarEmbedding",
    "TransUNet",
    "TransUNetTransformer",
]

# The panoptic recipe does not define it; 1000 is the shared diffusion base config's value.
DEFAULT_TIME_SCALING = 1000.0


def _group_norm(channels: int, groups_from: int | None = None) -> nn.GroupNorm:
    groups = min((channels if groups_from is None else groups_from) // 4, 32)
    if groups < 1 or channels % groups:
        raise ValueError(
            f"TransUNet: GroupNorm with {groups} groups cannot split {channels} channels; "
            "choose widths that are multiples of min(width // 4, 32)"
        )
    return nn.GroupNorm(groups, channels, eps=1e-5)


def _scaled_sum(a: Tensor, b: Tensor) -> Tensor:
    # Official residual merge: keeps the variance of a sum of two unit-variance branches at 1.
    return (a + b) / math.sqrt(2.0)


def _pad_same_stride2(x: Tensor) -> Tensor:
    """TF 'SAME' padding for a 3x3 stride-2 conv: (0, 1) on even sizes, (1, 1) on odd ones."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / 2) - 1) * 2 + 3 - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def depth_to_space(x: Tensor, block: int) -> Tensor:
    """TF ``depth_to_space`` for NCHW: channel (i*block + j)*C + c -> pixel offset (i, j)."""
    N, C_total, h, w = x.shape
    C = C_total // (block * block)
    x = x.view(N, block, block, C, h, w)
    x = x.permute(0, 3, 4, 1, 5, 2)  # (N, C, h, i, w, j)
    return x.reshape(N, C, h * block, w * block)


class ScalarEmbedding(nn.Module):
    """Noise level -> (N, expansion*dim): sin-cos(gamma*scaling), Linear, SiLU, Linear, SiLU."""

    def __init__(self, dim: int, scaling: float, expansion: int = 4):
        super().__init__()
        self.dim = dim
        self.scaling = scaling
        self.dense0 = nn.Linear(dim, dim * expansion)
        self.dense1 = nn.Linear(dim * expansion, dim * expansion)

    def forward(self, gamma: Tensor) -> Tensor:
        x = sincos_encoding(gamma * self.scaling, self.dim).to(self.dense0.weight.dtype)
        return F.silu(self.dense1(F.silu(self.dense0(x))))


class ResnetBasicBlock(nn.Module):
    """GN-SiLU-conv, GN with time scale/shift, SiLU, dropout, conv; (x + shortcut)/sqrt(2)."""

    def __init__(
        self, in_dim: int, out_dim: int, emb_dim: int, kernel_size: int = 3, dropout: float = 0.0
    ):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"TransUNet: kernel_size must be odd, got {kernel_size}")
        pad = kernel_size // 2
        self.shortcut = nn.Conv2d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()
        self.emb_proj = nn.Linear(emb_dim, out_dim * 2)
        self.norm0 = _group_norm(in_dim)
        self.conv0 = nn.Conv2d(in_dim, out_dim, kernel_size, padding=pad)
        self.norm1 = _group_norm(out_dim)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = nn.Conv2d(out_dim, out_dim, kernel_size, padding=pad)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        skip = self.shortcut(x)
        scale, shift = self.emb_proj(emb)[:, :, None, None].chunk(2, dim=1)
        x = self.conv0(F.silu(self.norm0(x)))
        x = F.silu(self.norm1(x) * (scale + 1.0) + shift)
        x = self.conv1(self.dropout(x))
        return _scaled_sum(x, skip)


class _MapAttention(nn.Module):
    """GroupNorm(32) then attention over the (h*w) positions of a map; (x + out)/sqrt(2)."""

    def __init__(self, dim: int, per_head_dim: int, kv_dim: int | None):
        super().__init__()
        if dim % per_head_dim:
            raise ValueError(f"TransUNet: width {dim} not divisible by per_head_dim {per_head_dim}")
        self.norm = nn.GroupNorm(min(32, dim), dim, eps=1e-5)
        self.attn = MultiHeadAttention(dim, dim // per_head_dim, per_head_dim, kv_dim)
        self.cross = kv_dim is not None

    def forward(self, x: Tensor, cond: Tensor | None) -> Tensor:
        N, C, h, w = x.shape
        q = self.norm(x).flatten(2).transpose(1, 2)  # (N, h*w, C)
        out = self.attn(q, cond if self.cross else q)
        return _scaled_sum(x, out.transpose(1, 2).reshape(N, C, h, w))


class ConvUnit(nn.Module):
    """One U-Net level: ResNet blocks (+ optional attention), then down- or up-sampling.

    ``block_in_dims`` gives each block's input width (after the lateral concat on the up path).
    """

    def __init__(
        self,
        block_in_dims: Sequence[int],
        out_dim: int,
        emb_dim: int,
        *,
        kernel_size: int,
        dropout: float,
        expect_lateral: bool,
        up_dn_sample: str,
        attention: bool,
        per_head_dim: int,
        cond_dim: int | None,
    ):
        super().__init__()
        self.expect_lateral = expect_lateral
        self.up_dn_sample = up_dn_sample
        self.res_blocks = nn.ModuleList(
            ResnetBasicBlock(c, out_dim, emb_dim, kernel_size, dropout) for c in block_in_dims
        )
        n = len(block_in_dims) if attention else 0
        self.self_attn = nn.ModuleList(_MapAttention(out_dim, per_head_dim, None) for _ in range(n))
        self.cross_attn = nn.ModuleList(
            _MapAttention(out_dim, per_head_dim, cond_dim) for _ in range(n if cond_dim else 0)
        )
        if up_dn_sample == "dn":
            self.conv_dn = nn.Conv2d(out_dim, out_dim, 3, stride=2)
        elif up_dn_sample == "up":
            self.conv_up = nn.Conv2d(out_dim, out_dim, 3, padding=1)
        elif up_dn_sample != "none":
            raise ValueError(f"ConvUnit: up_dn_sample must be dn|up|none, got {up_dn_sample!r}")

    def forward(
        self,
        x: Tensor,
        emb: Tensor,
        cond: Tensor | None,
        laterals: list[Tensor],
        use_attention: bool,
    ) -> Tensor:
        for i, block in enumerate(self.res_blocks):
            if self.expect_lateral:
                x = torch.cat([x, laterals.pop()], dim=1)
            x = block(x, emb)
            if not self.expect_lateral:
                laterals.append(x)
            if use_attention and len(self.self_attn):
                # Official order: cross-attention to the encoder tokens, then self-attention.
                if len(self.cross_attn):
                    x = self.cross_attn[i](x, cond)
                x = self.self_attn[i](x, None)
        if self.up_dn_sample == "dn":
            x = self.conv_dn(_pad_same_stride2(x))
            laterals.append(x)
        elif self.up_dn_sample == "up":
            x = self.conv_up(F.interpolate(x, scale_factor=2, mode="nearest"))
        return x


class TransformerDecoderLayer(nn.Module):
    """Pre-norm layer: self-attention, optional cross-attention, GELU MLP (LN eps 1e-6)."""

    def __init__(
        self, dim: int, num_heads: int, mlp_dim: int, drop_units: float, cond_dim: int | None
    ):
        super().__init__()
        self.self_ln = nn.LayerNorm(dim, eps=1e-6)
        self.self_attn = MultiHeadAttention(dim, num_heads, dim // num_heads)
        self.cross_ln = nn.LayerNorm(dim, eps=1e-6) if cond_dim else None
        self.cross_attn = (
            MultiHeadAttention(dim, num_heads, dim // num_heads, kv_dim=cond_dim)
            if cond_dim
            else None
        )
        self.mlp_ln = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim, mlp_dim, drop_units)

    def forward(self, x: Tensor, cond: Tensor | None) -> Tensor:
        x_ln = self.self_ln(x)
        x = x + self.self_attn(x_ln, x_ln)
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.cross_ln(x), cond)
        return x + self.mlp(self.mlp_ln(x))


class TransUNetTransformer(nn.Module):
    """The bottleneck transformer: patchify, + sin-cos codes and a time token, decoder layers."""

    def __init__(
        self,
        in_dim: int,
        dim: int,
        emb_dim: int,
        *,
        strides: int,
        num_layers: int,
        num_heads: int,
        drop_units: float,
        pos_encoding: str,
        cond_dim: int | None,
    ):
        super().__init__()
        if dim % (strides * strides):
            raise ValueError(
                f"TransUNet: transformer_dim {dim} not divisible by transformer_strides**2"
            )
        if pos_encoding not in ("sin_cos", "none"):
            raise ValueError(
                f"TransUNet: pos_encoding must be 'sin_cos' or 'none', got {pos_encoding!r}"
            )
        self.dim = dim
        self.strides = strides
        self.pos_encoding = pos_encoding
        self.conv_in_norm = _group_norm(in_dim, groups_from=dim)
        self.conv_in = nn.Conv2d(in_dim, dim, kernel_size=strides, stride=strides)
        self.emb_proj = nn.Linear(emb_dim, dim)
        self.layers = nn.ModuleList(
            TransformerDecoderLayer(dim, num_heads, 4 * dim, drop_units, cond_dim)
            for _ in range(num_layers)
        )
        self.conv_out_norm = _group_norm(dim)
        self.conv_out = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, x: Tensor, emb: Tensor, cond: Tensor | None) -> Tensor:
        x = self.conv_in(self.conv_in_norm(x))
        N, C, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (N, h*w, C)
        if self.pos_encoding == "sin_cos":
            tokens = tokens + position_codes_2d(h, w, C, tokens.device).to(tokens.dtype)
        tokens = torch.cat([tokens, self.emb_proj(emb)[:, None, :]], dim=1)  # time token last
        for layer in self.layers:
            tokens = layer(tokens, cond)
        x = tokens[:, :-1].transpose(1, 2).reshape(N, C, h, w)
        x = self.conv_out(self.conv_out_norm(x))
        return depth_to_space(x, self.strides) if self.strides > 1 else x


class TransUNet(nn.Module):
    """Pix2Seq-D's denoiser: ``forward(x, gamma, cond_tokens) -> (N, out_channels, H, W)``.

    ``x`` is (N, in_channels, H, W) (noisy bits, fused image features, optional self-condition
    and previous-frame bits, concatenated by the caller); ``gamma`` (N,) the noise level;
    ``cond_tokens`` (N, L, cond_dim) the encoder tokens, required when ``cond_dim`` is set and
    ignored otherwise (as the official model ignores them without 'attn' conditioning). H and W
    must be multiples of ``size_divisibility = 2**(len(ch_multipliers)-1) * transformer_strides``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        dim: int = 128,
        ch_multipliers: Sequence[int] = (1, 1, 2, 2),
        n_res_blocks: Sequence[int] = (1, 1, 1, 1),
        kernel_size: int = 3,
        dropout: float = 0.0,
        in_kernel_size: int = 1,
        out_kernel_size: int = 1,
        transformer_dim: int = 512,
        transformer_blocks: int = 6,
        transformer_strides: int = 1,
        per_head_dim: int = 64,
        mhsa_resolutions: Sequence[int] = (0,),
        cond_dim: int | None = None,
        time_scaling: float = DEFAULT_TIME_SCALING,
        pos_encoding: str = "sin_cos",
    ):
        super().__init__()
        if len(ch_multipliers) != len(n_res_blocks) or not ch_multipliers:
            raise ValueError(
                f"TransUNet: ch_multipliers {tuple(ch_multipliers)} and n_res_blocks "
                f"{tuple(n_res_blocks)} must be non-empty and of equal length"
            )
        for name, k in (("in_kernel_size", in_kernel_size), ("out_kernel_size", out_kernel_size)):
            if k % 2 != 1:
                raise ValueError(f"TransUNet: {name} must be odd, got {k}")
        if transformer_blocks > 0 and transformer_dim % per_head_dim:
            raise ValueError(
                f"TransUNet: transformer_dim {transformer_dim} not divisible by "
                f"per_head_dim {per_head_dim}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.cond_dim = cond_dim
        self.mhsa_resolutions = tuple(int(r) for r in mhsa_resolutions)
        num_levels = len(ch_multipliers)
        self.size_divisibility = 2 ** (num_levels - 1) * transformer_strides
        emb_dim = 4 * dim
        widths = [dim * m for m in ch_multipliers]
        attention = any(r > 0 for r in self.mhsa_resolutions)
        unit_kwargs = dict(
            kernel_size=kernel_size,
            dropout=dropout,
            attention=attention,
            per_head_dim=per_head_dim,
            cond_dim=cond_dim,
        )

        self.time_emb = ScalarEmbedding(dim, time_scaling)
        self.conv_in = nn.Conv2d(
            in_channels, widths[0], in_kernel_size, padding=in_kernel_size // 2
        )
        self.norm_in = _group_norm(widths[0])

        # Track the widths of the kept lateral maps to size the up path's blocks.
        lateral_widths = [widths[0]]
        c = widths[0]
        self.dn_units = nn.ModuleList()
        for i in range(num_levels):
            block_in = [c] + [widths[i]] * (n_res_blocks[i] - 1)
            last = i == num_levels - 1
            self.dn_units.append(
                ConvUnit(
                    block_in,
                    widths[i],
                    emb_dim,
                    expect_lateral=False,
                    up_dn_sample="none" if last else "dn",
                    **unit_kwargs,
                )
            )
            lateral_widths += [widths[i]] * (n_res_blocks[i] + (0 if last else 1))
            c = widths[i]

        self.transformer = None
        if transformer_blocks > 0:
            self.transformer = TransUNetTransformer(
                c,
                transformer_dim,
                emb_dim,
                strides=transformer_strides,
                num_layers=transformer_blocks,
                num_heads=transformer_dim // per_head_dim,
                drop_units=dropout,
                pos_encoding=pos_encoding,
                cond_dim=cond_dim,
            )
            c = transformer_dim // transformer_strides**2

        # up_units[i] serves level i; they run from the bottom level to the top.
        up_units: list[ConvUnit | None] = [None] * num_levels
        for i in reversed(range(num_levels)):
            block_in = []
            for _ in range(n_res_blocks[i] + 1):
                block_in.append(c + lateral_widths.pop())
                c = widths[i]
            up_units[i] = ConvUnit(
                block_in,
                widths[i],
                emb_dim,
                expect_lateral=True,
                up_dn_sample="up" if i != 0 else "none",
                **unit_kwargs,
            )
        assert not lateral_widths
        self.up_units = nn.ModuleList(up_units)

        self.norm_out = _group_norm(widths[0], groups_from=dim)
        self.conv_out = nn.Conv2d(
            widths[0], out_channels, out_kernel_size, padding=out_kernel_size // 2
        )

    def forward(self, x: Tensor, gamma: Tensor, cond_tokens: Tensor | None = None) -> Tensor:
        self._check_inputs(x, gamma, cond_tokens)
        cond = cond_tokens if self.cond_dim else None
        emb = self.time_emb(gamma.reshape(-1))
        x = self.norm_in(self.conv_in(x))
        laterals = [x]
        for unit in self.dn_units:
            x = unit(x, emb, cond, laterals, x.shape[-2] in self.mhsa_resolutions)
        if self.transformer is not None:
            x = self.transformer(x, emb, cond)
        for unit in reversed(self.up_units):
            x = unit(x, emb, cond, laterals, x.shape[-2] in self.mhsa_resolutions)
        return self.conv_out(F.silu(self.norm_out(x)))

    def _check_inputs(self, x: Tensor, gamma: Tensor, cond_tokens: Tensor | None) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"TransUNet: x must be (N, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        H, W = x.shape[-2:]
        m = self.size_divisibility
        if H % m or W % m:
            raise ValueError(
                f"TransUNet: x of shape {tuple(x.shape)} has H, W not multiples of {m} "
                "(2**(len(ch_multipliers)-1) * transformer_strides)"
            )
        if gamma.numel() != x.shape[0]:
            raise ValueError(
                f"TransUNet: gamma must hold one noise level per sample ({x.shape[0]}), "
                f"got shape {tuple(gamma.shape)}"
            )
        if self.cond_dim:
            if (
                cond_tokens is None
                or cond_tokens.dim() != 3
                or cond_tokens.shape[0] != x.shape[0]
                or cond_tokens.shape[2] != self.cond_dim
            ):
                got = None if cond_tokens is None else tuple(cond_tokens.shape)
                raise ValueError(
                    f"TransUNet: cond_tokens must be (N={x.shape[0]}, L, {self.cond_dim}) "
                    f"when cond_dim is set, got {got}"
                )
