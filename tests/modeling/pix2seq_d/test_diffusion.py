"""Schedules, forward process and sampler of Pix2Seq-D against values and loops written by hand."""

import math

import pytest
import torch

from seg_zoo.modeling.pix2seq_d.diffusion import (
    add_noise,
    cosine_schedule,
    cosine_schedule_simple,
    get_schedule,
    sample,
    self_cond_estimate,
    sigmoid_schedule,
    simple_linear_schedule,
    transition_ddpm,
    x0_eps_from_prediction,
)

B = 0.1
SHAPE = (2, 4, 3, 3)


def _bits(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 2, SHAPE, generator=g).float() * 2 - 1) * B


def test_cosine_schedule_simple_hand_values():
    # gamma(t) = cos((t + 2e-4) / 1.00025 * pi / 2) ** 2
    assert float(cosine_schedule_simple(0.0)) == pytest.approx(
        math.cos(2e-4 / 1.00025 * math.pi / 2) ** 2, rel=1e-6
    )
    assert float(cosine_schedule_simple(0.0)) == pytest.approx(1.0, abs=1e-6)
    # At t = 0.5 the angle is 0.5002 / 1.00025 * 90 deg = 45.00675 deg, so
    # cos^2 = (1 - sin(0.0135 deg)) / 2 = (1 - 2.356e-4) / 2 = 0.499882.
    assert float(cosine_schedule_simple(0.5)) == pytest.approx(0.499882, abs=2e-6)
    # At t = 1 the angle misses 90 deg by 4.999e-5 * pi / 2 rad: gamma = sin(7.852e-5)^2.
    assert float(cosine_schedule_simple(torch.tensor(1.0, dtype=torch.float64))) == pytest.approx(
        6.166e-9, rel=1e-3
    )


def test_other_schedules_hand_values():
    # cosine@0,0.5,1: (cos^2(t pi/4) - 1/2) / (1 - 1/2); at 0.5: 2 cos^2(pi/8) - 1 = cos(pi/4).
    assert float(cosine_schedule(0.5)) == pytest.approx(0.7071068, abs=1e-6)
    assert float(cosine_schedule(0.0)) == pytest.approx(1.0)
    assert float(cosine_schedule(1.0)) == pytest.approx(1e-9)  # clip_min
    assert float(sigmoid_schedule(0.5)) == pytest.approx(0.5, abs=1e-6)  # symmetric around 0
    assert float(sigmoid_schedule(0.0)) == pytest.approx(1.0)
    assert float(simple_linear_schedule(0.25)) == pytest.approx(0.75)
    assert float(simple_linear_schedule(1.0)) == pytest.approx(1e-9)


def test_get_schedule_names():
    t = torch.linspace(0, 1, 7)
    assert get_schedule("cosine") is cosine_schedule_simple
    torch.testing.assert_close(get_schedule("cosine@0,0.5,1")(t), cosine_schedule(t, 0, 0.5, 1))
    torch.testing.assert_close(get_schedule("sigmoid@-3,3,1.1")(t), sigmoid_schedule(t, -3, 3, 1.1))
    torch.testing.assert_close(get_schedule("simple_linear")(t), 1 - t.clamp(max=1 - 1e-9))
    with pytest.raises(ValueError, match="simple_linear"):
        get_schedule("cosine_typo")
    with pytest.raises(ValueError, match="3 comma-separated"):
        get_schedule("sigmoid@1,2")


def test_add_noise_forward_process():
    x0 = _bits()
    g = torch.Generator().manual_seed(3)
    x_t, noise, t, gamma = add_noise(x0, 0.3, generator=g)
    assert t.shape == gamma.shape == (2, 1, 1, 1)
    expected_gamma = math.cos((0.3 + 2e-4) / 1.00025 * math.pi / 2) ** 2
    torch.testing.assert_close(gamma, torch.full((2, 1, 1, 1), expected_gamma))
    torch.testing.assert_close(
        x_t, x0 * math.sqrt(expected_gamma) + noise * math.sqrt(1 - expected_gamma)
    )
    _, _, t, _ = add_noise(torch.zeros(500, 1, 1, 1), generator=g)
    assert 0 <= float(t.min()) and float(t.max()) < 1 and 0.4 < float(t.mean()) < 0.6


@pytest.mark.parametrize("iterations", [1, 2, 5, 20])
@pytest.mark.parametrize("td", [0.0, 1.0, 2.0])
def test_oracle_denoiser_recovers_x0_exactly(iterations, td):
    x0 = _bits()
    out = sample(
        lambda x, gamma: x0.clone(),
        SHAPE,
        iterations,
        td=td,
        x0_clip=(-B, B),
        generator=torch.Generator().manual_seed(1),
    )
    assert torch.equal(out, x0)


def test_oracle_eps_denoiser_recovers_x0():
    x0 = _bits()

    def true_eps(x_t, gamma):
        g = gamma.reshape(-1, 1, 1, 1)
        return (x_t - g.sqrt() * x0) / (1 - g).sqrt()

    out = sample(true_eps, SHAPE, 5, td=1.0, pred_type="eps", x0_clip="-0.1,0.1")
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)


def _gamma(t):
    return math.cos((t + 2e-4) / 1.00025 * math.pi / 2) ** 2


@pytest.mark.parametrize("iterations,td,clip", [(5, 0.0, None), (4, 1.0, (-B, B)), (20, 2.0, None)])
def test_identity_denoiser_follows_hand_written_ddim(iterations, td, clip):
    out = sample(
        lambda x, gamma: x,
        SHAPE,
        iterations,
        td=td,
        x0_clip=clip,
        generator=torch.Generator().manual_seed(7),
        dtype=torch.float64,
    )
    # DDIM by hand: x0_hat = clip(x_t); eps_hat = (x_t - sqrt(g) x0_hat) / sqrt(1 - g);
    # x_prev = sqrt(g_prev) x0_hat + sqrt(1 - g_prev) eps_hat, t_prev = max(t - (1 + td)/T, 0).
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for k in range(iterations):
        g_now = _gamma(1 - k / iterations)
        g_prev = _gamma(max(1 - (k + 1 + td) / iterations, 0.0))
        x0_hat = x if clip is None else x.clamp(*clip)
        eps_hat = (x - math.sqrt(g_now) * x0_hat) / math.sqrt(1 - g_now)
        x = math.sqrt(g_prev) * x0_hat + math.sqrt(1 - g_prev) * eps_hat
    torch.testing.assert_close(out, x0_hat, rtol=1e-9, atol=1e-12)


def test_sampler_self_conditioning_inputs():
    calls = []

    def denoise(x_in, gamma):
        calls.append(x_in.clone())
        assert gamma.shape == (SHAPE[0],)
        return torch.full(SHAPE, 0.01 * len(calls))

    sample(denoise, SHAPE, 3, self_cond="x")
    assert [c.shape[1] for c in calls] == [8, 8, 8]
    assert torch.equal(calls[0][:, 4:], torch.zeros(SHAPE))  # no estimate at the first step
    torch.testing.assert_close(calls[1][:, 4:], torch.full(SHAPE, 0.01))  # previous x0
    torch.testing.assert_close(calls[2][:, 4:], torch.full(SHAPE, 0.02))


def test_self_cond_estimate_first_fraction_only():
    x_t = torch.randn(4, 4, 3, 3)
    gamma = torch.full((4, 1, 1, 1), 0.5)
    seen = {}

    def denoise(x_in, g):
        seen["x_in"], seen["gamma"] = x_in, g
        return torch.full((x_in.shape[0], 4, 3, 3), 0.3, requires_grad=True)

    out = self_cond_estimate(x_t, gamma, denoise, "x", "x", x0_clip=(-B, B), rate=0.5)
    assert out.shape == (4, 8, 3, 3) and not out.requires_grad
    assert seen["x_in"].shape == (2, 8, 3, 3) and seen["gamma"].shape == (2,)
    assert torch.equal(seen["x_in"][:, 4:], torch.zeros(2, 4, 3, 3))
    assert torch.equal(out[:, :4], x_t)
    torch.testing.assert_close(out[:2, 4:], torch.full((2, 4, 3, 3), B))  # clipped 0.3 -> 0.1
    assert torch.equal(out[2:, 4:], torch.zeros(2, 4, 3, 3))


def test_v_prediction_and_truncation():
    x0, eps = _bits(), torch.randn(SHAPE)
    gamma = torch.full((2, 1, 1, 1), 0.36)  # sqrt = 0.6, sqrt(1 - g) = 0.8
    x_t = 0.6 * x0 + 0.8 * eps
    v = 0.6 * eps - 0.8 * x0
    x0_hat, eps_hat = x0_eps_from_prediction(x_t, gamma, v, "v")
    torch.testing.assert_close(x0_hat, x0)
    torch.testing.assert_close(eps_hat, eps)
    # eps prediction with clipping: truncation recomputes eps from the clipped x0.
    x0_hat, eps_hat = x0_eps_from_prediction(x_t, gamma, eps * 0, "eps", x0_clip=(-B, B))
    torch.testing.assert_close(x0_hat, (x_t / 0.6).clamp(-B, B))
    torch.testing.assert_close(eps_hat, (x_t - 0.6 * x0_hat) / 0.8)


def test_ddpm_large_variance_by_hand():
    x_t, eps = torch.randn(SHAPE), torch.randn(SHAPE)
    g_now, g_prev = torch.tensor(0.3), torch.tensor(0.6)
    out = transition_ddpm(x_t, eps, g_now, g_prev, "large", torch.Generator().manual_seed(5))
    alpha = 0.5
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    expected = (x_t - (1 - alpha) / math.sqrt(0.7) * eps) / math.sqrt(alpha) + math.sqrt(0.5) * z
    torch.testing.assert_close(out, expected)


def test_bad_arguments():
    with pytest.raises(ValueError, match="pred_type"):
        sample(lambda x, g: x, SHAPE, 2, pred_type="y")
    with pytest.raises(ValueError, match="sampler"):
        sample(lambda x, g: x, SHAPE, 2, sampler="euler")
    with pytest.raises(ValueError, match="iterations"):
        sample(lambda x, g: x, SHAPE, 0)
    with pytest.raises(ValueError, match="expected"):
        sample(lambda x, g: x[:, :2], SHAPE, 2)


@pytest.mark.parametrize("sampler", ["ddpm", "ddpm@small"])
def test_ddpm_sampler_runs_reproducibly(sampler):
    x0 = _bits()
    runs = [
        sample(
            lambda x, gamma: x.clamp(-B, B),
            SHAPE,
            4,
            sampler=sampler,
            generator=torch.Generator().manual_seed(2),
        )
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1]) and torch.isfinite(runs[0]).all()
    oracle = sample(lambda x, gamma: x0, SHAPE, 4, sampler=sampler)
    assert torch.equal(oracle, x0)
