"""Swin Transformer backbone (Liu et al., "Swin Transformer: Hierarchical Vision Transformer
using Shifted Windows", ICCV 2021) and its detectron2 wrapper ``D2SwinTransformer``.

Module and parameter names follow the official Mask2Former D2 backbone, so its model-zoo
checkpoints (and Swin ImageNet weights converted to detectron2 format) load with no missing or
unexpected keys: ``patch_embed.{proj,norm}``, ``layers.<i>.blocks.<j>.{norm1,attn,norm2,mlp}``,
``layers.<i>.downsample.{norm,reduction}``, ``norm0..norm3``. The relative position index is a
persistent buffer (it is in the official state_dict); the shifted-window mask is not, it depends
on the input size and is rebuilt in every forward.

The file reads top-down: helpers, blocks (attention, block, patch merging, stage, patch
embedding), the plain ``SwinTransformer``, then ``D2SwinTransformer``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import Tensor, nn

__all__ = [
    "D2SwinTransformer",
    "SwinTransformer",
    "relative_position_index",
    "shifted_window_mask",
    "window_partition",
    "window_reverse",
]

# Additive value the official code puts between tokens of different regions in a shifted window.
# It is -100 rather than -inf there; the same value keeps outputs identical to the official ones.
SHIFT_MASK_VALUE = -100.0


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def drop_path(x: Tensor, drop_prob: float, training: bool) -> Tensor:
    """Stochastic depth (Huang et al. 2016): zero whole residual branches per sample."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    keep = x.new_empty(shape).bernoulli_(keep_prob)
    return x * keep / keep_prob


class DropPath(nn.Module):
    """Stochastic depth on the residual branch, with a fixed per-block drop probability."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """Split (B, H, W, C) into windows: (B, num_windows, window_size**2, C).

    Windows are ordered row-major over the grid and tokens row-major inside a window, as in the
    official code (the shift mask below relies on the same order).
    """
    B, H, W, C = x.shape
    x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
    # (B, H/ws, W/ws, ws, ws, C)
    x = x.permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, -1, window_size * window_size, C)


def window_reverse(windows: Tensor, window_size: int, H: int, W: int) -> Tensor:
    """Inverse of :func:`window_partition`: (B, num_windows, window_size**2, C) -> (B, H, W, C)."""
    B, _, _, C = windows.shape
    x = windows.view(B, H // window_size, W // window_size, window_size, window_size, C)
    # (B, H/ws, ws, W/ws, ws, C)
    x = x.permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, C)


def relative_position_index(window_size: tuple[int, int]) -> Tensor:
    """Index into the relative position bias table for every (query, key) pair of a window.

    Token (i, j) seen from token (i', j') has offset (i - i', j - j') in
    [-(Wh-1), Wh-1] x [-(Ww-1), Ww-1]; the table has one row per offset, row-major
    (Sec. 3.2 "Relative position bias"). Returns a (Wh*Ww, Wh*Ww) int64 tensor.
    """
    Wh, Ww = window_size
    rows, cols = torch.meshgrid(torch.arange(Wh), torch.arange(Ww), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()  # (N,) each, N = Wh*Ww
    d_row = rows[:, None] - rows[None, :] + (Wh - 1)  # (N, N) in [0, 2*Wh-2]
    d_col = cols[:, None] - cols[None, :] + (Ww - 1)  # (N, N) in [0, 2*Ww-2]
    return d_row * (2 * Ww - 1) + d_col


def shifted_window_mask(
    height: int, width: int, window_size: int, shift_size: int, device=None
) -> Tensor:
    """Additive attention mask for shifted windows on a (height, width) padded map.

    After the cyclic shift by ``shift_size``, the last window row/column holds tokens that were
    not neighbours in the image (Fig. 4 of the paper). The map is cut into 3 x 3 regions and a
    token may only attend to tokens of its own region. Returns (num_windows, N, N) holding 0 or
    ``SHIFT_MASK_VALUE``, with N = window_size**2.
    """

    def region_ids(length: int) -> Tensor:
        ids = torch.zeros(length, device=device)
        ids[length - window_size : length - shift_size] = 1
        ids[length - shift_size :] = 2
        return ids

    region = region_ids(height)[:, None] * 3 + region_ids(width)[None, :]  # (H, W)
    region = window_partition(region[None, :, :, None], window_size)[0, :, :, 0]  # (nW, N)
    different = region[:, :, None] != region[:, None, :]  # (nW, N, N)
    return torch.zeros(different.shape, device=device).masked_fill(different, SHIFT_MASK_VALUE)


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------
class Mlp(nn.Module):
    """Two-layer feed-forward network of a transformer block."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        drop: float = 0.0,
    ):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside local windows, with relative position bias (W-MSA).

    The bias B of Eq. (4), and the shift mask for SW-MSA, are passed to
    ``F.scaled_dot_product_attention`` as its additive ``attn_mask``.
    """

    def __init__(
        self,
        dim: int,
        window_size: tuple[int, int],
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale if qk_scale is not None else head_dim**-0.5
        self.attn_drop = attn_drop

        num_offsets = (2 * window_size[0] - 1) * (2 * window_size[1] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(num_offsets, num_heads))
        # Persistent: the official D2 state_dict stores it (and checkpoints carry it).
        self.register_buffer("relative_position_index", relative_position_index(window_size))

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> Tensor:
        """The bias B of Eq. (4) for every head: (num_heads, N, N)."""
        N = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(N, N, self.num_heads).permute(2, 0, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attend within each window.

        Args:
            x: (B, num_windows, N, C) tokens of each window.
            mask: (num_windows, N, N) additive shift mask, or None for unshifted windows.
        Returns:
            (B, num_windows, N, C).
        """
        B, nW, N, C = x.shape
        qkv = self.qkv(x).view(B * nW, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B*nW, heads, N, head_dim)

        attn_mask = self.relative_position_bias()  # (heads, N, N), same for every window
        if mask is not None:
            attn_mask = attn_mask[None] + mask[:, None]  # (nW, heads, N, N)
            # Windows of all images share the mask; materialized only when B > 1.
            attn_mask = attn_mask.expand(B, -1, -1, -1, -1).reshape(B * nW, -1, N, N)
        x = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask.to(q.dtype),
            dropout_p=self.attn_drop if self.training else 0.0,
            scale=self.scale,
        )  # (B*nW, heads, N, head_dim)
        x = x.transpose(1, 2).reshape(B, nW, N, C)
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"


class SwinTransformerBlock(nn.Module):
    """One Swin block: (shifted-)window attention and an MLP, each pre-norm and residual (Eq. 3).

    Feature maps are padded at the bottom/right to a multiple of the window size before
    windowing (the padded tokens take part in attention as zero vectors, as in the official
    detectron2 backbone) and cropped back afterwards.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, {window_size}), got {shift_size}")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.mlp_ratio = mlp_ratio

        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(
            dim,
            window_size=(window_size, window_size),
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            attn_drop=attn_drop,
            proj_drop=drop,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x: Tensor, H: int, W: int, shift_mask: Tensor | None) -> Tensor:
        """x: (B, H*W, C); shift_mask: (num_windows, N, N) for the padded map, used if shifted."""
        B, L, C = x.shape
        if L != H * W:
            raise ValueError(f"expected {H}x{W}={H * W} tokens, got {L}")
        ws, shift = self.window_size, self.shift_size

        shortcut = x
        x = self.norm1(x).view(B, H, W, C)
        pad_b = (ws - H % ws) % ws
        pad_r = (ws - W % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))  # (B, Hp, Wp, C)
        Hp, Wp = H + pad_b, W + pad_r

        if shift > 0:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        windows = window_partition(x, ws)  # (B, nW, ws*ws, C)
        windows = self.attn(windows, mask=shift_mask if shift > 0 else None)
        x = window_reverse(windows, ws, Hp, Wp)  # (B, Hp, Wp, C)
        if shift > 0:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        x = x[:, :H, :W, :].reshape(B, H * W, C)

        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Halve the resolution and double the channels: concat 2x2 neighbours, norm, linear."""

    def __init__(self, dim: int, norm_layer: Callable[[int], nn.Module] = nn.LayerNorm):
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:
        """(B, H*W, C) -> (B, ceil(H/2)*ceil(W/2), 2C); odd sizes are zero-padded first."""
        B, L, C = x.shape
        if L != H * W:
            raise ValueError(f"expected {H}x{W}={H * W} tokens, got {L}")
        x = x.view(B, H, W, C)
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        # The concat order (top-left, bottom-left, top-right, bottom-right) fixes the meaning of
        # the input rows of `reduction`, so it must stay as in the official weights.
        x = torch.cat(
            [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1
        )  # (B, H/2, W/2, 4C)
        x = x.view(B, -1, 4 * C)
        return self.reduction(self.norm(x))


class BasicLayer(nn.Module):
    """One stage: ``depth`` blocks alternating regular and shifted windows, then patch merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float | Sequence[float] = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        downsample: type[PatchMerging] | None = None,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.depth = depth
        self.use_checkpoint = use_checkpoint
        if isinstance(drop_path, (int, float)):
            drop_path = [float(drop_path)] * depth

        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim=dim,
                num_heads=num_heads,
                window_size=window_size,
                shift_size=0 if i % 2 == 0 else self.shift_size,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop,
                attn_drop=attn_drop,
                drop_path=drop_path[i],
                norm_layer=norm_layer,
            )
            for i in range(depth)
        )
        self.downsample = downsample(dim=dim, norm_layer=norm_layer) if downsample else None

    def forward(self, x: Tensor, H: int, W: int) -> tuple[Tensor, int, int, Tensor, int, int]:
        """x: (B, H*W, C). Returns the stage output with its size, then the merged tokens
        (input of the next stage) with theirs; without downsampling both are the same."""
        ws = self.window_size
        Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
        shift_mask = None
        if self.depth > 1 and self.shift_size > 0:
            shift_mask = shifted_window_mask(Hp, Wp, ws, self.shift_size, device=x.device)

        for block in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(
                    block, x, H, W, shift_mask, use_reentrant=False
                )
            else:
                x = block(x, H, W, shift_mask)

        if self.downsample is None:
            return x, H, W, x, H, W
        x_down = self.downsample(x, H, W)
        return x, H, W, x_down, (H + 1) // 2, (W + 1) // 2


class PatchEmbed(nn.Module):
    """Split the image into non-overlapping patches and embed them with a strided conv.

    The image is zero-padded at the bottom/right to a multiple of the patch size.
    """

    def __init__(
        self,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ):
        super().__init__()
        self.patch_size = (patch_size, patch_size)
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_chans, H, W) -> (B, embed_dim, ceil(H/p), ceil(W/p))."""
        ph, pw = self.patch_size
        H, W = x.shape[-2:]
        x = F.pad(x, (0, (pw - W % pw) % pw, 0, (ph - H % ph) % ph))
        x = self.proj(x)
        if self.norm is not None:
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------
class SwinTransformer(nn.Module):
    """Swin Transformer backbone returning the normalized feature map of each stage.

    Args:
        pretrain_img_size: image size of pre-training; only sizes the absolute position
            embedding (``ape=True``).
        patch_size: side of the square patches of the patch embedding.
        in_chans: channels of the input image.
        embed_dim: channels C of stage 1; stage i has C * 2**i.
        depths: number of blocks per stage.
        num_heads: attention heads per stage.
        window_size: side M of the attention windows (Sec. 3.2).
        mlp_ratio: hidden width of the MLP relative to the block width.
        qkv_bias: learn a bias for query, key and value.
        qk_scale: overrides the attention scale head_dim**-0.5 when set.
        drop_rate: dropout after the position embedding, in the MLP and after the attention.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth of the last block; it grows linearly from 0 over blocks.
        norm_layer: normalization constructor, called with the channel count.
        ape: add a learned absolute position embedding after the patch embedding.
        patch_norm: normalize the patch embedding.
        out_indices: stages (0-based) whose outputs are returned, each after its own norm
            (``norm<i>``).
        frozen_stages: -1 freezes nothing; 0 freezes the patch embedding; 1 also the absolute
            position embedding; k >= 2 also the first k - 1 stages.
        use_checkpoint: recompute each block in backward (gradient checkpointing) to save memory.
    """

    def __init__(
        self,
        pretrain_img_size: int = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        ape: bool = False,
        patch_norm: bool = True,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {depths} and num_heads {num_heads} differ in length")
        self.pretrain_img_size = pretrain_img_size
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.ape = ape
        self.patch_norm = patch_norm
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages

        self.patch_embed = PatchEmbed(
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            norm_layer=norm_layer if patch_norm else None,
        )
        if ape:
            grid = (pretrain_img_size // patch_size, pretrain_img_size // patch_size)
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *grid))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)

        # Stochastic depth rate grows linearly from 0 to drop_path_rate over all blocks.
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.num_features = [int(embed_dim * 2**i) for i in range(self.num_layers)]
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            self.layers.append(
                BasicLayer(
                    dim=self.num_features[i],
                    depth=depths[i],
                    num_heads=num_heads[i],
                    window_size=window_size,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                    norm_layer=norm_layer,
                    downsample=PatchMerging if i < self.num_layers - 1 else None,
                    use_checkpoint=use_checkpoint,
                )
            )
        for i in self.out_indices:
            self.add_module(f"norm{i}", norm_layer(self.num_features[i]))

        self.apply(self._init_weights)
        self._freeze_stages()

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # The Swin paper's initialization (as in Microsoft's code); pretrained weights replace it.
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            self.patch_embed.eval()
            self.patch_embed.requires_grad_(False)
        if self.frozen_stages >= 1 and self.ape:
            self.absolute_pos_embed.requires_grad_(False)
        if self.frozen_stages >= 2:
            self.pos_drop.eval()
            for layer in self.layers[: self.frozen_stages - 1]:
                layer.eval()
                layer.requires_grad_(False)

    def train(self, mode: bool = True) -> SwinTransformer:
        """Switch mode, keeping frozen stages in eval mode."""
        super().train(mode)
        self._freeze_stages()
        return self

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """(B, in_chans, H, W) -> {"res<i+2>": (B, C_i, ceil(H/(p*2**i)), ...)} for out_indices."""
        x = self.patch_embed(x)  # (B, C, Wh, Ww)
        Wh, Ww = x.shape[-2:]
        if self.ape:
            x = x + F.interpolate(self.absolute_pos_embed, size=(Wh, Ww), mode="bicubic")
        x = self.pos_drop(x.flatten(2).transpose(1, 2))  # (B, Wh*Ww, C)

        outs = {}
        for i, layer in enumerate(self.layers):
            x_out, H, W, x, Wh, Ww = layer(x, Wh, Ww)
            if i in self.out_indices:
                x_out = getattr(self, f"norm{i}")(x_out)  # (B, H*W, C_i)
                out = x_out.view(-1, H, W, self.num_features[i]).permute(0, 3, 1, 2)
                outs[f"res{i + 2}"] = out.contiguous()  # (B, C_i, H, W)
        return outs


@BACKBONE_REGISTRY.register()
class D2SwinTransformer(SwinTransformer, Backbone):
    """Swin Transformer as a detectron2 backbone, configured by ``MODEL.SWIN.*``.

    Produces "res2".."res5" at strides 4..32 (for patch size 4). All four stage norms exist
    whatever ``out_features`` is, as in the official backbone, so checkpoints always match.
    """

    @configurable
    def __init__(self, *, out_features: Sequence[str] = ("res2", "res3", "res4", "res5"), **kwargs):
        """
        Args:
            out_features: names of the returned stage outputs, among "res2".."res5".
            kwargs: arguments of :class:`SwinTransformer` (``out_indices`` excepted).
        """
        super().__init__(**kwargs)
        stage_names = [f"res{i + 2}" for i in range(self.num_layers)]
        unknown = set(out_features) - set(stage_names)
        if unknown:
            raise ValueError(f"unknown out_features {sorted(unknown)}; choose from {stage_names}")
        self._out_features = list(out_features)
        patch_stride = self.patch_embed.patch_size[0]
        self._out_feature_strides = {
            name: patch_stride * 2**i for i, name in enumerate(stage_names)
        }
        self._out_feature_channels = dict(zip(stage_names, self.num_features))

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec | None = None):
        swin = cfg.MODEL.SWIN
        return {
            "pretrain_img_size": swin.PRETRAIN_IMG_SIZE,
            "patch_size": swin.PATCH_SIZE,
            "in_chans": input_shape.channels if input_shape is not None else 3,
            "embed_dim": swin.EMBED_DIM,
            "depths": swin.DEPTHS,
            "num_heads": swin.NUM_HEADS,
            "window_size": swin.WINDOW_SIZE,
            "mlp_ratio": swin.MLP_RATIO,
            "qkv_bias": swin.QKV_BIAS,
            "qk_scale": swin.QK_SCALE,
            "drop_rate": swin.DROP_RATE,
            "attn_drop_rate": swin.ATTN_DROP_RATE,
            "drop_path_rate": swin.DROP_PATH_RATE,
            "norm_layer": nn.LayerNorm,
            "ape": swin.APE,
            "patch_norm": swin.PATCH_NORM,
            "use_checkpoint": swin.USE_CHECKPOINT,
            "out_features": swin.OUT_FEATURES,
        }

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """x: (N, C, H, W), any H, W (padded inside) -> the features named in out_features."""
        if x.dim() != 4:
            raise ValueError(f"SwinTransformer takes an input of shape (N, C, H, W), got {x.shape}")
        features = super().forward(x)
        return {name: features[name] for name in self._out_features}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }

    @property
    def size_divisibility(self) -> int:
        return 32
