"""Plain Vision Transformer (ViT / DeiT) as a detectron2 backbone, as Segmenter's encoder uses it.

Dosovitskiy et al., ICLR 2021 ("An Image is Worth 16x16 Words") and Touvron et al., ICML 2021
(DeiT, for the distillation token). Segmenter (Strudel et al., ICCV 2021, Sec. 3.1) feeds the
patch tokens of the last block, after the final norm, to its decoders.

Parameter names are timm's ``VisionTransformer`` ones (``patch_embed.proj``, ``cls_token``,
``dist_token``, ``pos_embed``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``norm``), so a timm ImageNet state_dict without its classifier loads with ``strict=True``
(see :func:`seg_zoo.model_zoo.convert_vit.convert_timm_vit` for the classifier and the
position-embedding size).

The file reads top-down: blocks, the model, then one factory per variant that only sets sizes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import Tensor, nn

from .swin import DropPath, Mlp

__all__ = [
    "VIT_VARIANTS",
    "VisionTransformer",
    "build_vit_backbone",
    "resize_pos_embed",
    "vit_base",
    "vit_large",
    "vit_small",
    "vit_tiny",
]


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------
def resize_pos_embed(
    pos_embed: Tensor,
    grid_size: tuple[int, int],
    num_prefix_tokens: int,
    *,
    old_grid_size: tuple[int, int] | None = None,
    mode: str = "bicubic",
) -> Tensor:
    """Resample a (1, prefix + Gh*Gw, D) position embedding to another patch grid.

    The prefix entries (class and distillation tokens) have no place on the grid and are kept
    as they are. The grid is resized with ``align_corners=False``. Each mode reproduces the
    code it comes from: "bicubic" is timm's ``resample_abs_pos_embed``, which antialiases
    (torch's antialiased bicubic uses another cubic kernel, so it differs from plain bicubic
    even when upsampling); "bilinear" is the official Segmenter's ``resize_pos_embed``, which
    does not.

    Args:
        pos_embed: (1, num_prefix_tokens + Gh*Gw, D).
        grid_size: target (Gh', Gw').
        num_prefix_tokens: 1 (class token) or 2 (class + DeiT distillation token).
        old_grid_size: source (Gh, Gw); None: a square grid is assumed.
        mode: "bicubic" or "bilinear".
    """
    if pos_embed.dim() != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed: expected shape (1, L, D), got {tuple(pos_embed.shape)}")
    num_grid = pos_embed.shape[1] - num_prefix_tokens
    if old_grid_size is None:
        side = math.isqrt(max(num_grid, 0))
        if side * side != num_grid:
            raise ValueError(
                f"pos_embed: {num_grid} grid positions (after {num_prefix_tokens} prefix tokens) "
                f"is not a square grid (shape {tuple(pos_embed.shape)})"
            )
        old_grid_size = (side, side)
    old_grid_size = (int(old_grid_size[0]), int(old_grid_size[1]))
    grid_size = (int(grid_size[0]), int(grid_size[1]))
    if old_grid_size[0] * old_grid_size[1] != num_grid:
        raise ValueError(
            f"pos_embed: shape {tuple(pos_embed.shape)} does not hold a {old_grid_size} grid "
            f"after {num_prefix_tokens} prefix tokens"
        )
    if grid_size == old_grid_size:
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = pos_embed.shape[-1]
    # (1, Gh*Gw, D) -> (1, D, Gh, Gw): interpolate treats the embedding channels as channels.
    grid = grid.reshape(1, *old_grid_size, dim).permute(0, 3, 1, 2)
    # float32: bicubic interpolation is not implemented for half precision on every device.
    grid = F.interpolate(
        grid.float(), size=grid_size, mode=mode, align_corners=False, antialias=mode == "bicubic"
    )
    grid = grid.permute(0, 2, 3, 1).reshape(1, grid_size[0] * grid_size[1], dim)
    return torch.cat([prefix, grid.to(pos_embed.dtype)], dim=1)


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches projected to D channels by a strided conv (timm's name)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)  # (N, D, H/p, W/p)


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` (fused kernels)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, drop: float = 0.0):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        # Segmenter applies its single dropout rate to the attention weights and the output.
        self.attn_drop = drop
        self.proj_drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        n, length, dim = x.shape
        # (N, L, 3*D) -> (3, N, heads, L, D/heads): timm's qkv layout, so its weights load.
        qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0
        )
        x = x.transpose(1, 2).reshape(n, length, dim)
        return self.proj_drop(self.proj(x))


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(Attn(LN(x))), then x + DropPath(MLP(LN(x)))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, drop=drop)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------
class VisionTransformer(Backbone):
    """ViT encoder returning the patch tokens as a map: ``{"vit": (N, D, H/p, W/p)}``.

    The input must be padded to a multiple of the patch size by the caller (the meta-arch does
    it with ``size_divisibility``). The learned position embedding is stored for the
    ``pretrain_img_size`` grid and resampled to each input's grid at run time.
    """

    @configurable
    def __init__(
        self,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        patch_size: int = 16,
        in_chans: int = 3,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        distilled: bool = False,
        pretrain_img_size: int = 224,
        norm_eps: float = 1e-6,
        pos_embed_interpolation: str = "bicubic",
        out_feature: str = "vit",
    ):
        """
        Args:
            embed_dim, depth, num_heads: token width D, number of blocks, attention heads.
            patch_size: side p of the square patches; the output stride.
            in_chans: input channels.
            mlp_ratio: MLP hidden width relative to D.
            qkv_bias: learn a bias in the query/key/value projection.
            drop_rate: dropout after the position embedding, on the attention weights and in
                the blocks (Segmenter's encoder ``dropout``).
            drop_path_rate: stochastic depth of the last block; block i gets
                ``drop_path_rate * i / (depth - 1)`` (the linear rule of DeiT and timm).
            distilled: add DeiT's distillation token after the class token.
            pretrain_img_size: image side the position embedding was trained for; it sizes
                ``pos_embed`` to (1, 1 (+1) + G*G, D) with G = pretrain_img_size // p.
            norm_eps: LayerNorm epsilon: 1e-6 in timm, 1e-5 in the official Segmenter code.
            pos_embed_interpolation: "bicubic" (timm) or "bilinear" (official Segmenter) for
                the run-time resampling of the position embedding.
            out_feature: name of the returned feature.
        """
        super().__init__()
        for name, value in (
            ("embed_dim", embed_dim),
            ("depth", depth),
            ("num_heads", num_heads),
            ("patch_size", patch_size),
            ("pretrain_img_size", pretrain_img_size),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ViT: {name} must be a positive int, got {value!r}")
        if pretrain_img_size < patch_size:
            raise ValueError(
                f"ViT: pretrain_img_size {pretrain_img_size} is smaller than patch_size "
                f"{patch_size}: the position embedding would hold no patch"
            )
        if pos_embed_interpolation not in ("bicubic", "bilinear"):
            raise ValueError(
                f"ViT: pos_embed_interpolation must be 'bicubic' or 'bilinear', "
                f"got {pos_embed_interpolation!r}"
            )
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.distilled = distilled
        self.num_prefix_tokens = 2 if distilled else 1
        self.pretrain_grid = (pretrain_img_size // patch_size, pretrain_img_size // patch_size)
        self.pos_embed_interpolation = pos_embed_interpolation
        self._out_feature = out_feature

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if distilled else None
        num_positions = self.num_prefix_tokens + self.pretrain_grid[0] * self.pretrain_grid[1]
        self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        # Plain Python rather than torch.linspace, so the model also builds on the meta device.
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop=drop_rate,
                drop_path=rates[i],
                norm_eps=norm_eps,
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self._init_weights()

    def _init_weights(self) -> None:
        # timm's ViT initialisation (truncated normal, std 0.02), used when training from scratch.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.dist_token is not None:
            nn.init.trunc_normal_(self.dist_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec | None = None):
        vit = cfg.MODEL.VIT
        return {
            "embed_dim": vit.EMBED_DIM,
            "depth": vit.DEPTH,
            "num_heads": vit.NUM_HEADS,
            "patch_size": vit.PATCH_SIZE,
            "in_chans": input_shape.channels if input_shape is not None else 3,
            "mlp_ratio": vit.MLP_RATIO,
            "qkv_bias": vit.QKV_BIAS,
            "drop_rate": vit.DROP_RATE,
            "drop_path_rate": vit.DROP_PATH_RATE,
            "distilled": vit.DISTILLED,
            "pretrain_img_size": vit.PRETRAIN_IMG_SIZE,
            "norm_eps": vit.NORM_EPS,
            "pos_embed_interpolation": vit.POS_EMBED_INTERPOLATION,
        }

    def forward_tokens(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> all tokens after the final norm: (N, prefix + H/p * W/p, D)."""
        if x.dim() != 4:
            raise ValueError(f"ViT takes an input of shape (N, C, H, W), got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        p = self.patch_size
        if height < p or width < p:
            raise ValueError(
                f"ViT: input size {height}x{width} is smaller than the patch size {p}; "
                f"pad or resize the image to at least {p}x{p}"
            )
        if height % p or width % p:
            # A strided conv would silently drop the last rows/columns of pixels.
            raise ValueError(
                f"ViT: input size {height}x{width} is not a multiple of the patch size {p}; "
                f"pad it to a multiple of size_divisibility ({p}) first (ImageList.from_tensors)"
            )
        x = self.patch_embed(x)  # (N, D, Gh, Gw)
        grid = tuple(x.shape[-2:])
        x = x.flatten(2).transpose(1, 2)  # (N, Gh*Gw, D)
        prefix = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.dist_token is not None:
            prefix.append(self.dist_token.expand(x.shape[0], -1, -1))
        x = torch.cat([*prefix, x], dim=1)  # (N, prefix + Gh*Gw, D)
        pos_embed = resize_pos_embed(
            self.pos_embed,
            grid,
            self.num_prefix_tokens,
            old_grid_size=self.pretrain_grid,
            mode=self.pos_embed_interpolation,
        )
        x = self.pos_drop(x + pos_embed)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """(N, C, H, W), H and W multiples of the patch size -> {"vit": (N, D, H/p, W/p)}."""
        tokens = self.forward_tokens(x)[:, self.num_prefix_tokens :]  # (N, Gh*Gw, D)
        grid_h, grid_w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        feature = tokens.transpose(1, 2).reshape(x.shape[0], self.embed_dim, grid_h, grid_w)
        return {self._out_feature: feature}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {self._out_feature: ShapeSpec(channels=self.embed_dim, stride=self.patch_size)}

    @property
    def size_divisibility(self) -> int:
        return self.patch_size


@BACKBONE_REGISTRY.register()
def build_vit_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """``VisionTransformer`` from ``MODEL.VIT.*``: feature "vit" at stride ``PATCH_SIZE``."""
    return VisionTransformer(cfg, input_shape)


# --------------------------------------------------------------------------------------------
# Variants: sizes only (ViT paper Table 1, DeiT Table 1 for Tiny/Small)
# --------------------------------------------------------------------------------------------
VIT_VARIANTS: dict[str, dict[str, int]] = {
    "tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3},
    "small": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "large": {"embed_dim": 1024, "depth": 24, "num_heads": 16},
}

_PATCH_SIZES = (8, 16, 32)


def _vit(variant: str, patch_size: int, **kwargs) -> VisionTransformer:
    if patch_size not in _PATCH_SIZES:
        raise ValueError(
            f"vit_{variant}: patch_size must be one of {_PATCH_SIZES}, got {patch_size}"
        )
    return VisionTransformer(**VIT_VARIANTS[variant], patch_size=patch_size, **kwargs)


def vit_tiny(patch_size: int = 16, **kwargs) -> VisionTransformer:
    """ViT-Ti / DeiT-Ti: D 192, 12 blocks, 3 heads."""
    return _vit("tiny", patch_size, **kwargs)


def vit_small(patch_size: int = 16, **kwargs) -> VisionTransformer:
    """ViT-S / DeiT-S: D 384, 12 blocks, 6 heads."""
    return _vit("small", patch_size, **kwargs)


def vit_base(patch_size: int = 16, **kwargs) -> VisionTransformer:
    """ViT-B / DeiT-B: D 768, 12 blocks, 12 heads."""
    return _vit("base", patch_size, **kwargs)


def vit_large(patch_size: int = 16, **kwargs) -> VisionTransformer:
    """ViT-L: D 1024, 24 blocks, 16 heads."""
    return _vit("large", patch_size, **kwargs)
