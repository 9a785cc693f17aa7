"""Continuous-time Gaussian diffusion over analog bits, as Pix2Seq-D uses it.

Follows the official TF code ``models/diffusion_utils.py`` (github google-research/pix2seq):
noise schedules and their string names, the forward process ``x_t = sqrt(g) x0 + sqrt(1-g) eps``
with ``g = gamma(t)``, the x0 / eps conversions of ``get_x0_eps`` (with noise truncation, i.e. eps
recomputed from the clipped x0, as ``generate`` and ``add_self_cond_estimate`` ask), the DDIM and
DDPM transitions of ``transition_step``, the sampling loop of ``Scheduler.generate`` with the
asymmetric time difference ``td`` (Pix2Seq-D Sec. 3.2, Bit Diffusion Sec. 2) and data
self-conditioning (``add_self_cond_estimate`` / ``SelfCondEstimateContext`` with momentum 0).

Not carried over: classifier-free ``guidance`` and self-conditioning momentum (both 0 in the
Pix2Seq-D configs), latent ("hidden") self-conditioning, and self-conditioning by masking.
Schedule names are matched exactly ('cosine' or 'cosine@...'), where the official code accepts
any name that merely starts with 'cosine' or 'simple_linear'.

Tensors are NCHW; time ``t`` and ``gamma`` are ``(N, 1, 1, 1)`` inside this module. Denoisers
receive ``gamma`` flattened to ``(N,)``, as the official ``cond_denoise`` reshapes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = [
    "cosine_schedule_simple",
    "cosine_schedule",
    "sigmoid_schedule",
    "log_schedule",
    "simple_linear_schedule",
    "get_schedule",
    "add_noise",
    "parse_x0_clip",
    "x0_eps_from_prediction",
    "transition_ddim",
    "transition_ddpm",
    "self_cond_estimate",
    "sample",
    "PRED_TYPES",
    "SCHEDULE_NAMES",
]

# Prediction types the denoiser may use; every 'x*' type predicts x0 (the softmax / sigmoid
# heads are turned into an analog x0 before they reach the sampler).
PRED_TYPES = ("x", "x_softmax_xent", "x_sigmoid_xent", "eps", "v")
SCHEDULE_NAMES = (
    "cosine",
    "cosine@start,end,tau",
    "sigmoid@start,end,tau",
    "log@start,end,reverse",
    "simple_linear",
)
SELF_COND_MODES = ("none", "x", "eps", "auto")

Schedule = Callable[[torch.Tensor], torch.Tensor]


def _as_tensor(t) -> torch.Tensor:
    return t if isinstance(t, torch.Tensor) else torch.tensor(t, dtype=torch.float32)


def cosine_schedule_simple(t, ns: float = 2e-4, ds: float = 2.5e-4) -> torch.Tensor:
    """gamma(t) = cos(((t + ns) / (1 + ds)) * pi / 2) ** 2 (Nichol & Dhariwal's cosine)."""
    t = _as_tensor(t)
    return torch.cos(((t + ns) / (1 + ds)) * math.pi / 2) ** 2


def cosine_schedule(
    t, start: float = 0.0, end: float = 0.5, tau: float = 1.0, clip_min: float = 1e-9
) -> torch.Tensor:
    """Cosine ** (2 tau) on [start, end] (in units of pi/2), rescaled to [0, 1], clipped below."""
    t = _as_tensor(t)
    y_start = math.cos(start * math.pi / 2) ** (2 * tau)
    y_end = math.cos(end * math.pi / 2) ** (2 * tau)
    y = torch.cos((t * (end - start) + start) * math.pi / 2) ** (2 * tau)
    return ((y - y_end) / (y_start - y_end)).clamp(clip_min, 1.0)


def sigmoid_schedule(
    t, start: float = -3.0, end: float = 3.0, tau: float = 1.0, clip_min: float = 1e-9
) -> torch.Tensor:
    """Decreasing sigmoid on [start, end] with temperature tau, rescaled to [0, 1]."""
    t = _as_tensor(t)
    v_start = 1 / (1 + math.exp(-start / tau))
    v_end = 1 / (1 + math.exp(-end / tau))
    y = torch.sigmoid((t * (end - start) + start) / tau)
    return ((v_end - y) / (v_end - v_start)).clamp(clip_min, 1.0)


def log_schedule(t, start: float = 1.0, end: float = 100.0, reverse: bool = False) -> torch.Tensor:
    """Decreasing log on [start, end] rescaled to [0, 1] (swapped ends when reverse)."""
    t = _as_tensor(t)
    if reverse:
        start, end = end, start
    v_start, v_end = math.log(start), math.log(end)
    y = torch.log(t * (end - start) + start)
    return ((v_end - y) / (v_end - v_start)).clamp(0.0, 1.0)


def simple_linear_schedule(t, clip_min: float = 1e-9) -> torch.Tensor:
    """gamma(t) = 1 - t, clipped to [clip_min, 1]."""
    return (1.0 - _as_tensor(t)).clamp(clip_min, 1.0)


def _parse_args(name: str, n: int) -> list[str]:
    args = name.split("@", 1)[1].split(",")
    if len(args) != n:
        raise ValueError(
            f"schedule {name!r} needs {n} comma-separated values after '@', got {len(args)}; "
            f"valid names: {', '.join(SCHEDULE_NAMES)}"
        )
    return args


def get_schedule(name: str | Schedule) -> Schedule:
    """Schedule from its official name; a callable is returned unchanged.

    Valid names: 'cosine' (:func:`cosine_schedule_simple`), 'cosine@s,e,tau', 'sigmoid@s,e,tau',
    'log@s,e,reverse' (reverse is 't'/'true'/other) and 'simple_linear'.
    """
    if callable(name):
        return name
    if not isinstance(name, str):
        raise TypeError(f"schedule must be a name or a callable, got {type(name).__name__}")
    try:
        if name == "cosine":
            return cosine_schedule_simple
        if name == "simple_linear":
            return simple_linear_schedule
        if name.startswith("cosine@"):
            s, e, tau = (float(v) for v in _parse_args(name, 3))
            return lambda t: cosine_schedule(t, s, e, tau)
        if name.startswith("sigmoid@"):
            s, e, tau = (float(v) for v in _parse_args(name, 3))
            return lambda t: sigmoid_schedule(t, s, e, tau)
        if name.startswith("log@"):
            s, e, rev = _parse_args(name, 3)
            reverse = rev.strip().lower() in ("t", "true")
            return lambda t: log_schedule(t, float(s), float(e), reverse)
    except ValueError as err:
        if "valid names" in str(err):
            raise
        raise ValueError(f"cannot parse schedule {name!r}: {err}") from None
    raise ValueError(f"unknown schedule {name!r}; valid names: {', '.join(SCHEDULE_NAMES)}")


def _time_shape(x: torch.Tensor) -> list[int]:
    return [x.shape[0]] + [1] * (x.dim() - 1)


def add_noise(
    x0: torch.Tensor,
    t: torch.Tensor | float | None = None,
    schedule: str | Schedule = "cosine",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward process: returns ``(x_t, noise, t, gamma)``, with t and gamma ``(N, 1, 1, 1)``.

    ``t`` None draws ``t ~ U[0, 1)`` per sample; a float is used for every sample; a tensor of N
    values is reshaped. ``generator`` must live on ``x0``'s device.
    """
    shape = _time_shape(x0)
    if t is None:
        t = torch.rand(shape, generator=generator, device=x0.device, dtype=x0.dtype)
    elif isinstance(t, (int, float)):
        t = torch.full(shape, float(t), device=x0.device, dtype=x0.dtype)
    else:
        if t.numel() != x0.shape[0]:
            raise ValueError(f"t has {t.numel()} values for a batch of {x0.shape[0]}")
        t = t.reshape(shape).to(device=x0.device, dtype=x0.dtype)
    gamma = get_schedule(schedule)(t)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = x0 * gamma.sqrt() + noise * (1 - gamma).sqrt()
    return x_t, noise, t, gamma


def parse_x0_clip(x0_clip) -> tuple[float, float] | None:
    """None / '' -> no clipping; 'lo,hi' (official string) or (lo, hi) -> that range."""
    if x0_clip is None or x0_clip == "":
        return None
    if isinstance(x0_clip, str):
        parts = x0_clip.split(",")
        if len(parts) != 2:
            raise ValueError(f"x0_clip must look like 'min,max', got {x0_clip!r}")
        return float(parts[0]), float(parts[1])
    lo, hi = x0_clip
    return float(lo), float(hi)


def _check_pred_type(pred_type: str) -> None:
    if pred_type not in PRED_TYPES:
        raise ValueError(f"unknown pred_type {pred_type!r}; valid: {', '.join(PRED_TYPES)}")


def x0_eps_from_prediction(
    x_t: torch.Tensor,
    gamma: torch.Tensor,
    pred: torch.Tensor,
    pred_type: str,
    x0_clip=None,
    truncate_noise: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) from the denoiser's prediction, as the official ``get_x0_eps``.

    'x*' types: pred is x0 (clipped), eps is derived from it. 'eps' / 'v': x0 is derived and
    clipped; with ``truncate_noise`` eps is re-derived from the clipped x0 (the official
    sampler and self-conditioning always pass True).
    """
    _check_pred_type(pred_type)
    clip = parse_x0_clip(x0_clip)

    def clip_fn(x):
        return x if clip is None else x.clamp(clip[0], clip[1])

    def eps_from_x0(x0):
        return (x_t - gamma.sqrt() * x0) / (1 - gamma).sqrt()

    if pred_type.startswith("x"):
        x0 = clip_fn(pred)
        return x0, eps_from_x0(x0)
    if pred_type == "eps":
        x0 = clip_fn((x_t - (1 - gamma).sqrt() * pred) / gamma.sqrt())
        return x0, eps_from_x0(x0) if truncate_noise else pred
    # 'v' parameterisation: v = sqrt(g) eps - sqrt(1 - g) x0.
    x0 = clip_fn(gamma.sqrt() * x_t - (1 - gamma).sqrt() * pred)
    if truncate_noise:
        return x0, eps_from_x0(x0)
    return x0, (1 - gamma).sqrt() * x_t + gamma.sqrt() * pred


def transition_ddim(x0: torch.Tensor, eps: torch.Tensor, gamma_prev: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM step: ``x_prev = sqrt(g_prev) x0 + sqrt(1 - g_prev) eps``."""
    return x0 * gamma_prev.sqrt() + eps * (1 - gamma_prev).sqrt()


def transition_ddpm(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    gamma_now: torch.Tensor,
    gamma_prev: torch.Tensor,
    var_type: str = "large",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Ancestral DDPM step with variance 'large' (beta_t) or 'small' (posterior variance)."""
    alpha = torch.exp(torch.log(gamma_now) - torch.log(gamma_prev)).clamp(0.0, 1.0)
    mean = (x_t - (1 - alpha) / (1 - gamma_now).sqrt() * eps) / alpha.sqrt()
    if var_type == "large":
        var = 1.0 - alpha
    elif var_type == "small":
        var = torch.exp(torch.log1p(-gamma_prev) - torch.log1p(-gamma_now)) * (1.0 - alpha)
    else:
        raise ValueError(f"unknown DDPM variance type {var_type!r}; valid: 'large', 'small'")
    noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
    return mean + var.sqrt() * noise


def _self_cond_pick(x0: torch.Tensor, eps: torch.Tensor, self_cond: str, pred_type: str):
    if self_cond == "x":
        return x0
    if self_cond == "eps":
        return eps
    if self_cond == "auto":
        return eps if pred_type == "eps" else x0
    raise ValueError(f"unknown self_cond {self_cond!r}; valid: {', '.join(SELF_COND_MODES)}")


def self_cond_estimate(
    x_t: torch.Tensor,
    gamma: torch.Tensor,
    denoise_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    pred_type: str,
    self_cond: str,
    x0_clip=None,
    rate: float = 0.5,
) -> torch.Tensor:
    """Training input with a self-conditioning estimate: ``(N, 2C, H, W)`` = [x_t, estimate].

    As the official ``add_self_cond_estimate``: the first ``int(N * rate)`` samples get the
    denoiser's own estimate (computed with a zero estimate, then gradient-stopped); the rest get
    zeros. ``denoise_fn(x_in, gamma)`` is called with that prefix of the batch only (so it must
    condition on the same prefix of images) and ``gamma`` of shape ``(n,)``; it must return the
    analog x0 (or eps / v) prediction, not softmax logits.
    """
    _check_pred_type(pred_type)
    _self_cond_pick(x_t, x_t, self_cond, pred_type)  # validates the mode
    if self_cond == "none":
        raise ValueError("self_cond_estimate called with self_cond='none'")
    gamma = gamma.reshape(_time_shape(x_t))
    num_sc = int(x_t.shape[0] * rate)
    estimate = torch.zeros_like(x_t)
    if num_sc > 0:
        x_p, gamma_p = x_t[:num_sc], gamma[:num_sc]
        # The official code stops the gradient after the call; no_grad does the same and
        # saves the activation memory of the extra forward pass.
        with torch.no_grad():
            pred = denoise_fn(torch.cat([x_p, torch.zeros_like(x_p)], 1), gamma_p.reshape(-1))
            x0, eps = x0_eps_from_prediction(x_p, gamma_p, pred, pred_type, x0_clip, True)
            estimate[:num_sc] = _self_cond_pick(x0, eps, self_cond, pred_type)
    return torch.cat([x_t, estimate], 1)


def sample(
    denoise_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape,
    iterations: int,
    *,
    schedule: str | Schedule = "cosine",
    td: float = 0.0,
    pred_type: str = "x",
    x0_clip=None,
    self_cond: str = "none",
    sampler: str = "ddim",
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Generate samples of ``shape`` (N, C, H, W); returns the last x0 estimate.

    As the official ``Scheduler.generate``: start from N(0, I); at step k = 0..iterations-1 use
    ``t = 1 - k / iterations`` and ``t_prev = max(1 - (k + 1 + td) / iterations, 0)``; call
    ``denoise_fn(x_in, gamma)`` with ``gamma`` ``(N,)`` and ``x_in`` = x_t, or
    ``[x_t, estimate]`` concatenated on dim 1 when ``self_cond != 'none'`` (the estimate comes
    from the previous step, zeros at the first); convert with :func:`x0_eps_from_prediction`
    (noise truncation on) and step with DDIM or DDPM ('ddpm', 'ddpm@large', 'ddpm@small').
    Wrap the call in ``torch.no_grad()`` at inference.
    """
    _check_pred_type(pred_type)
    if self_cond not in SELF_COND_MODES:
        raise ValueError(f"unknown self_cond {self_cond!r}; valid: {', '.join(SELF_COND_MODES)}")
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive int, got {iterations!r}")
    if sampler == "ddim":
        var_type = None
    elif sampler == "ddpm" or sampler.startswith("ddpm@"):
        var_type = sampler.split("@", 1)[1] if "@" in sampler else "large"
        if var_type not in ("large", "small"):
            raise ValueError(f"unknown sampler {sampler!r}; valid: ddim, ddpm@large, ddpm@small")
    else:
        raise ValueError(f"unknown sampler {sampler!r}; valid: ddim, ddpm, ddpm@large, ddpm@small")
    schedule_fn = get_schedule(schedule)
    shape = tuple(shape)
    samples = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    x0 = torch.zeros_like(samples)
    eps = torch.zeros_like(samples)
    ones = torch.ones(_time_shape(samples), device=samples.device, dtype=dtype)
    for k in range(iterations):
        t_now = ones * (1.0 - k / iterations)
        t_prev = (ones * (1.0 - (k + 1 + td) / iterations)).clamp(min=0.0)
        gamma, gamma_prev = schedule_fn(t_now), schedule_fn(t_prev)
        if self_cond == "none":
            x_in = samples
        else:
            x_in = torch.cat([samples, _self_cond_pick(x0, eps, self_cond, pred_type)], 1)
        pred = denoise_fn(x_in, gamma.reshape(-1))
        if pred.shape != samples.shape:
            raise ValueError(
                f"denoise_fn returned shape {tuple(pred.shape)}, expected {tuple(samples.shape)}"
            )
        x0, eps = x0_eps_from_prediction(samples, gamma, pred, pred_type, x0_clip, True)
        if var_type is None:
            samples = transition_ddim(x0, eps, gamma_prev)
        else:
            samples = transition_ddpm(samples, eps, gamma, gamma_prev, var_type, generator)
    return x0
