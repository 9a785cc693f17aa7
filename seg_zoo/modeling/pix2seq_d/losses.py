"""Pix2Seq-D training losses: per-pixel mask weights and the diffusion loss per prediction type.

Follows the official TF code (github google-research/pix2seq): ``task_utils.get_normalized_weight``
(Pix2Seq-D Sec. 3.3, "loss weighting") and ``panoptic_diffusion.Model.compute_loss``. Means are
taken over every element as the official ``tf.reduce_mean`` does: over (N, C, H, W) for the
regression losses and over (N, groups, H, W) for the softmax cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .bits import softmax_targets

__all__ = ["normalized_mask_weight", "diffusion_loss", "LOSS_PRED_TYPES"]

LOSS_PRED_TYPES = ("x", "x_softmax_xent", "x_sigmoid_xent", "eps")


def normalized_mask_weight(identity_map: torch.Tensor, max_ids: int, p: float) -> torch.Tensor:
    """Per-pixel weight ``(N, H, W)`` that favours small segments; its per-image mean is 1.

    A pixel of identity ``i`` (void 0 included) gets ``(1 / (count_i + 1)) ** p``, where
    ``count_i`` is the number of pixels with that identity in the image; then each image is
    rescaled to mean 1. ``p = 0`` gives all ones. ``max_ids`` is ``max_instances_per_image``.
    """
    if identity_map.dim() != 3:
        raise ValueError(f"identity_map must have shape (N, H, W), got {tuple(identity_map.shape)}")
    if identity_map.dtype.is_floating_point or identity_map.dtype == torch.bool:
        raise TypeError(f"identity_map must have an integer dtype, got {identity_map.dtype}")
    n, h, w = identity_map.shape
    ids = identity_map.reshape(n, h * w).to(torch.int64)
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= max_ids):
        bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise ValueError(f"identity_map holds {bad}, outside [0, max_ids={max_ids})")
    counts = torch.zeros(n, max_ids, dtype=torch.float32, device=ids.device)
    counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.float32))
    weight = torch.gather(1.0 / (counts + 1.0), 1, ids) ** p  # (N, H*W)
    weight = weight / weight.sum(1, keepdim=True) * (h * w)
    return weight.reshape(n, h, w)


def diffusion_loss(
    pred_type: str,
    x0_bits: torch.Tensor,
    noise: torch.Tensor,
    denoise_out: torch.Tensor,
    weight: torch.Tensor,
    groups: int = 2,
    b_scale: float = 0.1,
) -> torch.Tensor:
    """Scalar loss of one denoising step.

    Args:
        pred_type: 'x' (weighted MSE to x0), 'x_softmax_xent' (weighted cross-entropy of each
            group's ``2**(n_bits/groups)``-way softmax against the group's bits read as an
            integer), 'x_sigmoid_xent' (weighted per-bit logistic loss; ``b_scale`` turns the
            analog target into its sign) or 'eps' (unweighted MSE to the noise, as official).
        x0_bits: analog bits ``(N, n_bits, H, W)``.
        noise: the noise added by the forward process, ``(N, n_bits, H, W)``.
        denoise_out: ``(N, n_bits, H, W)``, or for 'x_softmax_xent' logits
            ``(N, groups * 2**(n_bits/groups), H, W)`` where channel ``g * 2**k + v`` scores
            value ``v`` of group ``g``.
        weight: per-pixel weights ``(N, H, W)`` (e.g. :func:`normalized_mask_weight`).
    """
    if x0_bits.dim() != 4:
        raise ValueError(f"x0_bits must have shape (N, n_bits, H, W), got {tuple(x0_bits.shape)}")
    n, c, h, w = x0_bits.shape
    if weight.shape != (n, h, w):
        raise ValueError(f"weight must have shape {(n, h, w)}, got {tuple(weight.shape)}")
    weight = weight[:, None]  # (N, 1, H, W), broadcast over bits / groups
    if pred_type in ("x", "x_sigmoid_xent", "eps") and denoise_out.shape != x0_bits.shape:
        raise ValueError(
            f"denoise_out for pred_type {pred_type!r} must have shape {tuple(x0_bits.shape)}, "
            f"got {tuple(denoise_out.shape)}"
        )
    if pred_type == "x":
        return ((x0_bits - denoise_out) ** 2 * weight).mean()
    if pred_type == "x_sigmoid_xent":
        # Kept as the official -log(sigmoid + 1e-8) (not softplus): the epsilon caps the loss of
        # a confidently wrong bit, and matching it keeps the training signal the same.
        prob = torch.sigmoid(denoise_out * x0_bits / b_scale)
        return (-torch.log(prob + 1e-8) * weight).mean()
    if pred_type == "x_softmax_xent":
        if groups < 1 or c % groups:
            raise ValueError(f"{c} bits cannot be split into {groups} softmax groups")
        per_group = 2 ** (c // groups)
        if denoise_out.shape != (n, groups * per_group, h, w):
            raise ValueError(
                f"softmax logits must have shape {(n, groups * per_group, h, w)} "
                f"({groups} groups of {per_group}), got {tuple(denoise_out.shape)}"
            )
        targets = softmax_targets(x0_bits, groups)  # (N, groups, H, W)
        logits = denoise_out.reshape(n, groups, per_group, h, w).transpose(1, 2)
        xent = F.cross_entropy(logits, targets, reduction="none")  # (N, groups, H, W)
        return (xent * weight).mean()
    if pred_type == "eps":
        return ((noise - denoise_out) ** 2).mean()
    raise ValueError(f"unknown pred_type {pred_type!r}; valid: {', '.join(LOSS_PRED_TYPES)}")
