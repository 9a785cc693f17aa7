"""fvcore FLOP handles for the ops seg_zoo traces to that fvcore does not know.

fvcore counts one multiply-add as one FLOP and only for the ops it has a handle for; anything
else is reported as "unsupported" and contributes nothing. Mask2Former's published FLOPs were
measured that way (its ``tools/analyze_model.py``, fvcore through detectron2's
``FlopCountAnalysis``, on a GPU with PyTorch 1.x). Reproducing them therefore means counting what
that run counted, which differs from seg_zoo's graph in three places:

* Multi-scale deformable attention ran as a Python ``autograd.Function`` around the CUDA kernel.
  It traces to an opaque ``prim::PythonOp`` that fvcore skips, so the sampling and weighting
  were *not* in the published numbers (its linear projections were). seg_zoo's
  ``seg_zoo::ms_deform_attn`` is ignored in the same way by :data:`MASK2FORMER_HANDLES`;
  :func:`ms_deform_attn_flop_jit` counts it for whoever wants the real cost.
* The official Swin computes attention as ``q @ k.transpose(-2, -1)`` and ``attn @ v``: two
  ``aten::matmul`` that fvcore counts. seg_zoo's Swin calls
  ``F.scaled_dot_product_attention``, which fvcore does not know; :func:`sdpa_flop_jit`
  counts the same two products.
* ``nn.MultiheadAttention`` in PyTorch 1.x did ``bmm`` and then added the mask; PyTorch 2
  fuses them into ``aten::baddbmm`` (no fvcore handle) when an ``attn_mask`` is given, and uses
  ``scaled_dot_product_attention`` when no weights are returned. :func:`baddbmm_flop_jit` counts
  the product as ``bmm`` would, ignoring the addition as fvcore ignores ``aten::add``.

What stays as fvcore has it: detectron2's ``FlopCountAnalysis`` lists ``aten::batch_norm`` as
ignored, but fvcore consults its handles before that list, so inference-mode BatchNorm (and
GroupNorm/LayerNorm) is counted, as it was in the official run.
"""

from __future__ import annotations

from math import prod
from typing import Any

from fvcore.nn.jit_handles import get_shape

__all__ = [
    "MASK2FORMER_HANDLES",
    "baddbmm_flop_jit",
    "ms_deform_attn_flop_jit",
    "sdpa_flop_jit",
]


def _shapes(inputs: list[Any], n: int, op: str) -> list[list[int]]:
    shapes = [get_shape(v) for v in inputs[:n]]
    if any(s is None for s in shapes):
        raise ValueError(f"{op}: the traced graph has no shape for an input: {shapes}")
    return shapes


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::scaled_dot_product_attention``: ``Q K^T`` plus ``softmax(.) V``, in MACs.

    q: (..., Lq, E), k: (..., Lk, E), v: (..., Lk, Ev). The batch dims broadcast. Scaling,
    masking and softmax are elementwise and left out, as fvcore leaves out ``mul``/``softmax``.
    """
    q, k, v = _shapes(inputs, 3, "aten::scaled_dot_product_attention")
    if len(q) < 2 or len(k) < 2 or len(v) < 2 or q[-1] != k[-1] or k[-2] != v[-2]:
        raise ValueError(
            f"aten::scaled_dot_product_attention: incompatible shapes q={q}, k={k}, v={v}"
        )
    batch = prod(max(a, b, c) for a, b, c in zip(q[:-2], k[:-2], v[:-2], strict=True))
    len_q, len_k = q[-2], k[-2]
    return batch * len_q * len_k * (q[-1] + v[-1])


def baddbmm_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::baddbmm(input, batch1, batch2)``: the ``bmm`` of (B, n, k) by (B, k, m)."""
    _, batch1, batch2 = _shapes(inputs, 3, "aten::baddbmm")
    if len(batch1) != 3 or len(batch2) != 3 or batch1[2] != batch2[1]:
        raise ValueError(f"aten::baddbmm: incompatible shapes {batch1} and {batch2}")
    b, n, k = batch1
    return b * n * k * batch2[2]


def ms_deform_attn_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """``seg_zoo::ms_deform_attn``: bilinear sampling and the attention-weighted sum, in MACs.

    value: (N, S, M, D); sampling_locations: (N, Lq, M, L, P, 2). Every sampled channel is a
    bilinear blend of 4 taps (4 MACs, the rate fvcore uses for ``aten::grid_sampler``) and one
    more MAC for the attention weight.
    """
    shapes = _shapes(inputs, 5, "seg_zoo::ms_deform_attn")
    value, locations = shapes[0], shapes[3]
    if len(value) != 4 or len(locations) != 6:
        raise ValueError(
            "seg_zoo::ms_deform_attn: expected value (N, S, M, D) and sampling_locations "
            f"(N, Lq, M, L, P, 2), got {value} and {locations}"
        )
    head_dim = value[3]
    return prod(locations[:5]) * head_dim * 5


# Counting rules that reproduce Mask2Former's published FLOPs (see the module docstring). Pass
# them to ``FlopCountAnalysis.set_op_handle(**MASK2FORMER_HANDLES)``; ``None`` means "known, but
# not counted" (no unsupported-op warning).
MASK2FORMER_HANDLES = {
    "seg_zoo::ms_deform_attn": None,
    "aten::scaled_dot_product_attention": sdpa_flop_jit,
    "aten::baddbmm": baddbmm_flop_jit,
}
