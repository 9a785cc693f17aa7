"""benchmarks/segmenter.py, tiny: the three modes compute the same model, and the table prints."""

import pytest
import torch
import torch.nn.functional as F
from _benchmark_loader import load_benchmark

bench = load_benchmark("segmenter")


@pytest.fixture(scope="module")
def tiny_model():
    cfg = bench.build_benchmark_cfg("tiny", "cpu", bench.TINY_OPTS)
    return bench.build_segmenter(cfg)


def test_tiny_model_is_the_tiny_config(tiny_model):
    vit = tiny_model.backbone
    assert (vit.embed_dim, len(vit.blocks), vit.patch_size) == (64, 1, 16)
    assert tiny_model.sem_seg_head.num_classes == 5


def test_core_path_timm_and_explicit_attention_agree(tiny_model):
    images = bench.make_images(2, bench.TINY_SIZE, seed=3)
    vit = bench.build_timm_vit(tiny_model.backbone)
    with torch.inference_mode():
        ours = bench.seg_zoo_core_logits(tiny_model, images)
        timm_logits = bench.reference_core_logits(vit, tiny_model.sem_seg_head, images)
        with bench.reference_mode():
            explicit = bench.seg_zoo_core_logits(tiny_model, images)
    assert ours.shape == (2, 5, 64, 64)
    # Not a constant map: the comparison would prove nothing on one.
    assert ours.std() > 0.1
    torch.testing.assert_close(timm_logits, ours, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(explicit, ours, rtol=1e-5, atol=1e-5)


def test_explicit_attention_matches_the_formula():
    # softmax(q k^T / sqrt(d)) v per head, written out here with einsum, on one Attention.
    torch.manual_seed(0)
    attn = bench._VIT_MODULE.Attention(dim=32, num_heads=4).eval()
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        q, k, v = attn.qkv(x).reshape(2, 7, 3, 4, 8).permute(2, 0, 3, 1, 4)
        weights = torch.einsum("nhid,nhjd->nhij", q, k).div(8**0.5).softmax(-1)
        expected = attn.proj(torch.einsum("nhij,nhjd->nihd", weights, v).reshape(2, 7, 32))
        got = bench.explicit_attention_forward(attn, x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_reference_mode_swaps_and_restores():
    attention = bench._VIT_MODULE.Attention
    before = attention.forward
    with bench.reference_mode():
        assert attention.forward is bench.explicit_attention_forward
    assert attention.forward is before
    # ...also when the block raises.
    with pytest.raises(RuntimeError, match="inside"), bench.reference_mode():
        raise RuntimeError("inside")
    assert attention.forward is before


def test_timm_backbone_swaps_and_restores(tiny_model):
    original = tiny_model.backbone
    vit = bench.build_timm_vit(original)
    inputs = bench.make_inference_input(bench.TINY_SIZE, seed=1)
    with torch.inference_mode():
        (ours,) = tiny_model(inputs)
        with bench.timm_backbone(tiny_model, vit):
            assert isinstance(tiny_model.backbone, bench.TimmBackbone)
            (ref,) = tiny_model(inputs)
    assert tiny_model.backbone is original
    torch.testing.assert_close(ref["sem_seg"], ours["sem_seg"], rtol=1e-5, atol=1e-6)


def test_core_path_is_the_meta_arch_inference(tiny_model):
    # The list-of-dicts forward on one window equals softmax(core logits) of the normalised image.
    inputs = bench.make_inference_input(bench.TINY_SIZE, seed=2)
    image = inputs[0]["image"].float()[None]
    normalised = (image - 127.5) / 127.5  # the Segmenter config's PIXEL_MEAN/STD
    with torch.inference_mode():
        (out,) = tiny_model(inputs)
        core = bench.seg_zoo_core_logits(tiny_model, normalised)
    torch.testing.assert_close(out["sem_seg"], F.softmax(core[0], dim=0), rtol=1e-5, atol=1e-6)


def test_main_tiny_prints_the_table(capsys):
    table = bench.main(["--tiny", "--quick", "--threads", "1", "--warmup", "0"])
    assert table in capsys.readouterr().out
    lines = table.splitlines()
    assert lines[0].startswith("| model | path | size | batch | dtype | seg_zoo ms/img |")
    core, forward = lines[2].split(" | "), lines[3].split(" | ")
    assert core[:5] == ["| Seg-T-Mask/16", "core (backbone+decoder+upsample)", "64x64", "1", "fp32"]
    assert forward[1:5] == ["meta-arch forward(list)", "64x64", "1", "fp32"]
    for cells in (core, forward):
        ours, ours_ips = float(cells[5]), float(cells[6])
        assert ours > 0 and ours_ips == pytest.approx(1e3 / ours, rel=0.02)
        assert float(cells[7]) > 0 and float(cells[9]) > 0  # both references were timed
        for ref, ratio in ((float(cells[7]), cells[11]), (float(cells[9]), cells[12])):
            assert ratio.endswith("x")
            assert float(ratio[:-1]) == pytest.approx(ref / ours, rel=0.05, abs=0.02)
        diff_timm, diff_explicit = (float(v) for v in cells[13].split(" / "))
        assert diff_timm < 1e-4 and diff_explicit < 1e-4
    assert "H100" not in "\n".join(lines[4:])
    assert any("--tiny" in line for line in lines[4:])


def test_cuda_target_verdicts():
    rows = [
        bench.Row("base", "core", 512, 8, "bf16", ours_ms=8 * 1.0),
        bench.Row("large", "core", 640, 8, "bf16", ours_ms=8 * 7.0),
        bench.Row("base", "core", 512, 1, "fp32", ours_ms=2.0),
    ]
    lines = bench.format_table(rows, "cuda").splitlines()
    assert lines[2].endswith("| <= 1.35 PASS |")
    assert lines[3].endswith("| <= 6.0 FAIL |")
    assert lines[4].endswith("| <= 1.35 (bs8 bf16 only) |")
    assert "official: 4.05 ms" in lines[-1]
    assert "PASS" not in bench.format_table(rows, "cpu")


def test_bad_arguments_are_named(tiny_model):
    with pytest.raises(ValueError, match="unknown model 'huge'"):
        bench.build_benchmark_cfg("huge")
    with pytest.raises(ValueError, match="KEY VALUE"):
        bench.build_benchmark_cfg("tiny", opts=["MODEL.VIT.DEPTH"])
    with pytest.raises(SystemExit):
        bench._parse_args(["--batch-size", "0"])
    with pytest.raises(SystemExit):
        bench._parse_args(["--amp", "--dtype", "fp16"])
    vit = bench.build_timm_vit(tiny_model.backbone)
    with pytest.raises(ValueError, match="img_size"):
        bench.reference_core_logits(vit, tiny_model.sem_seg_head, torch.zeros(1, 3, 32, 32))
