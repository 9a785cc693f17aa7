"""Point sampling on mask logits, after PointRend (Kirillov et al., 2020, Sec. 3.1).

Mask2Former computes its matching cost and its mask losses on K sampled points rather than on
whole masks (Mask2Former Sec. 3.3, "Improving training efficiency"). Coordinates everywhere are
normalised to [0, 1] x [0, 1], (x, y) order, so a prediction and a target of different resolutions
are compared at the same places without resizing either.

detectron2's PointRend project provides both `point_sample` and
`get_uncertain_point_coords_with_randomness`; they are reused when importable (it is only
importable when detectron2 is installed from its source tree), and the functions below are the
stand-ins otherwise.

Shape shorthand: N masks, C channels, P points, H x W map size.
"""

import torch
import torch.nn.functional as F

__all__ = [
    "calculate_uncertainty",
    "get_uncertain_point_coords_with_randomness",
    "point_sample",
]


def _point_sample(input: torch.Tensor, point_coords: torch.Tensor, **kwargs) -> torch.Tensor:
    """Bilinearly sample `input` at [0, 1]-normalised points (`F.grid_sample` semantics).

    Args:
        input: (N, C, H, W) maps.
        point_coords: (N, P, 2) or (N, Hgrid, Wgrid, 2) (x, y) coordinates in [0, 1].
        kwargs: passed to `F.grid_sample` (Mask2Former passes `align_corners=False`).

    Returns:
        (N, C, P) or (N, C, Hgrid, Wgrid) sampled values.
    """
    points_are_flat = point_coords.dim() == 3
    if points_are_flat:
        point_coords = point_coords.unsqueeze(2)  # (N, P, 1, 2)
    # grid_sample addresses the map with [-1, 1] coordinates.
    output = F.grid_sample(input, 2.0 * point_coords - 1.0, **kwargs)
    if points_are_flat:
        output = output.squeeze(3)  # (N, C, P, 1) -> (N, C, P)
    return output


def _get_uncertain_point_coords_with_randomness(
    coarse_logits: torch.Tensor,
    uncertainty_func,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
) -> torch.Tensor:
    """Pick `num_points` points per mask, biased towards the uncertain ones (PointRend Sec. 3.1).

    int(num_points * oversample_ratio) candidates are drawn uniformly; the
    int(importance_sample_ratio * num_points) most uncertain candidates are kept, and the rest
    of the points are drawn uniformly afresh (the paper's "(1 - beta) kN random points"), so
    training still sees the whole mask.

    Args:
        coarse_logits: (N, C, H, W) logits; C == 1 for class-agnostic masks.
        uncertainty_func: maps (N, C, P) point logits to (N, 1, P) uncertainties, higher meaning
            more uncertain.
        num_points: P, the number of points returned per mask.
        oversample_ratio: k >= 1, candidates drawn per returned point.
        importance_sample_ratio: beta in [0, 1], the share of points chosen by uncertainty.

    Returns:
        (N, P, 2) point coordinates in [0, 1]; the uncertainty-chosen points come first.
    """
    assert oversample_ratio >= 1, oversample_ratio
    assert 0 <= importance_sample_ratio <= 1, importance_sample_ratio
    num_masks = coarse_logits.shape[0]
    device = coarse_logits.device
    num_candidates = int(num_points * oversample_ratio)
    candidate_coords = torch.rand(num_masks, num_candidates, 2, device=device)
    # Uncertainty is measured on the interpolated logit at each point, not interpolated from a
    # per-pixel uncertainty map: between logits -1 and +1 the point is maximally uncertain.
    candidate_logits = _point_sample(coarse_logits, candidate_coords, align_corners=False)
    uncertainties = uncertainty_func(candidate_logits)  # (N, 1, num_candidates)

    num_uncertain_points = int(importance_sample_ratio * num_points)
    num_random_points = num_points - num_uncertain_points
    top_idx = torch.topk(uncertainties[:, 0, :], k=num_uncertain_points, dim=1).indices
    uncertain_coords = torch.gather(
        candidate_coords, 1, top_idx[:, :, None].expand(-1, -1, 2)
    )  # (N, num_uncertain_points, 2)
    if num_random_points == 0:
        return uncertain_coords
    random_coords = torch.rand(num_masks, num_random_points, 2, device=device)
    return torch.cat([uncertain_coords, random_coords], dim=1)  # (N, P, 2)


try:
    from detectron2.projects.point_rend.point_features import (
        get_uncertain_point_coords_with_randomness,
        point_sample,
    )
except ImportError:
    point_sample = _point_sample
    get_uncertain_point_coords_with_randomness = _get_uncertain_point_coords_with_randomness


def calculate_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of class-agnostic mask logits: -|logit|, highest at the decision boundary.

    Args:
        logits: (N, 1, ...) logits.

    Returns:
        (N, 1, ...) uncertainties.
    """
    assert logits.shape[1] == 1, f"expected class-agnostic (N, 1, ...) logits, got {logits.shape}"
    return -logits.abs()
