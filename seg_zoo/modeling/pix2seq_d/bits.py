"""Analog-bit representation of panoptic label maps for Pix2Seq-D.

Pix2Seq-D (Chen et al., ICCV 2023, arXiv 2210.06366, Sec. 3.1) treats a panoptic mask as a
per-pixel pair (semantic class, instance identity), writes each integer as binary digits and
diffuses the digits as real numbers ("analog bits", Chen et al. 2022, Bit Diffusion).

What follows the official TF code (github google-research/pix2seq) exactly:

- Bit order is least-significant first: bit ``i`` of ``x`` is ``(x >> i) & 1`` (``utils.int2bits``).
- The 16 label bits are the 8 class bits followed by the 8 identity bits
  (``task_utils.integer_map_to_bits`` splits ``n_bits_label`` evenly over the two channels);
  a bit becomes the analog value ``(2 * bit - 1) * b_scale``.
- Decoding thresholds at zero and clamps the class to ``num_classes - 1`` and the identity to
  ``max_instances - 1`` (``task_utils.bits_to_panoptic_map``).
- With the ``x_softmax_xent`` prediction type the denoiser outputs, per group of bits, logits over
  all ``2**bits_per_group`` values; at inference they become an x0 estimate as the *expectation*
  of the bits under the softmax, mapped to analog values (``TransUNet.call`` without
  ``return_logits``); see :func:`softmax_logits_to_analog_bits`.
- Identities are a random permutation of ``1..K`` per image (official ``object_order='shuffle'``),
  or, with ``max_instances`` given, ``K`` distinct random ids in ``1..max_instances - 1``
  (official ``'random'`` order in ``data/video.py``).

Where seg_zoo differs (the official code has no such path): ids that do not fit the bits raise an
error instead of silently wrapping, and images with too many segments are truncated
deterministically with a warning (:func:`truncate_identities`).

Tensors are NCHW: bits live on dim 1.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

__all__ = [
    "int2bits",
    "bits2int",
    "label_map_to_analog_bits",
    "analog_bits_to_label_map",
    "softmax_targets",
    "softmax_logits_to_analog_bits",
    "assign_random_identities",
    "truncate_identities",
]


def _check_integer(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"{name} must have an integer dtype, got {x.dtype}")


def int2bits(x: torch.Tensor, n_bits: int) -> torch.Tensor:
    """Integers ``(...)`` -> float bits ``(..., n_bits)``, least-significant bit first."""
    _check_integer("int2bits input", x)
    if n_bits < 1:
        raise ValueError(f"int2bits: n_bits must be >= 1, got {n_bits}")
    shifts = torch.arange(n_bits, device=x.device, dtype=x.dtype)
    return ((x.unsqueeze(-1) >> shifts) & 1).to(torch.float32)


def bits2int(bits: torch.Tensor) -> torch.Tensor:
    """Bits ``(..., n)`` -> int64 ``(...)``; a bit counts as 1 where it is > 0 (LSB first)."""
    n = bits.shape[-1]
    if n > 62:
        raise ValueError(f"bits2int: {n} bits do not fit in int64")
    weights = 2 ** torch.arange(n, device=bits.device, dtype=torch.int64)
    return ((bits > 0).to(torch.int64) * weights).sum(-1)


def label_map_to_analog_bits(
    label_map: torch.Tensor, n_bits_label: int = 16, b_scale: float = 0.1
) -> torch.Tensor:
    """(class, identity) map ``(N, 2, H, W)`` -> analog bits ``(N, n_bits_label, H, W)``.

    Channels ``0 .. n_bits_label/2 - 1`` hold the class bits, the rest the identity bits, each
    LSB first, with values ``+b_scale`` (bit 1) or ``-b_scale`` (bit 0).
    Raises ValueError if an id is negative or does not fit in ``n_bits_label // 2`` bits.
    """
    _check_integer("label_map", label_map)
    if label_map.dim() != 4 or label_map.shape[1] != 2:
        raise ValueError(
            "label_map must have shape (N, 2, H, W) (class id, instance id), "
            f"got {tuple(label_map.shape)}"
        )
    if n_bits_label < 2 or n_bits_label % 2:
        raise ValueError(f"n_bits_label must be a positive even number, got {n_bits_label}")
    bits_per_channel = n_bits_label // 2
    limit = 2**bits_per_channel
    bits = []
    for channel, what in enumerate(("class id", "instance id")):
        ids = label_map[:, channel]
        if ids.numel():
            lo, hi = int(ids.min()), int(ids.max())
            bad = lo if lo < 0 else hi
            if lo < 0 or hi >= limit:
                raise ValueError(
                    f"label_map channel {channel} ({what}) holds {bad}, outside the range "
                    f"[0, {limit}) that {bits_per_channel} bits can encode "
                    f"(n_bits_label={n_bits_label})"
                )
        bits.append(int2bits(ids, bits_per_channel))  # (N, H, W, bits_per_channel)
    bits = torch.cat(bits, dim=-1).permute(0, 3, 1, 2)  # (N, n_bits_label, H, W)
    return (bits * 2 - 1) * b_scale


def analog_bits_to_label_map(
    bits: torch.Tensor, num_classes: int, max_instances: int
) -> torch.Tensor:
    """Analog bits ``(N, n_bits, H, W)`` -> int64 (class, identity) map ``(N, 2, H, W)``.

    Bits are thresholded at 0; the class is clamped to ``num_classes - 1`` (``num_classes``
    counts the void/padding class 0) and the identity to ``max_instances - 1`` (which counts
    identity 0), as the official ``bits_to_panoptic_map``.
    """
    if bits.dim() != 4 or bits.shape[1] % 2:
        raise ValueError(
            f"bits must have shape (N, n_bits, H, W) with an even n_bits, got {tuple(bits.shape)}"
        )
    if num_classes < 1 or max_instances < 1:
        raise ValueError(
            f"num_classes ({num_classes}) and max_instances ({max_instances}) must be >= 1"
        )
    half = bits.shape[1] // 2
    bits_last = bits.permute(0, 2, 3, 1)  # (N, H, W, n_bits)
    classes = bits2int(bits_last[..., :half]).clamp(max=num_classes - 1)
    identities = bits2int(bits_last[..., half:]).clamp(max=max_instances - 1)
    return torch.stack([classes, identities], dim=1)


def softmax_targets(bits: torch.Tensor, groups: int) -> torch.Tensor:
    """Analog bits ``(N, n_bits, H, W)`` -> class index per group ``(N, groups, H, W)``.

    Group ``g`` covers bit channels ``g*n_bits/groups .. (g+1)*n_bits/groups - 1`` (so with 16 bits
    and 2 groups: the class, then the identity); its target is those bits read as an integer.
    """
    if bits.dim() != 4:
        raise ValueError(f"bits must have shape (N, n_bits, H, W), got {tuple(bits.shape)}")
    n_bits = bits.shape[1]
    if groups < 1 or n_bits % groups:
        raise ValueError(f"{n_bits} bits cannot be split into {groups} equal softmax groups")
    n, _, h, w = bits.shape
    grouped = bits.reshape(n, groups, n_bits // groups, h, w).permute(0, 1, 3, 4, 2)
    return bits2int(grouped)  # (N, groups, H, W)


def softmax_logits_to_analog_bits(
    logits: torch.Tensor, groups: int, b_scale: float
) -> torch.Tensor:
    """Softmax logits ``(N, groups * 2**k, H, W)`` -> analog x0 estimate ``(N, groups * k, H, W)``.

    This is the *expectation* of each bit under the group's softmax, ``p(bit=1)``, mapped to
    ``(2 p - 1) * b_scale`` -- not the argmax. That is what the official ``TransUNet.call``
    returns when ``return_logits`` is False (softmax, then a product with the table of all
    ``2**k`` bit patterns), and ``get_x0_eps`` then takes it as the x0 prediction for the
    ``x*`` prediction types. The expectation keeps the estimate soft in early sampling steps,
    where the network is unsure, so DDIM moves towards it gradually.
    Logit channel ``g * 2**k + v`` is the score of value ``v`` in group ``g``.
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must have shape (N, C, H, W), got {tuple(logits.shape)}")
    n, c, h, w = logits.shape
    if groups < 1 or c % groups:
        raise ValueError(f"{c} logit channels cannot be split into {groups} softmax groups")
    per_group = c // groups
    k = per_group.bit_length() - 1
    if per_group != 2**k or k < 1:
        raise ValueError(
            f"each softmax group must have 2**k logits (k >= 1), got {per_group} "
            f"({c} channels / {groups} groups)"
        )
    table = int2bits(torch.arange(per_group, device=logits.device), k).to(logits.dtype)
    probs = F.softmax(logits.reshape(n, groups, per_group, h, w), dim=2)
    expected = torch.einsum("ngvhw,vb->ngbhw", probs, table)  # (N, groups, k, H, W)
    return (expected.reshape(n, groups * k, h, w) * 2 - 1) * b_scale


def assign_random_identities(
    segment_ids: torch.Tensor,
    generator: torch.Generator | None = None,
    max_instances: int | None = None,
) -> torch.Tensor:
    """Relabel one image's segments with random identities; 0 (void) stays 0.

    Args:
        segment_ids: int tensor ``(H, W)`` of arbitrary non-negative segment ids (e.g. the
            ``rgb2id`` of a COCO panoptic PNG); 0 is void.
        generator: optional torch.Generator (on the CPU) for reproducibility.
        max_instances: None -> the K segments get a random permutation of ``1..K``
            (official ``object_order='shuffle'``). An int -> K distinct random ids from
            ``1..max_instances - 1`` (official ``'random'`` order); K must fit.

    Returns:
        int64 tensor ``(H, W)`` on the input's device. Call :func:`truncate_identities` first
        if the image may hold more segments than the bits / ``max_instances`` allow.
    """
    _check_integer("segment_ids", segment_ids)
    if segment_ids.dim() != 2:
        raise ValueError(f"segment_ids must have shape (H, W), got {tuple(segment_ids.shape)}")
    if segment_ids.numel() and int(segment_ids.min()) < 0:
        raise ValueError(f"segment_ids must be >= 0, found {int(segment_ids.min())}")
    unique, inverse = torch.unique(segment_ids.to(torch.int64), return_inverse=True)
    has_void = unique.numel() > 0 and int(unique[0]) == 0
    num_segments = unique.numel() - int(has_void)
    if max_instances is None:
        new_ids = torch.randperm(num_segments, generator=generator) + 1
    else:
        if num_segments > max_instances - 1:
            raise ValueError(
                f"{num_segments} segments do not fit in max_instances={max_instances} "
                "(id 0 is void); call truncate_identities first"
            )
        new_ids = torch.randperm(max_instances - 1, generator=generator)[:num_segments] + 1
    if has_void:
        new_ids = torch.cat([torch.zeros(1, dtype=torch.int64), new_ids])
    return new_ids.to(segment_ids.device)[inverse]


def truncate_identities(
    segment_ids: torch.Tensor, max_instances: int, context: str = ""
) -> torch.Tensor:
    """Keep at most ``max_instances - 1`` segments of one image; the rest become void (0).

    Args:
        segment_ids: int tensor ``(H, W)``, 0 = void.
        max_instances: the official ``max_instances_per_image`` (it counts identity 0).
        context: text added to the warning (e.g. the image's file name).

    Returns:
        int tensor ``(H, W)`` (same dtype): the kept segments keep their ids. The choice is
        deterministic: the largest segments (by pixel count) are kept, ties broken by the
        smaller id. When segments are dropped ONE ``UserWarning`` names the count and the limit;
        the dropped pixels are those where the result is 0 and the input is not (the caller
        should void their class too).
    """
    _check_integer("segment_ids", segment_ids)
    if segment_ids.dim() != 2:
        raise ValueError(f"segment_ids must have shape (H, W), got {tuple(segment_ids.shape)}")
    if max_instances < 1:
        raise ValueError(f"max_instances must be >= 1, got {max_instances}")
    unique, counts = torch.unique(segment_ids, return_counts=True)
    keep = unique != 0
    unique, counts = unique[keep], counts[keep]
    limit = max_instances - 1
    if unique.numel() <= limit:
        return segment_ids
    # Sort by (-count, id): a stable sort on id first, then a stable sort on -count.
    order = torch.argsort(unique, stable=True)
    order = order[torch.argsort(-counts[order], stable=True)]
    kept = unique[order[:limit]]
    where = f" in {context}" if context else ""
    warnings.warn(
        f"Pix2Seq-D: {unique.numel()} segments{where} exceed the limit of {limit} "
        f"(max_instances_per_image={max_instances}, id 0 is void); keeping the {limit} "
        f"largest and marking {unique.numel() - limit} as void",
        stacklevel=2,
    )
    return torch.where(torch.isin(segment_ids, kept), segment_ids, torch.zeros_like(segment_ids))
