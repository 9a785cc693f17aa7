"""tools/analyze_model.py and seg_zoo.utils.flops: the published Mask2Former FLOPs, reproduced.

References are the numbers in Mask2Former's MODEL_ZOO/paper (ADE20K semantic, single scale,
fvcore counts, one multiply-add = one FLOP) and the Swin paper's Swin-T ImageNet FLOPs. The op
handles are checked against fvcore's own counting of the explicit matmul form that the official
code traced, and against values worked out by hand.

Measured on CPU, random input, no weights (``.venv/bin/python tools/analyze_model.py --tasks flop
--use-fixed-input-size --config-file <config>``; Swin-T backbone with ``--backbone-only
--input-size 224 224``)::

    config (configs/ade20k/semantic-segmentation/)            official   seg_zoo
    maskformer2_R50_bs16_160k.yaml                   512x512      70.8G   70.7693G
    swin/maskformer2_swin_tiny_bs16_160k.yaml        512x512      73.6G   73.6553G
    swin/maskformer2_swin_small_bs16_160k.yaml       512x512      97.4G   97.4216G
    swin/maskformer2_swin_base_IN21k_384_..._res640  640x640     223.4G  223.4172G
    swin/maskformer2_swin_large_IN21k_384_..._res640 640x640     402.7G  402.6908G
    Swin-T backbone (D2SwinTransformer, out norms)   224x224       4.5G    4.5111G

Those numbers need the counting rules of ``seg_zoo.utils.flops.MASK2FORMER_HANDLES``: without
the ``scaled_dot_product_attention`` and ``baddbmm`` handles Swin-T would read 72.4G, Swin-L
387.7G. The S/B/L cases take 20-60 s and 2-3.5 GB each on CPU and are marked slow.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
import torch.nn.functional as F
from fvcore.nn import FlopCountAnalysis as FvcoreFlopCountAnalysis

from seg_zoo.layers import MSDeformAttn, extension_available
from seg_zoo.utils.flops import (
    MASK2FORMER_HANDLES,
    baddbmm_flop_jit,
    ms_deform_attn_flop_jit,
    sdpa_flop_jit,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADE = os.path.join(ROOT, "configs", "ade20k", "semantic-segmentation")


def _load_tool():
    path = os.path.join(ROOT, "tools", "analyze_model.py")
    spec = importlib.util.spec_from_file_location("seg_zoo_tools_analyze_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


analyze_model = _load_tool()


def _fvcore_count(module, inputs, handles=None) -> int:
    analysis = FvcoreFlopCountAnalysis(module, inputs)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    if handles:
        analysis.set_op_handle(**handles)
    return analysis.total()


# --- op handles -------------------------------------------------------------------------------


class _Sdpa(torch.nn.Module):
    def forward(self, q, k, v, mask):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class _ExplicitAttention(torch.nn.Module):
    """Attention written as the official Swin does: two matmuls that fvcore counts itself."""

    def forward(self, q, k, v, mask):
        attn = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5 + mask
        return attn.softmax(dim=-1) @ v


def test_sdpa_counts_like_the_explicit_matmuls():
    q, k = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8)
    v, mask = torch.randn(2, 3, 7, 6), torch.zeros(5, 7)
    fused = _fvcore_count(_Sdpa(), (q, k, v, mask), MASK2FORMER_HANDLES)
    explicit = _fvcore_count(_ExplicitAttention(), (q, k, v, mask))
    # QK^T: 2*3*5*7*8 MACs; AV: 2*3*5*7*6.
    assert fused == explicit == 2 * 3 * 5 * 7 * (8 + 6)


def test_sdpa_broadcasts_batch_dims():
    q, k, v = torch.randn(4, 1, 5, 8), torch.randn(1, 2, 7, 8), torch.randn(1, 2, 7, 8)
    count = _fvcore_count(_Sdpa(), (q, k, v, torch.zeros(5, 7)), MASK2FORMER_HANDLES)
    assert count == 4 * 2 * 5 * 7 * 16


class _Baddbmm(torch.nn.Module):
    def forward(self, bias, a, b):
        return torch.baddbmm(bias, a, b)


class _BmmPlusBias(torch.nn.Module):
    def forward(self, bias, a, b):
        return torch.bmm(a, b) + bias


def test_baddbmm_counts_like_bmm_plus_add():
    bias, a, b = torch.randn(3, 4, 6), torch.randn(3, 4, 5), torch.randn(3, 5, 6)
    fused = _fvcore_count(_Baddbmm(), (bias, a, b), MASK2FORMER_HANDLES)
    explicit = _fvcore_count(_BmmPlusBias(), (bias, a, b))
    assert fused == explicit == 3 * 4 * 5 * 6


def _msda_inputs(n=1, shapes=((8, 8), (4, 4)), d_model=32):
    spatial = torch.tensor(shapes, dtype=torch.long)
    areas = spatial.prod(1)
    start = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    length = int(areas.sum())
    query = torch.randn(n, length, d_model)
    reference = torch.rand(n, length, len(shapes), 2)
    return query, reference, torch.randn(n, length, d_model), spatial, start


@pytest.mark.skipif(not extension_available(), reason="seg_zoo::ms_deform_attn not compiled")
def test_ms_deform_attn_excluded_like_the_official_python_op():
    c, m, lv, p = 32, 4, 2, 3
    module = MSDeformAttn(d_model=c, n_levels=lv, n_heads=m, n_points=p).eval()
    inputs = _msda_inputs(d_model=c)
    lq = s = inputs[0].shape[1]  # 80 queries, 80 values
    # Only the four projections: value, sampling offsets, attention weights, output.
    projections = s * c * c + lq * c * (m * lv * p * 2) + lq * c * (m * lv * p) + lq * c * c
    assert _fvcore_count(module, inputs, MASK2FORMER_HANDLES) == projections
    # Counted: per query, head, level, point and channel 4 bilinear taps plus the weight.
    counted = {"seg_zoo::ms_deform_attn": ms_deform_attn_flop_jit}
    sampling = lq * m * lv * p * (c // m) * 5
    assert _fvcore_count(module, inputs, counted) == projections + sampling


def test_handles_reject_bad_shapes():
    class _Value:
        def __init__(self, shape):
            self._shape = shape

        def type(self):
            return self

        def sizes(self):
            return self._shape

        def isCompleteTensor(self):  # noqa: N802  (torch._C.TensorType's name)
            return True

    def values(*shapes):
        return [_Value(s) for s in shapes]

    with pytest.raises(ValueError, match="scaled_dot_product_attention.*q=\\[2, 5, 8\\]"):
        sdpa_flop_jit(values([2, 5, 8], [2, 7, 4], [2, 7, 4]), [])
    with pytest.raises(ValueError, match="baddbmm"):
        baddbmm_flop_jit(values([3, 4, 6], [3, 4, 5], [3, 2, 6]), [])
    with pytest.raises(ValueError, match="sampling_locations"):
        ms_deform_attn_flop_jit(values([1, 8, 2, 4], [1, 2], [1], [1, 8, 2, 1, 2], [1]), [])


# --- published numbers ------------------------------------------------------------------------


def _model_gflops(config: str, *args: str) -> float:
    return analyze_model.main(["--tasks", "flop", "--config-file", config, *args])["flop"]


def _assert_within_2_percent(measured: float, official: float) -> None:
    assert abs(measured - official) <= 0.02 * official, f"{measured:.2f}G vs official {official}G"


CASES = [
    pytest.param("maskformer2_R50_bs16_160k.yaml", 70.8, id="R50-512"),
    pytest.param("swin/maskformer2_swin_tiny_bs16_160k.yaml", 73.6, id="SwinT-512"),
    pytest.param(
        "swin/maskformer2_swin_small_bs16_160k.yaml", 97.4, id="SwinS-512", marks=pytest.mark.slow
    ),
    pytest.param(
        "swin/maskformer2_swin_base_IN21k_384_bs16_160k_res640.yaml",
        223.4,
        id="SwinB-640",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        "swin/maskformer2_swin_large_IN21k_384_bs16_160k_res640.yaml",
        402.7,
        id="SwinL-640",
        marks=pytest.mark.slow,
    ),
]


@pytest.mark.parametrize("config, official", CASES)
def test_reproduces_mask2former_ade20k_flops(config, official):
    config = os.path.join(ADE, config)
    cfg = analyze_model.setup_cfg(config)
    size = analyze_model.fixed_input_size(cfg)
    assert size == ((640, 640) if "res640" in config else (512, 512))
    model = analyze_model.build(cfg, backbone_only=False)
    (batch,) = analyze_model.build_inputs(1, *size)
    with torch.no_grad():
        analysis = analyze_model.flop_analysis(model, batch)
        measured = analysis.total() / 1e9
    _assert_within_2_percent(measured, official)
    # No op that multiplies matrices may go uncounted by accident.
    matrix_ops = ("mm", "conv", "linear", "matmul", "einsum", "attention", "deform")
    missed = [op for op in analysis.unsupported_ops() if any(w in op for w in matrix_ops)]
    assert not missed, f"uncounted matrix ops: {missed}"


def test_swin_tiny_backbone_imagenet_flops():
    config = os.path.join(ADE, "swin", "maskformer2_swin_tiny_bs16_160k.yaml")
    args = ["--backbone-only", "--input-size", "224", "224"]
    _assert_within_2_percent(_model_gflops(config, *args), 4.5)


# --- the command line -------------------------------------------------------------------------


def test_fixed_input_size_from_crop_or_image_size():
    r50 = analyze_model.load_config(os.path.join(ADE, "maskformer2_R50_bs16_160k.yaml"))
    assert analyze_model.fixed_input_size(r50) == (512, 512)
    coco = os.path.join(ROOT, "configs", "coco", "panoptic-segmentation")
    lsj = analyze_model.load_config(os.path.join(coco, "maskformer2_R50_bs16_50ep.yaml"))
    assert analyze_model.fixed_input_size(lsj) == (1024, 1024)
    r50.INPUT.CROP.ENABLED = False
    with pytest.raises(ValueError, match="INPUT.CROP.SIZE, or an LSJ"):
        analyze_model.fixed_input_size(r50)


def test_bad_arguments_are_named():
    config = os.path.join(ADE, "maskformer2_R50_bs16_160k.yaml")
    with pytest.raises(ValueError, match="not both"):
        analyze_model.main(
            ["--tasks", "flop", "--config-file", config, "--use-fixed-input-size"]
            + ["--input-size", "64", "64"]
        )
    with pytest.raises(ValueError, match="--num-inputs"):
        analyze_model.main(["--tasks", "flop", "--config-file", config, "-n", "0"])
    with pytest.raises(FileNotFoundError, match="no_such.yaml"):
        analyze_model.main(["--tasks", "flop", "--config-file", "no_such.yaml"])
    with pytest.raises(ValueError, match="input size"):
        analyze_model.build_inputs(1, 0, 64)


def test_all_tasks_on_a_tiny_panoptic_model_without_its_dataset():
    config = os.path.join(ROOT, "configs", "synthetic", "maskformer2_R18_tiny_panoptic.yaml")
    args = ["--tasks", "flop", "parameter", "activation", "structure", "-n", "2"]
    args += ["--input-size", "64", "96", "--config-file", config]
    # The training dataset is not registered: the tool must not need it.
    args += ["DATASETS.TRAIN", "('analyze_model_unregistered_dataset',)"]
    results = analyze_model.main(args)
    assert results["flop"] > 0 and results["activation"] > 0
    cfg = analyze_model.setup_cfg(config, args[args.index("DATASETS.TRAIN") :])
    model = analyze_model.build(cfg, backbone_only=False)
    total = sum(p.numel() for p in model.parameters())
    # The table's first row is the whole model, in fvcore's rounded units.
    name, count = (cell.strip() for cell in results["parameter"].splitlines()[2].split("|")[1:3])
    unit = {"K": 1e3, "M": 1e6, "G": 1e9}[count[-1]]
    assert name == "model" and abs(float(count[:-1]) * unit - total) <= 0.05 * unit, count
    assert "sem_seg_head" in results["structure"]
