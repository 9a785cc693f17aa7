"""Multi-scale deformable attention as a torch op: public function, autograd and fake kernels.

The op ``torch.ops.seg_zoo.ms_deform_attn`` (schema, input checks and the CPU/CUDA kernels) is
compiled into ``seg_zoo._C`` from ``csrc/ms_deform_attn``. Autograd and the fake (meta)
implementation are registered here, so ``torch.compile(fullgraph=True)`` and ``torch.export``
trace through it. Without the extension, :func:`ms_deform_attn` falls back to the pure-PyTorch
reference and says so once.
"""

from __future__ import annotations

import warnings

import torch

try:
    from seg_zoo import _C
except ImportError as e:  # the extension was not built
    _C = None
    _IMPORT_ERROR: ImportError | None = e
else:
    _IMPORT_ERROR = None

__all__ = ["ms_deform_attn", "extension_available", "cuda_kernel_built"]

_OP = "seg_zoo.ms_deform_attn: "
_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_INDEX_DTYPES = (torch.int64, torch.int32)
_fallback_warned = False


def extension_available() -> bool:
    """Whether ``seg_zoo._C`` (the compiled op) could be imported."""
    return _C is not None


def cuda_kernel_built() -> bool:
    """Whether the compiled op includes its CUDA kernel."""
    return _C is not None and bool(_C.cuda_built())


def _check_inputs(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    read_values: bool = True,
) -> None:
    """The C++ op's input rules, for the paths that do not reach it (fallback, fake kernel).

    ``read_values=False`` checks ranks, sizes, dtypes and devices only (no data is read, so it
    is safe on fake tensors while tracing); the level table is then checked by the kernel.
    """
    for t, name, rank, layout in (
        (value, "value", 4, "(N, S, M, D)"),
        (spatial_shapes, "spatial_shapes", 2, "(L, 2)"),
        (level_start_index, "level_start_index", 1, "(L,)"),
        (sampling_locations, "sampling_locations", 6, "(N, Lq, M, L, P, 2)"),
        (attention_weights, "attention_weights", 5, "(N, Lq, M, L, P)"),
    ):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{_OP}{name} must be a Tensor, got {type(t).__name__}")
        if t.dim() != rank:
            raise ValueError(
                f"{_OP}{name} must have rank {rank} {layout}, got shape {tuple(t.shape)}"
            )
    vt = value.dtype
    if vt not in _FLOAT_DTYPES:
        raise ValueError(
            f"{_OP}value has dtype {vt}; supported: float32, float64, float16, bfloat16"
        )
    if attention_weights.dtype != vt:
        raise ValueError(
            f"{_OP}attention_weights has dtype {attention_weights.dtype} but value has dtype "
            f"{vt}; they must match"
        )
    if sampling_locations.dtype not in (vt, torch.float32):
        raise ValueError(
            f"{_OP}sampling_locations has dtype {sampling_locations.dtype}; it must be value's "
            f"dtype ({vt}) or float32"
        )
    for t, name in ((spatial_shapes, "spatial_shapes"), (level_start_index, "level_start_index")):
        if t.dtype not in _INDEX_DTYPES:
            raise ValueError(f"{_OP}{name} has dtype {t.dtype}; it must be int64 (or int32)")
        if t.device != value.device and t.device.type != "cpu":
            raise RuntimeError(
                f"{_OP}{name} is on {t.device} but value is on {value.device}; it must be on "
                "value's device or on the CPU"
            )
    for t, name in (
        (sampling_locations, "sampling_locations"),
        (attention_weights, "attention_weights"),
    ):
        if t.device != value.device:
            raise RuntimeError(
                f"{_OP}{name} is on {t.device} but value is on {value.device}; all tensors "
                "must be on one device"
            )

    n, s, m, _ = value.shape
    num_levels = spatial_shapes.shape[0]
    lq, p = sampling_locations.shape[1], sampling_locations.shape[4]
    if spatial_shapes.shape[1] != 2:
        raise ValueError(
            f"{_OP}spatial_shapes must have shape (L, 2) with rows (H, W), got "
            f"{tuple(spatial_shapes.shape)}"
        )
    expected = (
        (level_start_index, "level_start_index", (num_levels,), ("L",), "spatial_shapes"),
        (
            sampling_locations,
            "sampling_locations",
            (n, lq, m, num_levels, p, 2),
            ("N", "Lq", "M", "L", "P", "2"),
            "value, spatial_shapes and sampling_locations",
        ),
        (
            attention_weights,
            "attention_weights",
            (n, lq, m, num_levels, p),
            ("N", "Lq", "M", "L", "P"),
            "value, spatial_shapes and sampling_locations",
        ),
    )
    for t, name, shape, dims, source in expected:
        for i, (got, want, dim) in enumerate(zip(t.shape, shape, dims)):
            if got != want:
                raise ValueError(
                    f"{_OP}{name}.shape[{i}] ({dim}) is {got} but {source} say {want} "
                    f"({name} has shape {tuple(t.shape)})"
                )
    if not read_values:
        return
    hw = spatial_shapes.detach().to("cpu", torch.int64).tolist()
    starts = level_start_index.detach().to("cpu", torch.int64).tolist()
    total = 0
    for lvl, ((h, w), start) in enumerate(zip(hw, starts)):
        if h < 0 or w < 0:
            raise ValueError(f"{_OP}spatial_shapes[{lvl}] = ({h}, {w}) has a negative size")
        if start != total:
            raise ValueError(
                f"{_OP}level_start_index[{lvl}] is {start} but the sizes in spatial_shapes put "
                f"level {lvl} at {total} (level_start_index must be the exclusive cumulative "
                "sum of H*W)"
            )
        total += h * w
    if total != s:
        raise ValueError(
            f"{_OP}spatial_shapes gives S = sum(H*W) = {total} but value has S = {s} "
            "(value.shape[1])"
        )


if _C is not None:

    @torch.library.register_fake("seg_zoo::ms_deform_attn")
    def _ms_deform_attn_fake(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    ):
        _check_inputs(
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
            read_values=False,
        )
        n, _, m, d = value.shape
        return value.new_empty((n, sampling_locations.shape[1], m * d))

    @torch.library.register_fake("seg_zoo::ms_deform_attn_backward")
    def _ms_deform_attn_backward_fake(
        grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    ):
        # The kernels return contiguous tensors.
        return (
            value.new_empty(value.shape),
            sampling_locations.new_empty(sampling_locations.shape),
            attention_weights.new_empty(attention_weights.shape),
        )

    def _setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def _backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = (
            ctx.saved_tensors
        )
        grad_value, grad_locations, grad_weights = torch.ops.seg_zoo.ms_deform_attn_backward(
            grad_output,
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
        )
        return grad_value, None, None, grad_locations, grad_weights

    torch.library.register_autograd(
        "seg_zoo::ms_deform_attn", _backward, setup_context=_setup_context
    )


def _warn_fallback() -> None:
    global _fallback_warned
    if not _fallback_warned:
        _fallback_warned = True
        warnings.warn(
            "seg_zoo._C is not available "
            f"({_IMPORT_ERROR}); ms_deform_attn falls back to the slow pure-PyTorch reference. "
            "Build the extension with `pip install --no-build-isolation -e .` in the seg_zoo "
            "checkout (or `make test`, which sets everything up).",
            RuntimeWarning,
            stacklevel=3,
        )


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021, Eq. 3).

    Args:
        value: (N, S, M, D) keys of all levels flattened, S = sum_l H_l * W_l.
        spatial_shapes: (L, 2) int64 rows (H_l, W_l); on value's device or the CPU (the
            CPU avoids a device-to-host copy when value is on a GPU).
        level_start_index: (L,) int64, where each level starts in S.
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y); pixel centres sit at
            ((i + 0.5) / W, (j + 0.5) / H), bilinear with zeros outside the map.
        attention_weights: (N, Lq, M, L, P), value's dtype.

    Returns:
        (N, Lq, M * D) in value's dtype (accumulated in fp32 for fp16/bf16).
    """
    if _C is not None:
        return torch.ops.seg_zoo.ms_deform_attn(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    from .ms_deform_attn import ms_deform_attn_pytorch

    _warn_fallback()
    _check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    return ms_deform_attn_pytorch(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
