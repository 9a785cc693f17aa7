"""Multi-scale deformable attention: the compiled op against the grid_sample reference.

Numbers are checked against ``ms_deform_attn_pytorch`` evaluated in float64 on the same
(already rounded) inputs, against finite differences (gradcheck), or against values worked
out by hand. The compiled extension is always built in CI, so a missing ``seg_zoo._C`` fails
these tests rather than skipping them.
"""

import math
import warnings

import pytest
import torch
from torch import nn

from seg_zoo.layers import (
    MSDeformAttn,
    cuda_kernel_built,
    extension_available,
    ms_deform_attn,
    ms_deform_attn_op,
    ms_deform_attn_pytorch,
)

HALF_DTYPES = (torch.float16, torch.bfloat16)
ALL_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, requires_cuda])]

# (N, levels as (H, W), M heads, D head dim, Lq queries, P points). Lq != S everywhere; the
# last three are the benchmark's S1-S3 with fewer queries, to stay fast on a CPU.
SHAPES = {
    "two_levels": (2, [(5, 7), (3, 4)], 3, 5, 11, 2),
    "one_level_one_point": (1, [(6, 9)], 2, 12, 7, 1),
    "four_levels_non_square": (3, [(9, 4), (2, 13), (1, 1), (3, 3)], 1, 8, 20, 3),
    "head_dim_1": (1, [(4, 4)], 4, 1, 5, 4),
    "S1": (2, [(64, 64), (32, 32), (16, 16)], 8, 32, 200, 4),
    "S2": (2, [(128, 128), (64, 64), (32, 32)], 8, 32, 100, 4),
    "S3": (2, [(100, 167), (50, 84), (25, 42), (13, 21)], 8, 32, 100, 4),
}
SMALL_SHAPES = {k: v for k, v in SHAPES.items() if not k.startswith("S")}

# Forward tolerances (atol = rtol) against the float64 reference on the same rounded inputs.
# float32: pixel coordinates x * W carry ~W * 2^-24 pixel of rounding (W up to 167 here), times
# value differences of O(1) between neighbours; 1e-5 leaves a margin of about 3 over S3.
# float16/bfloat16: the kernels accumulate in fp32 and round once, so the error is at most half
# an ulp of the output. The bound, one machine epsilon (2^-10 for fp16, 2^-7 for bf16), is twice
# that relative to the output (|output| <= ~3 here), with the same absolute floor near 0.
FORWARD_TOL = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: torch.finfo(torch.float16).eps,
    torch.bfloat16: torch.finfo(torch.bfloat16).eps,
}
# Backward tolerances, relative to the norm of each gradient. Half gradients are sums of many
# products (grad_value collects every query that samples a pixel), which a kernel may round
# more than once (e.g. half atomics on a GPU), so allow a few epsilons of the dtype rather than
# one; a single rounding measures about 0.2 epsilon.
BACKWARD_TOL = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 4 * torch.finfo(torch.float16).eps,
    torch.bfloat16: 4 * torch.finfo(torch.bfloat16).eps,
}


@pytest.fixture(autouse=True)
def _require_extension():
    assert extension_available(), (
        "seg_zoo._C is not built; build it with `pip install --no-build-isolation -e .`"
    )


def on(device):
    """``device``, after checking that the op has a kernel for it."""
    if device == "cuda":
        assert cuda_kernel_built(), "a GPU is visible but seg_zoo._C was built without CUDA"
    return device


def level_tables(levels, device="cpu"):
    """(spatial_shapes, level_start_index) for a list of (H, W)."""
    spatial_shapes = torch.tensor(levels, dtype=torch.int64, device=device).reshape(-1, 2)
    sizes = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    return spatial_shapes, level_start_index


def make_inputs(
    n,
    levels,
    heads,
    head_dim,
    queries,
    points,
    dtype=torch.float64,
    loc_dtype=None,
    device="cpu",
    tables_device="cpu",
    seed=0,
    margin=0.1,
):
    """Random op inputs, drawn in float64 on the CPU (the same numbers on every device).

    Locations cover [-margin, 1 + margin] so that some samples straddle the borders, where
    zero padding applies; attention weights are positive and sum to 1 over levels and points.
    The level tables go to ``tables_device``: the CPU or value's device, both allowed.
    """
    g = torch.Generator().manual_seed(seed)
    spatial_shapes, level_start_index = level_tables(levels)
    num_keys = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
    num_levels = len(levels)
    f64 = torch.float64
    value = torch.randn(n, num_keys, heads, head_dim, generator=g, dtype=f64)
    locations = torch.rand(n, queries, heads, num_levels, points, 2, generator=g, dtype=f64)
    locations = locations * (1 + 2 * margin) - margin
    weights = torch.rand(n, queries, heads, num_levels, points, generator=g, dtype=f64) + 0.1
    weights = weights / weights.sum((-2, -1), keepdim=True)
    return (
        value.to(device, dtype),
        spatial_shapes.to(tables_device),
        level_start_index.to(tables_device),
        locations.to(device, loc_dtype or dtype),
        weights.to(device, dtype),
    )


def snapped_locations(n, levels, heads, queries, points, seed=0):
    """Locations at least 0.1 pixel away from every pixel-centre line, for finite differences.

    Bilinear sampling is piecewise linear; its derivative jumps where a coordinate crosses a
    pixel centre. Each sample sits in a random cell (one ring outside the map included, to
    cover the zero padding) at 0.1-0.4 pixel from the centre lines on either side.
    """
    g = torch.Generator().manual_seed(seed)
    shape = (n, queries, heads, points)
    per_level = []
    for height, width in levels:
        coords = []
        for size in (width, height):  # (x, y)
            cell = torch.randint(-1, size + 1, shape, generator=g).double()
            offset = 0.1 + 0.3 * torch.rand(shape, generator=g, dtype=torch.float64)
            sign = torch.randint(0, 2, shape, generator=g).double() * 2 - 1
            coords.append((cell + 0.5 + sign * offset) / size)
        per_level.append(torch.stack(coords, -1))
    return torch.stack(per_level, 3)  # (N, Lq, M, L, P, 2)


def as_float64(inputs):
    """The op inputs with every floating tensor converted exactly to float64."""
    return tuple(t.double() if t.is_floating_point() else t for t in inputs)


def reference_forward_backward(inputs, grad_output=None):
    """float64 reference output and (grad_value, grad_locations, grad_weights)."""
    value, spatial_shapes, level_start_index, locations, weights = as_float64(inputs)
    leaves = [t.detach().requires_grad_() for t in (value, locations, weights)]
    out = ms_deform_attn_pytorch(leaves[0], spatial_shapes, level_start_index, *leaves[1:])
    if grad_output is None:
        return out.detach(), None
    out.backward(grad_output.double())
    return out.detach(), tuple(t.grad for t in leaves)


def op_forward_backward(inputs, grad_output):
    value, spatial_shapes, level_start_index, locations, weights = inputs
    leaves = [t.detach().requires_grad_() for t in (value, locations, weights)]
    out = ms_deform_attn(leaves[0], spatial_shapes, level_start_index, *leaves[1:])
    out.backward(grad_output)
    return out.detach(), tuple(t.grad for t in leaves)


def assert_norm_close(actual, expected, tol, name):
    assert actual.dtype == expected.dtype or expected.dtype == torch.float64, name
    err = (actual.double() - expected.double()).norm().item()
    scale = expected.double().norm().item()
    assert err <= tol * max(scale, 1e-30), (
        f"{name}: |error| / |expected| = {err / scale:.3g} > {tol}"
    )


def check_forward(shape, dtype, loc_dtype=None, device="cpu", tables_device="cpu"):
    inputs = make_inputs(
        *shape, dtype=dtype, loc_dtype=loc_dtype, device=device, tables_device=tables_device
    )
    out = ms_deform_attn(*inputs)
    n, _, heads, head_dim, queries, _ = shape
    assert out.shape == (n, queries, heads * head_dim)
    assert out.dtype == dtype and out.device == inputs[0].device
    expected, _ = reference_forward_backward(inputs)
    tol = FORWARD_TOL[dtype]
    torch.testing.assert_close(out.double(), expected, atol=tol, rtol=tol)


def check_backward(shape, dtype, loc_dtype=None, device="cpu", tables_device="cpu"):
    inputs = make_inputs(
        *shape,
        dtype=dtype,
        loc_dtype=loc_dtype,
        device=device,
        tables_device=tables_device,
        seed=1,
    )
    n, _, heads, head_dim, queries, _ = shape
    g = torch.Generator().manual_seed(2)
    grad_output = torch.randn(n, queries, heads * head_dim, generator=g, dtype=torch.float64)
    grad_output = grad_output.to(device, dtype)
    _, grads = op_forward_backward(inputs, grad_output)
    _, expected = reference_forward_backward(inputs, grad_output)
    for grad, ref, src, name in zip(
        grads, expected, (inputs[0], inputs[3], inputs[4]), ("value", "locations", "weights")
    ):
        assert grad.dtype == src.dtype and grad.shape == src.shape, name
        assert_norm_close(grad, ref, BACKWARD_TOL[dtype], f"grad_{name}")


# ---------------------------------------------------------------------------------------------
# Forward and backward against the reference (CPU)


def test_extension_built():
    assert hasattr(torch.ops.seg_zoo, "ms_deform_attn")
    assert hasattr(torch.ops.seg_zoo, "ms_deform_attn_backward")


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_forward_matches_reference(shape, dtype):
    check_forward(shape, dtype)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SMALL_SHAPES.values(), ids=SMALL_SHAPES.keys())
def test_forward_float32_locations_with_half_value(shape, dtype):
    check_forward(shape, dtype, loc_dtype=torch.float32)


def test_reference_matches_hand_computed_bilinear():
    # One 2x3 map, one head/point. Pixel (row j, col i) has its centre at ((i+.5)/3, (j+.5)/2).
    value = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float64)
    value = value.reshape(1, 6, 1, 1)
    spatial_shapes, level_start_index = level_tables([(2, 3)])
    points = {
        (0.5 / 3, 0.25): 1.0,  # centre of pixel (0, 0)
        (1.0 / 3, 0.25): 1.5,  # halfway between (0, 0) and (0, 1)
        (1.0 / 3, 0.5): 3.0,  # middle of (0,0), (0,1), (1,0), (1,1)
        (0.0, 0.25): 0.5,  # left edge: half of pixel (0, 0), half zero padding
        (-0.5 / 3, 0.25): 0.0,  # a pixel left of the map: all corners outside
        (1.0, 1.0): 1.5,  # bottom-right corner: a quarter of pixel (1, 2)
    }
    locations = torch.tensor(list(points), dtype=torch.float64).reshape(1, len(points), 1, 1, 1, 2)
    weights = torch.full((1, len(points), 1, 1, 1), 1.0, dtype=torch.float64)
    expected = torch.tensor(list(points.values()), dtype=torch.float64).reshape(1, -1, 1)
    args = (value, spatial_shapes, level_start_index, locations, weights)
    torch.testing.assert_close(ms_deform_attn_pytorch(*args), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(ms_deform_attn(*args), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "shape",
    [SMALL_SHAPES["two_levels"], SMALL_SHAPES["one_level_one_point"]],
    ids=["two_levels", "one_level_one_point"],
)
def test_gradcheck(shape):
    n, levels, heads, head_dim, queries, points = shape
    value, spatial_shapes, level_start_index, _, weights = make_inputs(*shape)
    locations = snapped_locations(n, levels, heads, queries, points)
    leaves = [t.clone().requires_grad_() for t in (value, locations, weights)]

    def fn(value, locations, weights):
        return ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize(
    "shape",
    [SHAPES["two_levels"], SHAPES["four_levels_non_square"], SHAPES["S3"]],
    ids=["two_levels", "four_levels_non_square", "S3"],
)
def test_backward_matches_reference(shape, dtype):
    check_backward(shape, dtype)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
def test_backward_float32_locations_with_half_value(dtype):
    check_backward(SHAPES["four_levels_non_square"], dtype, loc_dtype=torch.float32)


# ---------------------------------------------------------------------------------------------
# Edge cases


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n, queries", [(0, 5), (2, 0), (0, 0)])
def test_empty_batch_or_queries(n, queries, device):
    inputs = make_inputs(n, [(3, 4), (2, 2)], 2, 4, queries, 3, device=on(device))
    grad_output = torch.ones(n, queries, 8, dtype=torch.float64, device=device)
    out, grads = op_forward_backward(inputs, grad_output)
    assert out.shape == (n, queries, 8)
    for grad, src in zip(grads, (inputs[0], inputs[3], inputs[4])):
        assert grad.shape == src.shape
        assert not grad.any()


@pytest.mark.parametrize("device", DEVICES)
def test_locations_outside_contribute_zero(device):
    value, spatial_shapes, level_start_index, _, weights = make_inputs(
        2, [(3, 4), (5, 2)], 2, 3, 6, 2, device=on(device)
    )
    # All four bilinear corners outside: more than a pixel beyond the map on x or y
    # (the other coordinate inside), or far away, or infinite.
    outside = torch.tensor(
        [[-0.5, 0.5], [1.5, 0.5], [0.5, -0.7], [0.5, 1.7], [-1e30, 0.5], [0.5, 1e30]],
        dtype=torch.float64,
        device=device,
    )
    locations = outside[None, :, None, None, None, :].expand(2, 6, 2, 2, 2, 2)
    out = ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights)
    assert torch.equal(out, torch.zeros_like(out))
    infinite = torch.tensor([[-math.inf, 0.5], [0.5, math.inf]], dtype=torch.float64, device=device)
    locations = infinite[None, :, None, None, None, :].expand(2, 2, 2, 2, 2, 2)
    out = ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights[:, :2])
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("device", DEVICES)
def test_nan_locations_do_not_crash(device):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        1, [(3, 4)], 1, 2, 3, 2, device=on(device)
    )
    locations = torch.full_like(locations, math.nan)
    out = ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights)
    assert out.shape == (1, 3, 2)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs_match_contiguous(device):
    n, levels, heads, head_dim, queries, points = SHAPES["two_levels"]
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        *SHAPES["two_levels"], device=on(device)
    )
    # Same numbers, other strides: value head-major, locations every other entry of a wider
    # tensor, weights fully transposed, level tables column-major / strided.
    value_nc = value.transpose(1, 2).contiguous().transpose(1, 2)
    wide = torch.zeros(*locations.shape[:-1], 4, dtype=locations.dtype, device=device)
    wide[..., ::2] = locations
    locations_nc = wide[..., ::2]
    weights_nc = weights.permute(4, 3, 2, 1, 0).contiguous().permute(4, 3, 2, 1, 0)
    shapes_nc = spatial_shapes.t().contiguous().t()
    starts_nc = torch.stack([level_start_index, level_start_index], 1)[:, 0]
    strided = (value_nc, shapes_nc, starts_nc, locations_nc, weights_nc)
    assert not any(t.is_contiguous() for t in strided)
    contiguous = (value, spatial_shapes, level_start_index, locations, weights)
    # a broadcast (stride-0) grad_output, as out.sum() gives
    grad_output = torch.ones(1, 1, 1, dtype=torch.float64, device=device)
    grad_output = grad_output.expand(n, queries, heads * head_dim)
    out_nc, grads_nc = op_forward_backward(strided, grad_output)
    out, grads = op_forward_backward(contiguous, grad_output.contiguous())
    torch.testing.assert_close(out_nc, out, atol=1e-12, rtol=0)
    for grad_nc, grad in zip(grads_nc, grads):
        torch.testing.assert_close(grad_nc, grad, atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------
# Bad inputs: each names the argument at fault, on the op and on the Python fallback's checks.


def _valid_inputs(dtype=torch.float32):
    # N=2, S=16 over levels (3, 4) and (2, 2), M=2, D=4, Lq=5, P=3
    return list(make_inputs(2, [(3, 4), (2, 2)], 2, 4, 5, 3, dtype=dtype))


def _replace(**changes):
    """A case builder: valid inputs with some arguments replaced by f(original)."""
    names = (
        "value",
        "spatial_shapes",
        "level_start_index",
        "sampling_locations",
        "attention_weights",
    )

    def build():
        args = _valid_inputs()
        for i, name in enumerate(names):
            if name in changes:
                args[i] = changes[name](args[i])
        return args

    return build


def _long(*rows):
    return lambda _: torch.tensor(rows, dtype=torch.int64)


BAD_INPUTS = {
    # wrong ranks
    "value_rank": (_replace(value=lambda t: t[..., 0]), ValueError, "value"),
    "spatial_shapes_rank": (
        _replace(spatial_shapes=lambda t: t.flatten()),
        ValueError,
        "spatial_shapes",
    ),
    "level_start_index_rank": (
        _replace(level_start_index=lambda t: t[None]),
        ValueError,
        "level_start_index",
    ),
    "sampling_locations_rank": (
        _replace(sampling_locations=lambda t: t[..., 0]),
        ValueError,
        "sampling_locations",
    ),
    "attention_weights_rank": (
        _replace(attention_weights=lambda t: t[..., 0]),
        ValueError,
        "attention_weights",
    ),
    # level tables against S and each other
    "spatial_shapes_vs_S": (
        _replace(spatial_shapes=_long([3, 4], [2, 3]), level_start_index=_long(0, 12)),
        ValueError,
        "spatial_shapes",
    ),
    "level_start_index_vs_spatial_shapes": (
        _replace(level_start_index=_long(0, 11)),
        ValueError,
        "level_start_index",
    ),
    "level_start_index_length": (
        _replace(level_start_index=_long(0)),
        ValueError,
        "level_start_index",
    ),
    "spatial_shapes_not_pairs": (
        _replace(spatial_shapes=_long([3, 4, 1], [2, 2, 1])),
        ValueError,
        "spatial_shapes",
    ),
    "spatial_shapes_negative": (
        _replace(spatial_shapes=_long([3, 4], [-2, -2])),
        ValueError,
        "spatial_shapes",
    ),
    # N, Lq, M, L, P disagreements
    "N_locations": (
        _replace(sampling_locations=lambda t: t[:1], attention_weights=lambda t: t[:1]),
        ValueError,
        "sampling_locations",
    ),
    "M_locations": (
        _replace(sampling_locations=lambda t: t[:, :, :1], attention_weights=lambda t: t[:, :, :1]),
        ValueError,
        "sampling_locations",
    ),
    "M_weights": (
        _replace(attention_weights=lambda t: t[:, :, :1]),
        ValueError,
        "attention_weights",
    ),
    "L_locations": (
        _replace(
            sampling_locations=lambda t: t[:, :, :, :1], attention_weights=lambda t: t[:, :, :, :1]
        ),
        ValueError,
        "sampling_locations",
    ),
    "L_weights": (
        _replace(attention_weights=lambda t: t[:, :, :, :1]),
        ValueError,
        "attention_weights",
    ),
    "P_weights": (
        _replace(attention_weights=lambda t: t[..., :2]),
        ValueError,
        "attention_weights",
    ),
    "Lq_weights": (_replace(attention_weights=lambda t: t[:, :4]), ValueError, "attention_weights"),
    "locations_not_xy": (
        _replace(sampling_locations=lambda t: torch.cat([t, t[..., :1]], -1)),
        ValueError,
        "sampling_locations",
    ),
    # dtypes
    "value_int": (_replace(value=lambda t: t.to(torch.int32)), ValueError, "value"),
    "value_complex": (_replace(value=lambda t: t.to(torch.complex64)), ValueError, "value"),
    "weights_int": (
        _replace(attention_weights=lambda t: t.to(torch.int64)),
        ValueError,
        "attention_weights",
    ),
    "locations_int": (
        _replace(sampling_locations=lambda t: t.to(torch.int64)),
        ValueError,
        "sampling_locations",
    ),
    "spatial_shapes_float": (
        _replace(spatial_shapes=lambda t: t.float()),
        ValueError,
        "spatial_shapes",
    ),
    "level_start_index_float": (
        _replace(level_start_index=lambda t: t.float()),
        ValueError,
        "level_start_index",
    ),
    "weights_other_float": (
        _replace(attention_weights=lambda t: t.double()),
        ValueError,
        "attention_weights",
    ),
    "half_value_float_weights": (
        _replace(value=lambda t: t.half()),
        ValueError,
        "attention_weights",
    ),
    "locations_float64_value_float32": (
        _replace(sampling_locations=lambda t: t.double()),
        ValueError,
        "sampling_locations",
    ),
    "locations_bfloat16_value_float16": (
        _replace(
            value=lambda t: t.half(),
            attention_weights=lambda t: t.half(),
            sampling_locations=lambda t: t.bfloat16(),
        ),
        ValueError,
        "sampling_locations",
    ),
    # devices ("meta" stands in for a second device on a CPU-only machine)
    "locations_other_device": (
        _replace(sampling_locations=lambda t: t.to("meta")),
        RuntimeError,
        "sampling_locations",
    ),
    "weights_other_device": (
        _replace(attention_weights=lambda t: t.to("meta")),
        RuntimeError,
        "attention_weights",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_inputs_raise_naming_the_argument(case):
    build, error, name = case
    with pytest.raises(error, match=name):
        ms_deform_attn(*build())
    with pytest.raises(error, match=name):
        torch.ops.seg_zoo.ms_deform_attn(*build())


@pytest.mark.parametrize("case", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_inputs_raise_on_python_checks(case):
    build, error, name = case
    with pytest.raises(error, match=name):
        ms_deform_attn_op._check_inputs(*build())


@pytest.mark.parametrize(
    "case", ["value_rank", "M_weights", "spatial_shapes_vs_S", "locations_int"]
)
def test_bad_inputs_raise_on_backward_op(case):
    build, error, name = BAD_INPUTS[case]
    args = build()
    grad_output = torch.zeros(2, 5, 8)
    with pytest.raises(error, match=name):
        torch.ops.seg_zoo.ms_deform_attn_backward(grad_output, *args)


@pytest.mark.parametrize(
    "grad_output",
    [
        torch.zeros(2, 5, 7),
        torch.zeros(2, 4, 8),
        torch.zeros(2, 5, 8, 1),
        torch.zeros(2, 5, 8, dtype=torch.float64),
    ],
    ids=["M*D", "Lq", "rank", "dtype"],
)
def test_bad_grad_output_raises(grad_output):
    with pytest.raises(ValueError, match="grad_output"):
        torch.ops.seg_zoo.ms_deform_attn_backward(grad_output, *_valid_inputs())


def test_fallback_without_extension(monkeypatch):
    monkeypatch.setattr(ms_deform_attn_op, "_C", None)
    monkeypatch.setattr(ms_deform_attn_op, "_fallback_warned", False)
    inputs = make_inputs(*SHAPES["two_levels"])
    with pytest.warns(RuntimeWarning, match="seg_zoo._C"):
        out = ms_deform_attn(*inputs)
    expected, _ = reference_forward_backward(inputs)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    build, error, name = BAD_INPUTS["spatial_shapes_vs_S"]
    with pytest.raises(error, match=name):
        ms_deform_attn(*build())


# ---------------------------------------------------------------------------------------------
# torch.library / torch.compile / torch.export


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_opcheck(dtype):
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        2, [(3, 4), (2, 2)], 2, 4, 5, 3, dtype=dtype
    )
    args = (
        value.requires_grad_(),
        spatial_shapes,
        level_start_index,
        locations.requires_grad_(),
        weights.requires_grad_(),
    )
    torch.library.opcheck(torch.ops.seg_zoo.ms_deform_attn.default, args)
    grad_output = torch.randn(2, 5, 8, dtype=dtype)
    backward_args = (grad_output,) + tuple(t.detach() for t in args)
    torch.library.opcheck(torch.ops.seg_zoo.ms_deform_attn_backward.default, backward_args)


def _randomized_module(d_model=16, n_levels=2, n_heads=2, n_points=2, seed=0):
    """An MSDeformAttn with every parameter random (the init zeroes many of them)."""
    torch.manual_seed(seed)
    module = MSDeformAttn(d_model, n_levels, n_heads, n_points)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return module


def _module_inputs(n=2, queries=6, levels=((4, 5), (2, 3)), d_model=16, ref_dim=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    spatial_shapes, level_start_index = level_tables(list(levels))
    num_keys = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
    query = torch.randn(n, queries, d_model, generator=g)
    reference_points = torch.rand(n, queries, len(levels), ref_dim, generator=g)
    input_flatten = torch.randn(n, num_keys, d_model, generator=g)
    return query, reference_points, input_flatten, spatial_shapes, level_start_index


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compile_fullgraph_matches_eager(backend):
    torch._dynamo.reset()
    module = _randomized_module()
    inputs = _module_inputs()
    expected = module(*inputs)
    expected.square().sum().backward()
    expected_grads = [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    compiled = torch.compile(module, fullgraph=True, backend=backend)
    out = compiled(*inputs)
    out.square().sum().backward()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    for p, grad in zip(module.parameters(), expected_grads):
        torch.testing.assert_close(p.grad, grad, atol=1e-4, rtol=1e-4)


def test_export():
    class Sample(nn.Module):
        def forward(self, value, spatial_shapes, level_start_index, locations, weights):
            return ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights) * 2

    inputs = make_inputs(*SHAPES["two_levels"], dtype=torch.float32)
    exported = torch.export.export(Sample(), inputs)
    targets = [node.target for node in exported.graph.nodes]
    assert torch.ops.seg_zoo.ms_deform_attn.default in targets
    torch.testing.assert_close(exported.module()(*inputs), ms_deform_attn(*inputs) * 2)

    module = _randomized_module()
    module_inputs = _module_inputs()
    exported = torch.export.export(module, module_inputs)
    torch.testing.assert_close(exported.module()(*module_inputs), module(*module_inputs))


# ---------------------------------------------------------------------------------------------
# MSDeformAttn


def test_module_parameter_names_and_shapes():
    module = MSDeformAttn(d_model=256, n_levels=4, n_heads=8, n_points=4)
    shapes = {name: tuple(p.shape) for name, p in module.named_parameters()}
    assert shapes == {
        "sampling_offsets.weight": (8 * 4 * 4 * 2, 256),
        "sampling_offsets.bias": (8 * 4 * 4 * 2,),
        "attention_weights.weight": (8 * 4 * 4, 256),
        "attention_weights.bias": (8 * 4 * 4,),
        "value_proj.weight": (256, 256),
        "value_proj.bias": (256,),
        "output_proj.weight": (256, 256),
        "output_proj.bias": (256,),
    }


def test_module_initialisation():
    module = MSDeformAttn(d_model=256, n_levels=4, n_heads=8, n_points=4)
    # Head i looks along the angle 2*pi*i/8, scaled so the larger component is 1.
    directions = torch.tensor(
        [[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1], [1, -1]],
        dtype=torch.float32,
    )
    bias = module.sampling_offsets.bias.detach().view(8, 4, 4, 2)  # (heads, levels, points, xy)
    for level in range(4):
        for point in range(4):
            torch.testing.assert_close(
                bias[:, level, point], directions * (point + 1), atol=1e-6, rtol=1e-6
            )
    assert not module.sampling_offsets.weight.any()
    assert not module.attention_weights.weight.any()
    assert not module.attention_weights.bias.any()
    for proj in (module.value_proj, module.output_proj):
        assert not proj.bias.any()
        bound = math.sqrt(6 / (256 + 256))  # xavier_uniform
        assert proj.weight.abs().max() <= bound
        assert proj.weight.abs().max() > 0.95 * bound
        assert abs(proj.weight.std().item() - bound / math.sqrt(3)) < 0.02 * bound


def test_module_hand_computed_single_sample():
    # One head, level and point; identity projections; the offset moves the sample half a
    # pixel right of the reference point, so it reads the mean of two horizontal neighbours.
    module = MSDeformAttn(d_model=2, n_levels=1, n_heads=1, n_points=1)
    with torch.no_grad():
        for proj in (module.value_proj, module.output_proj):
            proj.weight.copy_(torch.eye(2))
        module.sampling_offsets.bias.copy_(torch.tensor([0.5, 0.0]))  # pixels, (x, y)
    spatial_shapes, level_start_index = level_tables([(2, 2)])
    # pixel (row, col) holds (10 * row + col, -(10 * row + col))
    pixels = torch.tensor([0.0, 1.0, 10.0, 11.0])
    input_flatten = torch.stack([pixels, -pixels], -1)[None]  # (1, 4, 2)
    query = torch.randn(1, 2, 2)
    # centres of pixels (0, 0) and (1, 0) of the 2x2 map
    reference_points = torch.tensor([[[[0.25, 0.25]], [[0.25, 0.75]]]])
    out = module(query, reference_points, input_flatten, spatial_shapes, level_start_index)
    expected = torch.tensor([[[0.5, -0.5], [10.5, -10.5]]])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    # masking pixel (0, 1) leaves half of pixel (0, 0) for the first query
    mask = torch.tensor([[False, True, False, False]])
    out = module(query, reference_points, input_flatten, spatial_shapes, level_start_index, mask)
    expected = torch.tensor([[[0.0, -0.0], [10.5, -10.5]]])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def _direct_module_reference(
    module, query, reference_points, input_flatten, spatial_shapes, padding_mask=None
):
    """MSDeformAttn written out level by level in float64, with the reference op."""
    n, queries, _ = query.shape
    heads, levels, points = module.n_heads, module.n_levels, module.n_points
    lin = {
        name: (getattr(module, name).weight.double(), getattr(module, name).bias.double())
        for name in ("value_proj", "output_proj", "sampling_offsets", "attention_weights")
    }
    value = input_flatten.double() @ lin["value_proj"][0].T + lin["value_proj"][1]
    if padding_mask is not None:
        value = value * (~padding_mask)[..., None]
    value = value.reshape(n, -1, heads, module.d_model // heads)
    offsets = query.double() @ lin["sampling_offsets"][0].T + lin["sampling_offsets"][1]
    offsets = offsets.reshape(n, queries, heads, levels, points, 2)
    logits = query.double() @ lin["attention_weights"][0].T + lin["attention_weights"][1]
    logits = logits.reshape(n, queries, heads, levels * points)
    weights = (logits.exp() / logits.exp().sum(-1, keepdim=True)).reshape(offsets.shape[:-1])
    ref = reference_points.double()
    locations = torch.empty_like(offsets)
    for level, (height, width) in enumerate(spatial_shapes.tolist()):
        for axis, size in enumerate((width, height)):
            o = offsets[:, :, :, level, :, axis]  # (N, Lq, M, P)
            if ref.shape[-1] == 2:
                loc = ref[:, :, level, axis, None, None] + o / size
            else:
                box_size = ref[:, :, level, 2 + axis, None, None]
                loc = ref[:, :, level, axis, None, None] + o / points * box_size / 2
            locations[:, :, :, level, :, axis] = loc
    _, level_start_index = level_tables(spatial_shapes.tolist())
    out = ms_deform_attn_pytorch(value, spatial_shapes, level_start_index, locations, weights)
    return out @ lin["output_proj"][0].T + lin["output_proj"][1]


@pytest.mark.parametrize("with_mask", [False, True], ids=["no_mask", "mask"])
@pytest.mark.parametrize("ref_dim", [2, 4], ids=["points", "boxes"])
def test_module_matches_direct_reference(ref_dim, with_mask):
    module = _randomized_module(d_model=24, n_levels=3, n_heads=3, n_points=2)
    query, reference_points, input_flatten, spatial_shapes, level_start_index = _module_inputs(
        queries=7, levels=((6, 5), (3, 3), (2, 1)), d_model=24, ref_dim=ref_dim
    )
    if ref_dim == 4:
        reference_points[..., 2:] *= 0.5  # box sizes
    mask = None
    if with_mask:
        mask = torch.rand(input_flatten.shape[:2], generator=torch.Generator().manual_seed(3)) < 0.3
    out = module(query, reference_points, input_flatten, spatial_shapes, level_start_index, mask)
    expected = _direct_module_reference(
        module, query, reference_points, input_flatten, spatial_shapes, mask
    )
    assert out.shape == (2, 7, 24)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


def test_module_float64_backward_runs():
    module = _randomized_module().double()
    inputs = list(_module_inputs())
    for i in (0, 1, 2):
        inputs[i] = inputs[i].double()
    out = module(*inputs)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())


def test_module_full_padding_mask_gives_output_bias():
    module = _randomized_module()
    query, reference_points, input_flatten, spatial_shapes, level_start_index = _module_inputs()
    mask = torch.ones(input_flatten.shape[:2], dtype=torch.bool)
    out = module(query, reference_points, input_flatten, spatial_shapes, level_start_index, mask)
    torch.testing.assert_close(out, module.output_proj.bias.detach().expand_as(out))


def test_module_under_autocast():
    module = _randomized_module()
    inputs = _module_inputs()
    expected = module(*inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(*inputs)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, atol=0.1, rtol=0.05)


def test_module_rejects_d_model_not_divisible_by_heads():
    with pytest.raises(ValueError, match="d_model"):
        MSDeformAttn(d_model=30, n_heads=8)


def test_module_warns_on_head_dim_not_power_of_2():
    with pytest.warns(UserWarning, match="power of 2"):
        MSDeformAttn(d_model=24, n_heads=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MSDeformAttn(d_model=256, n_heads=8)


def test_module_rejects_bad_reference_points():
    module = _randomized_module()
    query, reference_points, *rest = _module_inputs()
    with pytest.raises(ValueError, match="reference_points"):
        module(query, reference_points[..., :1].expand(-1, -1, -1, 3), *rest)


def test_module_rejects_input_flatten_inconsistent_with_spatial_shapes():
    module = _randomized_module()
    query, reference_points, input_flatten, spatial_shapes, level_start_index = _module_inputs()
    with pytest.raises(ValueError, match="input_flatten"):
        module(query, reference_points, input_flatten[:, :-1], spatial_shapes, level_start_index)
    with pytest.raises(ValueError, match="input_spatial_shapes"):
        module(query, reference_points, input_flatten, spatial_shapes[:1], level_start_index[:1])


# ---------------------------------------------------------------------------------------------
# CUDA (the edge-case tests above also run on CUDA through DEVICES)


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("tables_device", ["cpu", "cuda"])
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_cuda_forward_backward_match_reference(shape, dtype, tables_device):
    device = on("cuda")
    check_forward(shape, dtype, device=device, tables_device=tables_device)
    check_backward(shape, dtype, device=device, tables_device=tables_device)
    if dtype in HALF_DTYPES:
        check_forward(shape, dtype, torch.float32, device=device, tables_device=tables_device)
        check_backward(shape, dtype, torch.float32, device=device, tables_device=tables_device)


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_cuda_matches_cpu(dtype):
    device = on("cuda")
    n, _, heads, head_dim, queries, _ = SHAPES["S3"]
    grad_output = torch.randn(n, queries, heads * head_dim, dtype=dtype)
    cpu_inputs = make_inputs(*SHAPES["S3"], dtype=dtype)
    cuda_inputs = make_inputs(*SHAPES["S3"], dtype=dtype, device=device)
    out_cpu, grads_cpu = op_forward_backward(cpu_inputs, grad_output)
    out_cuda, grads_cuda = op_forward_backward(cuda_inputs, grad_output.to(device))
    tol = FORWARD_TOL[dtype]
    torch.testing.assert_close(out_cuda.cpu(), out_cpu, atol=tol, rtol=tol)
    for grad_cuda, grad_cpu, name in zip(grads_cuda, grads_cpu, ("value", "loc", "weights")):
        assert_norm_close(grad_cuda.cpu(), grad_cpu, BACKWARD_TOL[dtype], f"grad_{name}")


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("tables_device", ["cpu", "cuda"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_cuda_opcheck(dtype, tables_device):
    device = on("cuda")
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        2, [(3, 4), (2, 2)], 2, 4, 5, 3, dtype=dtype, device=device, tables_device=tables_device
    )
    args = (
        value.requires_grad_(),
        spatial_shapes,
        level_start_index,
        locations.requires_grad_(),
        weights.requires_grad_(),
    )
    torch.library.opcheck(torch.ops.seg_zoo.ms_deform_attn.default, args)
    grad_output = torch.randn(2, 5, 8, dtype=dtype, device=device)
    backward_args = (grad_output,) + tuple(t.detach() for t in args)
    torch.library.opcheck(torch.ops.seg_zoo.ms_deform_attn_backward.default, backward_args)


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize(
    "moved, name",
    [((3,), "sampling_locations"), ((4,), "attention_weights"), ((0,), "sampling_locations")],
    ids=["locations_on_cpu", "weights_on_cpu", "value_on_cpu"],
)
def test_cuda_mixed_devices_raise(moved, name):
    inputs = list(make_inputs(2, [(3, 4), (2, 2)], 2, 4, 5, 3, device=on("cuda")))
    for i in moved:
        inputs[i] = inputs[i].cpu()
    with pytest.raises(RuntimeError, match=name):
        ms_deform_attn(*inputs)
    with pytest.raises(RuntimeError, match=name):
        ms_deform_attn_op._check_inputs(*inputs)


@pytest.mark.cuda
@requires_cuda
def test_cuda_module_with_cpu_or_cuda_level_tables():
    device = on("cuda")
    module = _randomized_module()
    query, reference_points, input_flatten, spatial_shapes, level_start_index = _module_inputs()
    expected = _direct_module_reference(
        module, query, reference_points, input_flatten, spatial_shapes
    )
    module.to(device)
    dense = (query.to(device), reference_points.to(device), input_flatten.to(device))
    out_cpu_tables = module(*dense, spatial_shapes, level_start_index)
    out_cuda_tables = module(*dense, spatial_shapes.to(device), level_start_index.to(device))
    torch.testing.assert_close(out_cpu_tables.cpu().double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_cuda_tables, out_cpu_tables)
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(*dense, spatial_shapes, level_start_index), out_cpu_tables)
