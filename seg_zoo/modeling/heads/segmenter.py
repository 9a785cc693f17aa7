"""Segmenter's decoders: the per-patch linear classifier and the Mask Transformer.

Strudel et al., "Segmenter: Transformer for Semantic Segmentation", ICCV 2021, Sec. 3.2. Both
read the ViT encoder's patch tokens as a map (N, D, Hp, Wp) and return class logits at patch
resolution (N, K, Hp, Wp); the ``Segmenter`` meta-architecture upsamples them to the input.
Parameter names follow the official implementation (``head``; ``proj_dec``, ``cls_emb``,
``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``decoder_norm``,
``proj_patch``, ``proj_classes``, ``mask_norm``) so an official checkpoint's ``decoder.*``
entries load after stripping the prefix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..backbone.vit import Block

__all__ = ["SegmenterLinearDecoder", "SegmenterMaskTransformer", "segmenter_decoder_input"]


def segmenter_decoder_input(features: dict, in_feature: str, channels: int, where: str):
    """The map ``features[in_feature]`` (N, D, Hp, Wp), checked, with a clear error otherwise."""
    if in_feature not in features:
        raise KeyError(
            f"{where} reads backbone feature {in_feature!r} (MODEL.SEGMENTER.IN_FEATURE) but the "
            f"backbone gives {sorted(features)}"
        )
    x = features[in_feature]
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(
            f"{where}: feature {in_feature!r} must be (N, {channels}, Hp, Wp), got {tuple(x.shape)}"
        )
    return x


def _init_weights(module: nn.Module) -> None:
    """Official Segmenter init: truncated normal (std 0.02) linears, zero biases, unit norms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


@SEM_SEG_HEADS_REGISTRY.register()
class SegmenterLinearDecoder(nn.Module):
    """Per-patch linear classifier (the paper's "Linear" decoder): logits (N, K, Hp, Wp)."""

    @configurable
    def __init__(self, *, in_channels: int, num_classes: int, in_feature: str = "vit"):
        super().__init__()
        self.in_feature = in_feature
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.head = nn.Linear(in_channels, num_classes)
        self.apply(_init_weights)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> dict:
        name = cfg.MODEL.SEGMENTER.IN_FEATURE
        if name not in input_shape:
            raise KeyError(
                f"MODEL.SEGMENTER.IN_FEATURE {name!r} is not a backbone output "
                f"({sorted(input_shape)})"
            )
        return {
            "in_channels": input_shape[name].channels,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "in_feature": name,
        }

    def forward(self, features: dict) -> torch.Tensor:
        x = segmenter_decoder_input(features, self.in_feature, self.in_channels, "Segmenter")
        # A 1x1 map of the linear layer: (N, D, Hp, Wp) -> (N, K, Hp, Wp).
        return torch.einsum("ndhw,kd->nkhw", x, self.head.weight) + self.head.bias.view(1, -1, 1, 1)


def mask_transformer_blocks(
    d_model: int,
    n_heads: int,
    n_layers: int,
    mlp_ratio: float,
    dropout: float,
    drop_path_rate: float,
) -> nn.ModuleList:
    """The Mask Transformer's blocks: the ViT's block (names norm1, attn.qkv, attn.proj, norm2,
    mlp.fc1, mlp.fc2) with torch's default LayerNorm eps, as the official decoder (not timm's
    1e-6); stochastic depth linear in the block index (plain floats: builds on meta too)."""
    rates = [drop_path_rate * i / max(n_layers - 1, 1) for i in range(n_layers)]
    return nn.ModuleList(
        Block(d_model, n_heads, mlp_ratio, drop=dropout, drop_path=rate, norm_eps=1e-5)
        for rate in rates
    )


@SEM_SEG_HEADS_REGISTRY.register()
class SegmenterMaskTransformer(nn.Module):
    """The paper's Mask Transformer: class embeddings decoded jointly with the patch tokens.

    Patch tokens are projected to ``d_model``, K learnable class embeddings are appended, the
    sequence goes through ``n_layers`` pre-norm blocks and a LayerNorm; patch and class outputs
    are projected (``proj_patch``, ``proj_classes``), L2-normalised, and their dot products
    (N, Hp*Wp, K) pass through a LayerNorm over the K classes (``mask_norm``) to give logits.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        in_feature: str = "vit",
        d_model: int | None = None,
        n_layers: int = 2,
        n_heads: int | None = None,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        drop_path_rate: float = 0.0,
    ):
        """
        Args:
            in_channels: D of the encoder's patch tokens.
            num_classes: K, the number of class embeddings.
            in_feature: backbone output holding the patch map.
            d_model: decoder width; the paper uses the encoder's (default ``in_channels``).
            n_layers: decoder blocks (2 in the paper).
            n_heads: attention heads; default ``d_model // 64`` as the official factory, at
                least one (a narrow test model would otherwise get none).
            mlp_ratio: MLP width over ``d_model`` (4 in the paper).
            dropout: of the attention weights, projections and MLP.
            drop_path_rate: stochastic depth, rising linearly to this value over the blocks.
        """
        super().__init__()
        d_model = d_model or in_channels
        n_heads = n_heads or max(1, d_model // 64)
        self.in_feature = in_feature
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.blocks = mask_transformer_blocks(
            d_model, n_heads, n_layers, mlp_ratio, dropout, drop_path_rate
        )
        self.cls_emb = nn.Parameter(torch.randn(1, num_classes, d_model))
        self.proj_dec = nn.Linear(in_channels, d_model)
        scale = d_model**-0.5
        self.proj_patch = nn.Parameter(scale * torch.randn(d_model, d_model))
        self.proj_classes = nn.Parameter(scale * torch.randn(d_model, d_model))
        self.decoder_norm = nn.LayerNorm(d_model)
        self.mask_norm = nn.LayerNorm(num_classes)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.cls_emb, std=0.02)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> dict:
        args = SegmenterLinearDecoder.from_config(cfg, input_shape)
        seg = cfg.MODEL.SEGMENTER
        args.update(n_layers=seg.N_LAYERS, dropout=seg.DROPOUT, drop_path_rate=seg.DROP_PATH_RATE)
        return args

    def forward(self, features: dict) -> torch.Tensor:
        x = segmenter_decoder_input(features, self.in_feature, self.in_channels, "Segmenter")
        n, _, hp, wp = x.shape
        x = self.proj_dec(x.flatten(2).transpose(1, 2))  # (N, Hp*Wp, d)
        x = torch.cat([x, self.cls_emb.expand(n, -1, -1)], dim=1)  # patches first, then classes
        for block in self.blocks:
            x = block(x)
        x = self.decoder_norm(x)
        patches = F.normalize(x[:, : hp * wp] @ self.proj_patch, dim=-1)
        classes = F.normalize(x[:, hp * wp :] @ self.proj_classes, dim=-1)
        masks = self.mask_norm(patches @ classes.transpose(1, 2))  # (N, Hp*Wp, K)
        return masks.transpose(1, 2).reshape(n, self.num_classes, hp, wp)
