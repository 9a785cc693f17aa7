"""Pix2Seq-D loss weighting and losses against small cases computed by hand."""

import math

import pytest
import torch

from seg_zoo.modeling.pix2seq_d.losses import diffusion_loss, normalized_mask_weight

B = 0.1


def test_mask_weight_hand_computed():
    ids = torch.tensor([[[0, 1], [1, 1]]])
    # counts: id 0 -> 1, id 1 -> 3; raw weights 1/2, 1/4, 1/4, 1/4 (sum 1.25); times 4 / 1.25.
    w = normalized_mask_weight(ids, max_ids=4, p=1.0)
    torch.testing.assert_close(w, torch.tensor([[[1.6, 0.8], [0.8, 0.8]]]))
    # p = 0.2: raw 0.5**0.2 = 0.870551, 0.25**0.2 = 0.757858; sum 3.144124.
    w = normalized_mask_weight(ids, max_ids=4, p=0.2)
    a, b = 4 * 0.870551 / 3.144124, 4 * 0.757858 / 3.144124
    torch.testing.assert_close(w, torch.tensor([[[a, b], [b, b]]]), rtol=1e-5, atol=1e-6)
    assert torch.equal(normalized_mask_weight(ids, 4, 0.0), torch.ones(1, 2, 2))


def test_mask_weight_is_per_image():
    ids = torch.tensor([[[2, 2], [2, 2]], [[0, 3], [3, 3]]])
    w = normalized_mask_weight(ids, max_ids=4, p=1.0)
    torch.testing.assert_close(w[0], torch.ones(2, 2))
    torch.testing.assert_close(w.mean((1, 2)), torch.ones(2))
    with pytest.raises(ValueError, match="max_ids=3"):
        normalized_mask_weight(ids, max_ids=3, p=1.0)


def _bits_2x2():
    # 2 bits per pixel: pixel values (b0, b1) on a 2x2 map.
    return torch.tensor([[[[B, -B], [B, B]], [[-B, -B], [B, -B]]]])  # (1, 2, 2, 2)


def test_x_loss_weighted_mse():
    x0 = _bits_2x2()
    out = torch.zeros_like(x0)
    out[0, 0, 0, 0] = 0.3  # error 0.2 at one element of pixel (0, 0)
    weight = torch.tensor([[[2.0, 1.0], [0.5, 0.5]]])
    # Every other element has squared error B^2 = 0.01: sum over 8 elements / 8.
    expected = (2.0 * 0.04 + 2.0 * 0.01 + 2 * 1.0 * 0.01 + 4 * 0.5 * 0.01) / 8
    loss = diffusion_loss("x", x0, torch.zeros_like(x0), out, weight)
    assert float(loss) == pytest.approx(expected)


def test_eps_loss_is_unweighted():
    x0 = _bits_2x2()
    noise = torch.ones_like(x0)
    weight = torch.tensor([[[5.0, 0.0], [0.0, 0.0]]])
    assert float(diffusion_loss("eps", x0, noise, torch.zeros_like(x0), weight)) == 1.0


def _logsumexp(values):
    return math.log(sum(math.exp(v) for v in values))


def test_softmax_xent_two_groups_hand_computed():
    x0 = _bits_2x2()  # targets: group 0 = bit 0, group 1 = bit 1 (1-bit groups, 2-way softmax)
    logits = torch.tensor(
        [[[[1.0, 0.0], [2.0, -1.0]], [[0.0, 0.5], [0.0, 0.0]],  # group 0: scores of 0 and 1
          [[3.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [1.0, 2.0]]]]  # group 1
    )  # fmt: skip
    weight = torch.tensor([[[1.0, 2.0], [0.5, 0.5]]])
    targets = {0: [[1, 0], [1, 1]], 1: [[0, 0], [1, 0]]}
    total = 0.0
    for g in (0, 1):
        for y in (0, 1):
            for x in (0, 1):
                scores = [float(logits[0, 2 * g + v, y, x]) for v in (0, 1)]
                ce = _logsumexp(scores) - scores[targets[g][y][x]]
                total += float(weight[0, y, x]) * ce
    loss = diffusion_loss("x_softmax_xent", x0, torch.zeros_like(x0), logits, weight, groups=2)
    assert float(loss) == pytest.approx(total / 8, rel=1e-6)


def test_softmax_xent_one_group_hand_computed():
    x0 = _bits_2x2()  # one 4-way group: value = b0 + 2 b1 -> [[1, 0], [3, 1]]
    logits = torch.arange(16, dtype=torch.float32).reshape(1, 4, 2, 2) / 7.0
    weight = torch.ones(1, 2, 2)
    values = [[1, 0], [3, 1]]
    total = 0.0
    for y in (0, 1):
        for x in (0, 1):
            scores = [float(logits[0, v, y, x]) for v in range(4)]
            total += _logsumexp(scores) - scores[values[y][x]]
    loss = diffusion_loss("x_softmax_xent", x0, x0, logits, weight, groups=1)
    assert float(loss) == pytest.approx(total / 4, rel=1e-6)
    with pytest.raises(ValueError, match="softmax logits"):
        diffusion_loss("x_softmax_xent", x0, x0, torch.zeros(1, 6, 2, 2), weight, groups=1)


def test_sigmoid_xent_hand_computed():
    x0 = torch.tensor([[[[B]], [[-B]]]])  # one pixel, bits 1 and 0
    out = torch.tensor([[[[2.0]], [[0.5]]]])
    weight = torch.tensor([[[3.0]]])
    # -log sigmoid(z * sign): z = 2 for the 1-bit, -0.5 for the 0-bit.
    expected = 3.0 * (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(0.5))) / 2
    loss = diffusion_loss("x_sigmoid_xent", x0, x0, out, weight, b_scale=B)
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_loss_bad_arguments():
    x0 = _bits_2x2()
    with pytest.raises(ValueError, match="unknown pred_type"):
        diffusion_loss("v", x0, x0, x0, torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="weight must have shape"):
        diffusion_loss("x", x0, x0, x0, torch.ones(2, 2))
