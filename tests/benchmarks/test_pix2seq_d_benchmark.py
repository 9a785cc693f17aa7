"""benchmarks/pix2seq_d.py, tiny: the re-encoding reference samples the same maps; table prints."""

import pytest
import torch
from _benchmark_loader import load_benchmark
from detectron2.config import get_cfg

from seg_zoo import add_seg_zoo_config

bench = load_benchmark("pix2seq_d")


@pytest.fixture(scope="module")
def tiny_model():
    return bench.build_pix2seq_d(
        bench.build_benchmark_cfg("cpu", bench.TINY_OPTS, bench.TINY_CONFIG)
    )


@pytest.fixture(scope="module")
def images():
    return bench.make_images(2, bench.TINY_SIZE, seed=5)


def test_tiny_model_is_the_tiny_config(tiny_model):
    encoder = tiny_model.encoder
    assert (encoder.dim, len(encoder.layers)) == (32, 1)
    assert encoder.stem_projection.in_features == 256  # ResNet-18's res4 width
    assert tiny_model.fuse.out_dim == 16
    assert (tiny_model.mask_stride, tiny_model.n_bits) == (2, 16)
    assert not tiny_model.training


def test_official_opts_give_the_official_size():
    cfg = bench.build_benchmark_cfg("cpu")
    defaults = get_cfg()
    add_seg_zoo_config(defaults)
    # Every MODEL.PIX2SEQ_D key (encoder and decoder included) back at its declared default,
    # the official recipe, as the COCO config states it.
    assert cfg.MODEL.PIX2SEQ_D == defaults.MODEL.PIX2SEQ_D
    assert (cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES) == (50, 133)
    assert (cfg.MODEL.PIX2SEQ_D.ENCODER.NUM_LAYERS, cfg.MODEL.PIX2SEQ_D.ENCODER.DIM) == (12, 512)


def _denoiser_inputs(model, fn):
    """Run ``fn()`` and return (its output, the input tensor of every denoiser call)."""
    inputs = []
    handle = model.denoiser.register_forward_pre_hook(lambda _m, args: inputs.append(args[0]))
    try:
        with torch.inference_mode():
            return fn(), inputs
    finally:
        handle.remove()


@pytest.mark.parametrize("sampler_seed", [0, -1])
@pytest.mark.parametrize("steps", [1, 3])
def test_reference_and_seg_zoo_sample_the_same_maps(tiny_model, images, steps, sampler_seed):
    # sampler_seed >= 0: both draw from a generator seeded with it (MODEL.PIX2SEQ_D.SAMPLER_SEED);
    # negative: both draw from the global RNG, seeded with the ``seed`` argument.
    before = tiny_model.sampler_seed
    tiny_model.sampler_seed = sampler_seed
    try:
        ours, ours_in = _denoiser_inputs(
            tiny_model, lambda: bench.seg_zoo_generate(tiny_model, images, steps, seed=7)
        )
        ref, ref_in = _denoiser_inputs(
            tiny_model, lambda: bench.reference_generate(tiny_model, images, steps, seed=7)
        )
        if sampler_seed >= 0:
            tiny_model.sampler_seed = sampler_seed + 1
        _, other_in = _denoiser_inputs(
            tiny_model, lambda: bench.reference_generate(tiny_model, images, steps, seed=8)
        )
    finally:
        tiny_model.sampler_seed = before
    assert ours.shape == (2, 2, 32, 32) and ours.dtype == torch.int64
    assert torch.equal(ours, ref)
    # Same noisy input x_t (and features) at every step, not only the same final maps: the
    # random-weight tiny denoiser's maps alone depend little on the noise.
    assert len(ours_in) == len(ref_in) == steps
    for a, b in zip(ours_in, ref_in):
        assert torch.equal(a, b)
    # ...and the trajectory does depend on the seed, so the equality is not a constant's.
    assert not torch.equal(ref_in[0], other_in[0])


def test_reference_is_a_plain_ddim_loop(tiny_model, images):
    # One step from t=1 with td=1: t_prev clamps to 0, so the answer is the denoiser's x0
    # estimate on x_1 ~ N(0, I), clipped to +-b and thresholded. Worked out here directly.
    with torch.inference_mode():
        torch.manual_seed(3)
        tokens, fused = tiny_model.encode(images)
        assert tiny_model.sampler_seed == 0  # MODEL.PIX2SEQ_D.SAMPLER_SEED's default
        x1 = torch.randn(2, 16, 32, 32, generator=torch.Generator().manual_seed(0))
        gamma = tiny_model.infer_schedule(torch.ones(2))
        out = tiny_model.denoiser(torch.cat([x1, fused], 1), gamma, tokens)
        probs = out.reshape(2, 2, 256, 32, 32).softmax(2)
        values = torch.arange(256)
        bit_table = (
            (values[:, None] >> torch.arange(8)) & 1
        ).float()  # bit b of value v, LSB first
        p_one = torch.einsum("ngvhw,vb->ngbhw", probs, bit_table).reshape(2, 16, 32, 32)
        bits = (p_one * 2 - 1) * 0.1 > 0
        weights = 2 ** torch.arange(8)
        classes = (bits[:, :8].long() * weights[:, None, None]).sum(1).clamp(max=7)
        identities = (bits[:, 8:].long() * weights[:, None, None]).sum(1).clamp(max=31)
        ref = bench.reference_generate(tiny_model, images, 1, seed=3)
    torch.testing.assert_close(ref, torch.stack([classes, identities], 1), rtol=0, atol=0)


def test_encoder_runs_once_in_seg_zoo_and_per_step_in_the_reference(tiny_model, images):
    calls = []
    forward = tiny_model.encoder.forward
    tiny_model.encoder.forward = lambda x: calls.append(x.shape[0]) or forward(x)
    try:
        with torch.inference_mode():
            bench.seg_zoo_generate(tiny_model, images, 4)
            assert calls == [2]
            calls.clear()
            bench.reference_generate(tiny_model, images, 4)
            assert calls == [2, 2, 2, 2]
    finally:
        del tiny_model.encoder.forward  # back to the class's method
    # The benchmark's own counter agrees with the patch above.
    with torch.inference_mode(), bench.count_encoder_calls(tiny_model) as hooked:
        bench.reference_generate(tiny_model, images, 3)
    assert len(hooked) == 3 and hooked[0] == (2, 3, 64, 64)


def test_denoiser_step_matches_the_model_pieces(tiny_model, images):
    with torch.inference_mode():
        tokens, fused = tiny_model.encode(images)
        x_t = torch.randn(2, 16, 32, 32, generator=torch.Generator().manual_seed(0))
        gamma = torch.full((2,), 0.5)
        pred = bench.denoiser_step(tiny_model, x_t, gamma, fused, tokens)
        logits = tiny_model.denoiser(torch.cat([x_t, fused], 1), gamma, tokens)
    assert pred.shape == (2, 16, 32, 32)
    assert pred.abs().max() <= 0.1 + 1e-6  # an expectation of +-b bits
    probs = logits.reshape(2, 2, 256, 32, 32).softmax(2)
    # Bit 7 (the most significant, bits are LSB first) of group 0: mass of the values >= 128.
    p_msb = probs[:, 0, 128:].sum(1)
    torch.testing.assert_close(pred[:, 7], (p_msb * 2 - 1) * 0.1, rtol=1e-5, atol=1e-6)


def test_main_tiny_prints_the_table(capsys):
    table = bench.main(["--tiny", "--quick", "--threads", "1", "--warmup", "0"])
    assert table in capsys.readouterr().out
    lines = table.splitlines()
    assert lines[0].startswith("| measurement | image / mask | batch | dtype | seg_zoo ms/img |")
    rows = [line.split(" | ") for line in lines[2:7]]
    names = [cells[0].lstrip("| ") for cells in rows]
    assert names[0].startswith("encoder") and names[1].startswith("denoiser step")
    assert names[2:] == ["generate, 5 steps", "generate, 10 steps", "generate, 20 steps"]
    for cells in rows:
        assert cells[1:4] == ["64 / 32", "1", "fp32"]
        ours, ips = float(cells[4]), float(cells[5])
        assert ours > 0 and ips == pytest.approx(1e3 / ours, rel=0.02)
    for cells in rows[:2]:
        assert cells[6:9] == ["-", "-", "-"]
    for cells in rows[2:]:
        ours, ref, ratio = float(cells[4]), float(cells[6]), cells[8]
        assert ref > 0 and ratio.endswith("x")
        assert float(ratio[:-1]) == pytest.approx(ref / ours, rel=0.05, abs=0.02)
        assert cells[9] == "yes |"
    assert any("--tiny" in line for line in lines[7:])


def test_bad_arguments_are_named(tiny_model):
    with pytest.raises(ValueError, match="KEY VALUE"):
        bench.build_benchmark_cfg("cpu", ["MODEL.RESNETS.DEPTH"])
    for argv in (["--batch-size", "0"], ["--steps", "5", "0"], ["--image-size", "-1"]):
        with pytest.raises(SystemExit):
            bench._parse_args(argv)
    with pytest.raises(ValueError, match="size_divisibility"):
        bench.reference_generate(tiny_model, torch.zeros(1, 3, 48, 48), 2)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        bench.reference_generate(tiny_model, torch.zeros(3, 64, 64), 2)
    with pytest.raises(ValueError, match="positive int"):
        bench.reference_generate(tiny_model, torch.zeros(1, 3, 64, 64), 0)
    with pytest.raises(ValueError, match="steps"):
        bench.run_benchmark(
            steps=[0], opts=bench.TINY_OPTS, config=bench.TINY_CONFIG, image_size=64
        )


def test_reference_refuses_samplers_it_does_not_cover():
    cfg = bench.build_benchmark_cfg(
        "cpu", bench.TINY_OPTS + ["MODEL.PIX2SEQ_D.SAMPLER", "ddpm"], bench.TINY_CONFIG
    )
    model = bench.build_pix2seq_d(cfg)
    with pytest.raises(ValueError, match="SAMPLER 'ddim'"):
        bench.reference_generate(model, torch.zeros(1, 3, 64, 64), 2)
