"""Tests of PositionEmbeddingSine against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from seg_zoo.modeling.transformer_decoder import PositionEmbeddingSine


def _hand_encoding(y: float, x: float, num_pos_feats: int, temperature: float) -> list[float]:
    """Channel values at one pixel: [sin(y/t0), cos(y/t0), sin(y/t1), ...] then the same for x."""
    out = []
    for pos in (y, x):
        for i in range(num_pos_feats):
            wavelength = temperature ** (2 * (i // 2) / num_pos_feats)
            out.append(math.sin(pos / wavelength) if i % 2 == 0 else math.cos(pos / wavelength))
    return out


@pytest.mark.parametrize("normalize", [False, True])
def test_matches_hand_computed_values_on_2x3(normalize):
    num_pos_feats, temperature = 4, 10.0
    layer = PositionEmbeddingSine(num_pos_feats, temperature, normalize=normalize)
    pos = layer(torch.zeros(2, 7, 2, 3))
    assert pos.shape == (2, 2 * num_pos_feats, 2, 3)
    assert pos.dtype == torch.float32
    for row in range(2):
        for col in range(3):
            # 1-based positions; normalised they are pos / count * 2pi (count: 2 rows, 3 cols).
            y, x = row + 1.0, col + 1.0
            if normalize:
                y, x = y / (2 + 1e-6) * 2 * math.pi, x / (3 + 1e-6) * 2 * math.pi
            expected = torch.tensor(_hand_encoding(y, x, num_pos_feats, temperature))
            torch.testing.assert_close(pos[1, :, row, col], expected, atol=1e-6, rtol=1e-5)


def test_one_value_spelled_out():
    # Pixel (row 1, col 2), default temperature, 2 features per axis: both share wavelength 1.
    pos = PositionEmbeddingSine(num_pos_feats=2)(torch.zeros(1, 1, 2, 3))
    expected = [math.sin(2.0), math.cos(2.0), math.sin(3.0), math.cos(3.0)]
    torch.testing.assert_close(pos[0, :, 1, 2], torch.tensor(expected))


def test_mask_counts_only_valid_pixels():
    layer = PositionEmbeddingSine(num_pos_feats=4, normalize=True)
    x = torch.zeros(1, 1, 2, 3)
    mask = torch.zeros(1, 2, 3, dtype=torch.bool)
    mask[:, :, 2] = True  # last column is padding
    padded = layer(x, mask)
    valid = layer(torch.zeros(1, 1, 2, 2))
    torch.testing.assert_close(padded[..., :2], valid)
    # No mask means every pixel is valid.
    torch.testing.assert_close(layer(x), layer(x, torch.zeros(1, 2, 3, dtype=torch.bool)))


def test_scale_requires_normalize():
    with pytest.raises(ValueError, match="normalize"):
        PositionEmbeddingSine(scale=1.0)
    layer = PositionEmbeddingSine(num_pos_feats=2, normalize=True, scale=1.0)
    pos = layer(torch.zeros(1, 1, 1, 2))
    # x of the last column is 2 / (2 + eps) * 1.0 ~ 1.
    torch.testing.assert_close(pos[0, 2, 0, 1], torch.tensor(math.sin(2 / (2 + 1e-6))))
