"""Point sampling: values worked out by hand and a slow bilinear interpolation in plain Python.

Each test runs on what the module exports (detectron2's PointRend functions when importable) and
on seg_zoo's own stand-ins, which are used when they are not.
"""

import math

import pytest
import torch

from seg_zoo.modeling import point_sampling
from seg_zoo.modeling.point_sampling import calculate_uncertainty

POINT_SAMPLE = {"exported": point_sampling.point_sample, "fallback": point_sampling._point_sample}
UNCERTAIN_POINTS = {
    "exported": point_sampling.get_uncertain_point_coords_with_randomness,
    "fallback": point_sampling._get_uncertain_point_coords_with_randomness,
}


def slow_bilinear(image: list, x: float, y: float) -> float:
    """Value of an H x W map at [0, 1]-normalised (x, y): pixel centres at (i + 0.5) / size,
    zero outside the map (grid_sample with align_corners=False, padding_mode="zeros")."""
    height, width = len(image), len(image[0])
    px, py = x * width - 0.5, y * height - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    fx, fy = px - x0, py - y0
    value = 0.0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            row, col = y0 + dy, x0 + dx
            if 0 <= row < height and 0 <= col < width:
                value += wy * wx * image[row][col]
    return value


@pytest.mark.parametrize("impl", POINT_SAMPLE)
def test_point_sample_on_2x2_map_by_hand(impl):
    point_sample = POINT_SAMPLE[impl]
    feature_map = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None, None]  # (1, 1, 2, 2)
    points = torch.tensor(
        [
            [0.25, 0.25],  # centre of the top-left pixel
            [0.75, 0.25],  # centre of the top-right pixel (x is the column)
            [0.25, 0.75],  # centre of the bottom-left pixel
            [0.5, 0.5],  # middle: mean of all four
            [0.5, 0.25],  # halfway between 1 and 2
            [0.0, 0.0],  # corner: a quarter of pixel (0, 0), the rest is zero padding
            [1.0, 0.75],  # right edge of the bottom row: half of 4
        ]
    )[None]  # (1, 7, 2)
    out = point_sample(feature_map, points, align_corners=False)
    assert out.shape == (1, 1, 7)
    expected = torch.tensor([1.0, 2.0, 3.0, 2.5, 1.5, 0.25, 2.0])
    torch.testing.assert_close(out[0, 0], expected)


@pytest.mark.parametrize("impl", POINT_SAMPLE)
def test_point_sample_shapes_and_slow_reference(impl):
    point_sample = POINT_SAMPLE[impl]
    torch.manual_seed(0)
    feature_map = torch.randn(3, 2, 5, 7)  # (N, C, H, W)
    points = torch.rand(3, 11, 2)  # (N, P, 2)
    out = point_sample(feature_map, points, align_corners=False)
    assert out.shape == (3, 2, 11)
    for n in range(3):
        for c in range(2):
            image = feature_map[n, c].tolist()
            for p in range(11):
                x, y = points[n, p].tolist()
                assert out[n, c, p].item() == pytest.approx(slow_bilinear(image, x, y), abs=1e-5)

    grid_points = torch.rand(3, 4, 6, 2)  # (N, Hgrid, Wgrid, 2)
    grid_out = point_sample(feature_map, grid_points, align_corners=False)
    assert grid_out.shape == (3, 2, 4, 6)
    flat_out = point_sample(feature_map, grid_points.reshape(3, 24, 2), align_corners=False)
    torch.testing.assert_close(grid_out.reshape(3, 2, 24), flat_out)


def test_calculate_uncertainty():
    logits = torch.tensor([[[-3.0, -0.5, 0.0, 2.0]]])  # (1, 1, 4)
    torch.testing.assert_close(
        calculate_uncertainty(logits), torch.tensor([[[-3.0, -0.5, 0.0, -2.0]]])
    )
    with pytest.raises(AssertionError):
        calculate_uncertainty(torch.zeros(1, 2, 4))


@pytest.mark.parametrize("impl", UNCERTAIN_POINTS)
@pytest.mark.parametrize(
    "num_points,oversample_ratio,importance_sample_ratio",
    [(40, 3.0, 0.75), (33, 2.5, 0.5), (20, 3.0, 1.0), (20, 1.0, 0.0)],
)
def test_uncertain_points_come_from_most_uncertain_candidates(
    impl, num_points, oversample_ratio, importance_sample_ratio
):
    get_uncertain_point_coords_with_randomness = UNCERTAIN_POINTS[impl]
    num_masks = 3
    logits = torch.randn(num_masks, 1, 6, 5, generator=torch.Generator().manual_seed(1))
    num_candidates = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)

    torch.manual_seed(123)
    coords = get_uncertain_point_coords_with_randomness(
        logits, calculate_uncertainty, num_points, oversample_ratio, importance_sample_ratio
    )
    assert coords.shape == (num_masks, num_points, 2)
    assert coords.min() >= 0 and coords.max() <= 1

    # The candidates are the first draw from the random stream.
    torch.manual_seed(123)
    candidates = torch.rand(num_masks, num_candidates, 2)
    for n in range(num_masks):
        image = logits[n, 0].tolist()
        uncertainty = [-abs(slow_bilinear(image, x, y)) for x, y in candidates[n].tolist()]
        ranked = sorted(range(num_candidates), key=lambda i: uncertainty[i], reverse=True)
        most_uncertain = {tuple(candidates[n, i].tolist()) for i in ranked[:num_uncertain]}
        chosen = [tuple(p) for p in coords[n].tolist()]
        # The importance-sampled points lead, and are exactly the most uncertain candidates ...
        assert set(chosen[:num_uncertain]) == most_uncertain
        # ... and none of the remaining, randomly chosen points is one of them.
        assert sum(p in most_uncertain for p in chosen) == num_uncertain
