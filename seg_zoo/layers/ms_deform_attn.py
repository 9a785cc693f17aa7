"""Multi-scale deformable attention module (Deformable DETR, Zhu et al. 2021, Sec. 4.1, Eq. 3).

:class:`MSDeformAttn` is the attention block Mask2Former's pixel decoder stacks; it predicts,
for every query, sampling offsets around reference points and attention weights, and reduces
the sampled values with the compiled op :func:`seg_zoo.layers.ms_deform_attn`.
:func:`ms_deform_attn_pytorch` is the slow but obvious ``grid_sample`` form of that op, the
reference the tests compare the kernels with.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .ms_deform_attn_op import ms_deform_attn

__all__ = ["MSDeformAttn", "ms_deform_attn_pytorch"]


def ms_deform_attn_pytorch(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Reference multi-scale deformable attention with ``F.grid_sample`` (slow, obvious).

    Same arguments and result as :func:`seg_zoo.layers.ms_deform_attn`. Everything is computed
    in value's dtype: ``grid_sample`` needs the grid in the input's dtype, so fp32 locations
    are rounded to fp16/bf16 here (a bf16 location can be a fraction of a pixel off) and the
    weighted sum is accumulated in the half dtype. For a tight reference of the half op,
    call this on the half inputs converted to float64. Inputs are not checked; it reads
    ``spatial_shapes`` and ``level_start_index`` on the host.
    """
    n, _, num_heads, head_dim = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    # grid_sample's normalised grid: -1 and 1 are the outer edges of the border pixels
    # (align_corners=False), so pixel i's centre (i + 0.5) / W maps to (2i + 1) / W - 1.
    sampling_grids = (2 * sampling_locations - 1).to(value.dtype)
    sampled = []
    for level, ((height, width), start) in enumerate(
        zip(spatial_shapes.tolist(), level_start_index.tolist())
    ):
        # (N, H*W, M, D) -> (N*M, D, H, W)
        value_l = value[:, start : start + height * width]
        value_l = value_l.permute(0, 2, 3, 1).reshape(n * num_heads, head_dim, height, width)
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        grid_l = sampling_grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        # (N*M, D, Lq, P)
        sampled.append(
            F.grid_sample(
                value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False
            )
        )
    # (N, Lq, M, L, P) -> (N*M, 1, Lq, L*P)
    weights = attention_weights.transpose(1, 2).reshape(
        n * num_heads, 1, num_queries, num_levels * num_points
    )
    # (N*M, D, Lq, L, P) -> (N*M, D, Lq, L*P), weighted sum over levels and points -> (N*M, D, Lq)
    output = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)
    # (N, M*D, Lq) -> (N, Lq, M*D)
    return output.view(n, num_heads * head_dim, num_queries).transpose(1, 2).contiguous()


def _is_power_of_2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _is_tracing() -> bool:
    """Whether forward is being compiled or exported, where tensor values must not be read."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021, Eq. 3).

    Parameter names and initialisation follow the official implementation, so its
    checkpoints (and Mask2Former's pixel decoder) load unchanged.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        """
        Args:
            d_model: channels of queries, values and output.
            n_levels: feature levels sampled.
            n_heads: attention heads; must divide d_model.
            n_points: sampling points per head and level.
        """
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(
                f"MSDeformAttn: d_model must be divisible by n_heads, got d_model={d_model} "
                f"and n_heads={n_heads}"
            )
        head_dim = d_model // n_heads
        if not _is_power_of_2(head_dim):
            # As the official code: the CUDA kernel is most efficient with power-of-2 heads.
            warnings.warn(
                f"MSDeformAttn: d_model / n_heads = {head_dim} is not a power of 2; set d_model "
                "so that each head's dimension is a power of 2, which the kernels handle best",
                stacklevel=2,
            )
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points

        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Offsets start as a fixed pattern: head i looks along the angle 2*pi*i / n_heads (the
        # direction scaled so its larger component is 1), its point k at distance k + 1,
        # the same on every level. Attention starts uniform over levels and points.
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        directions = torch.stack([thetas.cos(), thetas.sin()], -1)  # (n_heads, 2) as (x, y)
        directions = directions / directions.abs().max(-1, keepdim=True).values
        distances = torch.arange(1, self.n_points + 1, dtype=torch.float32)
        # (n_heads, n_levels, n_points, 2)
        grid = directions[:, None, None, :] * distances[None, None, :, None]
        grid = grid.expand(self.n_heads, self.n_levels, self.n_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        input_level_start_index: torch.Tensor,
        input_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            query: (N, Lq, d_model).
            reference_points: (N, Lq, n_levels, 2) normalised (x, y) points in [0, 1], top-left
                (0, 0); or (N, Lq, n_levels, 4) boxes (cx, cy, w, h), whose size scales the
                offsets.
            input_flatten: (N, S, d_model), all levels flattened, S = sum_l H_l * W_l.
            input_spatial_shapes: (n_levels, 2) int64 rows (H_l, W_l); on input_flatten's
                device or on the CPU (which spares the op a device-to-host copy).
            input_level_start_index: (n_levels,) int64, where each level starts in S.
            input_padding_mask: (N, S) bool, True at padding (those values are zeroed).

        Returns:
            (N, Lq, d_model).
        """
        n, num_queries, _ = query.shape
        _, num_keys, _ = input_flatten.shape
        if input_spatial_shapes.dim() != 2 or input_spatial_shapes.shape[0] != self.n_levels:
            raise ValueError(
                f"MSDeformAttn: input_spatial_shapes must have shape ({self.n_levels}, 2) "
                f"(n_levels rows of (H, W)), got {tuple(input_spatial_shapes.shape)}"
            )
        if reference_points.shape[-1] not in (2, 4):
            raise ValueError(
                "MSDeformAttn: the last dim of reference_points must be 2 (points) or 4 "
                f"(boxes), got {reference_points.shape[-1]} (shape "
                f"{tuple(reference_points.shape)})"
            )
        # Reading the sizes costs a host sync when they live on a GPU and is impossible while
        # tracing; the op checks them again on the host anyway.
        if not _is_tracing():
            expected = int((input_spatial_shapes[:, 0] * input_spatial_shapes[:, 1]).sum())
            if expected != num_keys:
                raise ValueError(
                    f"MSDeformAttn: input_flatten has S = {num_keys} positions "
                    f"(input_flatten.shape[1]) but input_spatial_shapes gives "
                    f"sum(H*W) = {expected}"
                )

        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        # (N, S, M, D)
        value = value.view(n, num_keys, self.n_heads, self.d_model // self.n_heads)
        # (N, Lq, M, L, P, 2)
        sampling_offsets = self.sampling_offsets(query).view(
            n, num_queries, self.n_heads, self.n_levels, self.n_points, 2
        )
        # Softmax over all levels and points of a head: (N, Lq, M, L, P)
        attention_weights = self.attention_weights(query).view(
            n, num_queries, self.n_heads, self.n_levels * self.n_points
        )
        attention_weights = F.softmax(attention_weights, -1).view(
            n, num_queries, self.n_heads, self.n_levels, self.n_points
        )
        if reference_points.shape[-1] == 2:
            # Offsets are in pixels of each level: divide by (W_l, H_l).
            offset_normalizer = input_spatial_shapes.flip(-1).to(
                device=sampling_offsets.device, dtype=sampling_offsets.dtype
            )
            sampling_locations = (
                reference_points[:, :, None, :, None, :]
                + sampling_offsets / offset_normalizer[None, None, None, :, None, :]
            )
        else:
            # Offsets are in units of the box's half size, spread over the points.
            sampling_locations = (
                reference_points[:, :, None, :, None, :2]
                + sampling_offsets / self.n_points * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        # The op takes weights in value's dtype and locations in value's dtype or fp32; under
        # autocast softmax gives fp32 weights, and fp32 locations keep sub-pixel precision.
        location_dtype = torch.float64 if value.dtype == torch.float64 else torch.float32
        output = ms_deform_attn(
            value,
            input_spatial_shapes,
            input_level_start_index,
            sampling_locations.to(location_dtype),
            attention_weights.to(value.dtype),
        )
        return self.output_proj(output)
