"""Analog bits of Pix2Seq-D label maps, checked against bits written out by hand."""

import warnings

import numpy as np
import pytest
import torch

from seg_zoo.modeling.pix2seq_d.bits import (
    analog_bits_to_label_map,
    assign_random_identities,
    bits2int,
    int2bits,
    label_map_to_analog_bits,
    softmax_logits_to_analog_bits,
    softmax_targets,
    truncate_identities,
)

B = 0.1


def _all_pairs_map():
    # Every class id 0..255 along rows and every instance id 0..255 along columns.
    ids = torch.arange(256)
    classes = ids[:, None].expand(256, 256)
    instances = ids[None, :].expand(256, 256)
    return torch.stack([classes, instances])[None]  # (1, 2, 256, 256)


def test_encode_matches_hand_written_bits_for_every_id():
    bits = label_map_to_analog_bits(_all_pairs_map(), 16, B)
    assert bits.shape == (1, 16, 256, 256) and bits.dtype == torch.float32
    values = np.arange(256)
    for i in range(8):  # bit i of v, least-significant first: floor(v / 2**i) mod 2
        expected = np.where((values // 2**i) % 2 == 1, B, -B).astype(np.float32)
        np.testing.assert_allclose(bits[0, i, :, 0].numpy(), expected)  # class bits
        np.testing.assert_allclose(bits[0, 8 + i, 0, :].numpy(), expected)  # identity bits


def test_encode_decode_exact_for_every_class_and_instance():
    label_map = _all_pairs_map()
    decoded = analog_bits_to_label_map(label_map_to_analog_bits(label_map), 256, 256)
    assert decoded.dtype == torch.int64
    assert torch.equal(decoded, label_map)


def test_decode_clamps_to_smaller_limits():
    label_map = _all_pairs_map()
    decoded = analog_bits_to_label_map(label_map_to_analog_bits(label_map), 134, 101)
    ids = torch.arange(256)
    assert torch.equal(decoded[0, 0, :, 0], torch.where(ids > 133, 133, ids))
    assert torch.equal(decoded[0, 1, 0, :], torch.where(ids > 100, 100, ids))


def test_known_pattern_and_bit_order():
    label_map = torch.tensor([5, 3]).reshape(1, 2, 1, 1)  # 5 = 101b, 3 = 011b
    bits = label_map_to_analog_bits(label_map, 8, 1.0)[0, :, 0, 0].tolist()
    assert bits == [1, -1, 1, -1, 1, 1, -1, -1]
    assert int2bits(torch.tensor([6]), 4).tolist() == [[0, 1, 1, 0]]
    assert bits2int(torch.tensor([[0.3, -0.2, 0.1, 0.0]])).tolist() == [5]


@pytest.mark.parametrize(
    "channel,value,what,limit",
    [(0, 256, "class id", 256), (1, 300, "instance id", 256), (1, -1, "instance id", 256)],
)
def test_out_of_range_error_names_channel_value_and_limit(channel, value, what, limit):
    label_map = torch.zeros(1, 2, 2, 2, dtype=torch.int64)
    label_map[0, channel, 1, 0] = value
    with pytest.raises(ValueError) as err:
        label_map_to_analog_bits(label_map, 16, B)
    text = str(err.value)
    assert what in text and str(value) in text and str(limit) in text


def test_bad_shape_and_dtype():
    with pytest.raises(ValueError, match="N, 2, H, W"):
        label_map_to_analog_bits(torch.zeros(1, 3, 2, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match="integer dtype"):
        label_map_to_analog_bits(torch.zeros(1, 2, 2, 2))


def test_softmax_targets_read_each_group_as_integer():
    label_map = torch.tensor([[[[5, 0]], [[3, 255]]]])  # (1, 2, 1, 2)
    targets = softmax_targets(label_map_to_analog_bits(label_map), groups=2)
    assert targets.tolist() == [[[[5, 0]], [[3, 255]]]]
    # One group of all 16 bits: class + 256 * identity.
    assert softmax_targets(label_map_to_analog_bits(label_map), 1).tolist() == [[[[773, 65280]]]]


def test_softmax_logits_give_the_expected_bits():
    # Group 0: p(v) = 0.1, 0.2, 0.3, 0.4 over v = 0..3, so p(bit0) = p1 + p3 = 0.6 and
    # p(bit1) = p2 + p3 = 0.7 -> analog (2p - 1) * b = 0.2 b, 0.4 b. Group 1 uniform -> 0.
    logits = torch.zeros(1, 8, 1, 1)
    logits[0, :4, 0, 0] = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    out = softmax_logits_to_analog_bits(logits, groups=2, b_scale=B)
    assert out.shape == (1, 4, 1, 1)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([0.2 * B, 0.4 * B, 0.0, 0.0]))


def test_softmax_logits_confident_match_encoding():
    label_map = torch.tensor([[[[7, 200]], [[1, 99]]]])
    logits = torch.full((1, 512, 1, 2), -50.0)
    for x, (c, i) in enumerate([(7, 1), (200, 99)]):
        logits[0, c, 0, x] = 50.0
        logits[0, 256 + i, 0, x] = 50.0
    out = softmax_logits_to_analog_bits(logits, 2, B)
    torch.testing.assert_close(out, label_map_to_analog_bits(label_map))
    with pytest.raises(ValueError, match="2\\*\\*k"):
        softmax_logits_to_analog_bits(torch.zeros(1, 6, 1, 1), 2, B)


def test_random_identities_are_a_permutation():
    seg = torch.tensor([[0, 17, 17, 4000], [9, 9, 0, 4000], [123456, 17, 9, 0]])
    seen = set()
    for seed in range(20):
        out = assign_random_identities(seg, torch.Generator().manual_seed(seed))
        assert torch.equal(out == 0, seg == 0)
        mapping = {}
        for a, b in zip(seg.flatten().tolist(), out.flatten().tolist()):
            assert mapping.setdefault(a, b) == b  # same segment -> same identity
        assert sorted(v for k, v in mapping.items() if k) == [1, 2, 3, 4]
        seen.add(tuple(mapping[k] for k in (17, 4000, 9, 123456)))
    assert len(seen) > 1  # the order really is random
    out = assign_random_identities(seg, torch.Generator().manual_seed(0), max_instances=16)
    ids = out[out > 0].unique()
    assert ids.numel() == 4 and int(ids.max()) <= 15
    with pytest.raises(ValueError, match="truncate_identities"):
        assign_random_identities(seg, max_instances=4)


def test_truncation_keeps_largest_deterministically_and_warns_once():
    # Sizes: id 5 -> 4 px, id 2 -> 2 px, id 9 -> 2 px, id 7 -> 1 px; void 3 px.
    seg = torch.tensor([[5, 5, 5, 5], [2, 2, 9, 9], [7, 0, 0, 0]])
    with pytest.warns(UserWarning) as record:
        out = truncate_identities(seg, max_instances=3, context="img.png")
    assert len(record) == 1
    text = str(record[0].message)
    assert "4 segments" in text and "limit of 2" in text and "img.png" in text
    # Keep 5 (largest) and 2 (tie with 9 broken by the smaller id).
    assert out.tolist() == [[5, 5, 5, 5], [2, 2, 0, 0], [0, 0, 0, 0]]
    with pytest.warns(UserWarning):
        assert torch.equal(truncate_identities(seg, 3), out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(truncate_identities(seg, 5), seg)
