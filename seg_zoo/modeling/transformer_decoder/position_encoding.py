"""Sinusoidal 2-D position encoding (DETR, Carion et al. 2020, Sec. A.4).

The 1-D encoding of "Attention is all you need" (Vaswani et al. 2017, Sec. 3.5) applied to the
row and to the column index separately, the two halves concatenated along channels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine"]


class PositionEmbeddingSine(nn.Module):
    """Fixed sine/cosine encoding of (y, x) positions: (B, C, H, W) -> (B, 2*num_pos_feats, H, W).

    Channels ``[0, num_pos_feats)`` encode y and the rest x; within each half, channels 2i and
    2i + 1 are sin and cos of ``pos / temperature ** (2i / num_pos_feats)``. Positions are
    1-based counts of valid (unmasked) pixels, or with ``normalize`` those counts divided by
    the row/column total (so the last valid pixel sits at ``scale``). It has no parameters.
    """

    def __init__(
        self,
        num_pos_feats: int = 64,
        temperature: float = 10000,
        normalize: bool = False,
        scale: float | None = None,
    ):
        """
        Args:
            num_pos_feats: channels per axis (the output has twice as many); even.
            temperature: base of the geometric progression of wavelengths.
            normalize: divide positions by the number of valid pixels of their row/column.
            scale: what the normalised positions are multiplied by (default 2*pi); only with
                ``normalize``.
        """
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError(
                f"PositionEmbeddingSine: scale={scale} was given with normalize=False; a scale "
                "applies only to normalised positions, pass normalize=True"
            )
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            x: (B, C, H, W); only its size and device are used.
            mask: (B, H, W) bool, True at padding; None means every pixel is valid.

        Returns:
            (B, 2*num_pos_feats, H, W) float32.
        """
        if mask is None:
            mask = torch.zeros((x.size(0), x.size(2), x.size(3)), device=x.device, dtype=torch.bool)
        not_mask = ~mask
        # 1-based positions along each axis, counting valid pixels only: (B, H, W)
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale

        # Channels 2i and 2i+1 share the wavelength temperature ** (2i / num_pos_feats).
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (
            2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats
        )

        # (B, H, W, num_pos_feats), sin on even and cos on odd channels, interleaved
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        # (B, 2*num_pos_feats, H, W), y first
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, "
            f"normalize={self.normalize}, scale={self.scale}"
        )
