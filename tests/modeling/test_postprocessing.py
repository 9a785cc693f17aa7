"""Vectorised inference post-processing against slow per-query loops and hand-built cases."""

import pytest
import torch
import torch.nn.functional as F
from detectron2.structures import BitMasks

from seg_zoo.modeling.meta_arch.postprocessing import (
    boxes_from_masks,
    instance_inference,
    panoptic_inference,
    semantic_inference,
)

BIG = 20.0  # a logit that makes a softmax probability ~1


# ---- slow references: one query at a time, as the paper's rules read ----


def reference_semantic(mask_cls, mask_pred):
    probs = F.softmax(mask_cls, dim=-1)[:, :-1]
    out = torch.zeros(probs.shape[1], *mask_pred.shape[1:])
    for q in range(mask_cls.shape[0]):
        for c in range(probs.shape[1]):
            out[c] += probs[q, c] * mask_pred[q].sigmoid()
    return out


def reference_panoptic(mask_cls, mask_pred, object_thr, overlap_thr, thing_ids):
    num_classes = mask_cls.shape[1] - 1
    probs = F.softmax(mask_cls, dim=-1)
    kept = []
    for q in range(mask_cls.shape[0]):
        score, label = probs[q].max(-1)
        if label.item() != num_classes and score.item() > object_thr:
            kept.append((score, label.item(), mask_pred[q].sigmoid()))
    seg = torch.zeros(mask_pred.shape[1:], dtype=torch.int32)
    if not kept:
        return seg, []
    prob_masks = torch.stack([s * m for s, _, m in kept])
    winner = prob_masks.argmax(0)
    info, stuff_ids, next_id = [], {}, 0
    for k, (_, label, mask) in enumerate(kept):
        won = winner == k
        won_area = int(won.sum())
        mask_area = int((mask >= 0.5).sum())
        final = won & (mask >= 0.5)
        if won_area == 0 or mask_area == 0 or int(final.sum()) == 0:
            continue
        if won_area / mask_area < overlap_thr:
            continue
        isthing = label in thing_ids
        if not isthing and label in stuff_ids:
            seg[final] = stuff_ids[label]
            continue
        next_id += 1
        if not isthing:
            stuff_ids[label] = next_id
        seg[final] = next_id
        info.append({"id": next_id, "isthing": isthing, "category_id": label})
    return seg, info


def reference_instances(mask_cls, mask_pred, topk, thing_ids=None):
    probs = F.softmax(mask_cls, dim=-1)[:, :-1]
    pairs = [
        (probs[q, c].item(), q, c) for q in range(probs.shape[0]) for c in range(probs.shape[1])
    ]
    pairs.sort(key=lambda p: -p[0])
    out = []
    for prob, q, c in pairs[:topk]:
        if thing_ids is not None and c not in thing_ids:
            continue
        fg = mask_pred[q] > 0
        sig = mask_pred[q].sigmoid()
        mask_score = (sig[fg].sum() / (fg.sum() + 1e-6)).item()
        out.append((prob * mask_score, c, fg))
    return out


# ---- helpers ----


def one_hot_logits(labels, num_classes):
    """(Q, K + 1) logits whose softmax picks `labels` with probability ~1."""
    logits = torch.zeros(len(labels), num_classes + 1)
    logits[torch.arange(len(labels)), torch.tensor(labels)] = BIG
    return logits


def box_masks(boxes, height, width):
    """(Q, H, W) logits: +BIG inside each (y0, y1, x0, x1) box, -BIG outside."""
    out = torch.full((len(boxes), height, width), -BIG)
    for q, (y0, y1, x0, x1) in enumerate(boxes):
        out[q, y0:y1, x0:x1] = BIG
    return out


# ---- semantic ----


def test_semantic_matches_reference_and_argmax():
    num_classes = 3
    # Query 0 says class 2 on the left half, query 1 class 0 on the right half.
    mask_cls = one_hot_logits([2, 0], num_classes)
    mask_pred = box_masks([(0, 4, 0, 3), (0, 4, 3, 6)], 4, 6)
    sem = semantic_inference(mask_cls, mask_pred)
    assert sem.shape == (num_classes, 4, 6)
    torch.testing.assert_close(sem, reference_semantic(mask_cls, mask_pred))
    expected = torch.tensor([2, 2, 2, 0, 0, 0]).expand(4, 6)
    assert torch.equal(sem.argmax(0), expected)

    torch.manual_seed(0)
    mask_cls, mask_pred = torch.randn(5, num_classes + 1), torch.randn(5, 7, 9)
    torch.testing.assert_close(
        semantic_inference(mask_cls, mask_pred), reference_semantic(mask_cls, mask_pred)
    )


# ---- panoptic ----

THINGS = [0, 1]  # classes 0, 1 are things; 2, 3 stuff


def assert_panoptic_equal(got, expected):
    assert got[0].dtype == torch.int32
    assert torch.equal(got[0], expected[0])
    assert got[1] == expected[1]


def test_panoptic_hand_built():
    num_classes, height, width = 4, 6, 8
    labels = [0, 2, 1, 2, 4, 3, 0]
    boxes = [
        (0, 3, 0, 4),  # thing 0
        (3, 6, 0, 4),  # stuff 2
        (0, 3, 4, 8),  # thing 1
        (3, 6, 4, 8),  # stuff 2 again: merged into query 1's segment
        (0, 6, 0, 8),  # "no object": dropped
        (0, 1, 0, 1),  # stuff 3, low score: dropped
        (0, 3, 0, 4),  # thing 0 duplicate: loses every pixel (ties go to the first)
    ]
    mask_cls = one_hot_logits(labels, num_classes)
    mask_cls[5] = 0.0  # uniform: score 1/5
    mask_pred = box_masks(boxes, height, width)
    got = panoptic_inference(mask_cls, mask_pred, 0.8, 0.8, THINGS)

    expected_seg = torch.zeros(height, width, dtype=torch.int32)
    expected_seg[0:3, 0:4] = 1
    expected_seg[3:6, :] = 2
    expected_seg[0:3, 4:8] = 3
    expected_info = [
        {"id": 1, "isthing": True, "category_id": 0},
        {"id": 2, "isthing": False, "category_id": 2},
        {"id": 3, "isthing": True, "category_id": 1},
    ]
    assert_panoptic_equal(got, (expected_seg, expected_info))
    assert_panoptic_equal(got, reference_panoptic(mask_cls, mask_pred, 0.8, 0.8, THINGS))


def test_panoptic_overlap_threshold():
    # Query 1 (higher score) covers 3 of query 0's 4 columns: query 0 keeps 1/4 of its mask.
    mask_cls = one_hot_logits([0, 1], 2)
    mask_cls[0, 0] = 5.0  # lower score than query 1
    mask_pred = box_masks([(0, 2, 0, 4), (0, 2, 1, 4)], 2, 4)
    for overlap, expected_classes in [(0.3, [1]), (0.25, [0, 1])]:
        seg, info = panoptic_inference(mask_cls, mask_pred, 0.5, overlap, [0, 1])
        assert [s["category_id"] for s in info] == expected_classes
        assert_panoptic_equal(
            (seg, info), reference_panoptic(mask_cls, mask_pred, 0.5, overlap, [0, 1])
        )


def test_panoptic_void_where_winner_mask_below_half():
    # A lone query whose mask is 0.4 at some pixels: it wins them but they stay void.
    mask_cls = one_hot_logits([0], 1)
    mask_pred = torch.full((1, 2, 3), 2.0)
    mask_pred[0, :, 0] = torch.logit(torch.tensor(0.4))
    seg, info = panoptic_inference(mask_cls, mask_pred, 0.5, 0.0, [0])
    expected = torch.tensor([[0, 1, 1], [0, 1, 1]], dtype=torch.int32)
    assert torch.equal(seg, expected)
    assert info == [{"id": 1, "isthing": True, "category_id": 0}]


def test_panoptic_empty():
    mask_cls = one_hot_logits([2, 2], 2)  # every query is "no object"
    seg, info = panoptic_inference(mask_cls, torch.randn(2, 3, 5), 0.8, 0.8, [0])
    assert seg.shape == (3, 5) and seg.dtype == torch.int32 and not seg.any()
    assert info == []
    # All masks empty: queries kept but no segment.
    seg, info = panoptic_inference(
        one_hot_logits([0, 1], 2), torch.full((2, 3, 5), -5.0), 0.5, 0.0, [0]
    )
    assert not seg.any() and info == []


@pytest.mark.parametrize("seed", range(6))
def test_panoptic_random_matches_reference(seed):
    g = torch.Generator().manual_seed(seed)
    num_queries, num_classes = 12, 5
    # Sharp, mostly confident class logits over few classes, so stuff merging happens.
    labels = torch.randint(0, num_classes + 1, (num_queries,), generator=g)
    mask_cls = torch.randn(num_queries, num_classes + 1, generator=g)
    mask_cls[torch.arange(num_queries), labels] += torch.rand(num_queries, generator=g) * 8
    mask_pred = torch.randn(num_queries, 1, 4, 5, generator=g) * 4
    mask_pred = F.interpolate(mask_pred, size=(13, 17), mode="bilinear", align_corners=False)[:, 0]
    for object_thr, overlap_thr in [(0.0, 0.0), (0.3, 0.2), (0.5, 0.5), (0.8, 0.8)]:
        got = panoptic_inference(mask_cls, mask_pred, object_thr, overlap_thr, [0, 1])
        ref = reference_panoptic(mask_cls, mask_pred, object_thr, overlap_thr, [0, 1])
        assert_panoptic_equal(got, ref)


# ---- instance ----


def test_instance_topk_order_and_scores():
    mask_cls = torch.tensor(
        [
            [5.0, 3.0, 0.0, 0.0],  # query 0: class 0 best, class 1 fourth
            [0.0, 0.0, 6.0, 0.0],  # query 1: class 2, the most confident
            [0.0, 2.0, 0.0, 0.0],
        ]
    )
    mask_pred = torch.full((3, 5, 6), -3.0)
    mask_pred[0, 1:3, 2:5] = 2.0
    mask_pred[1, 0:5, 0:2] = 1.0
    mask_pred[2, 4, 5] = 0.5
    result = instance_inference(mask_cls, mask_pred, 4)
    probs = F.softmax(mask_cls, -1)
    assert result.image_size == (5, 6)
    assert result.pred_classes.tolist() == [2, 0, 1, 1]
    # Queries 1, 0, 2, 0; mask scores are the mean sigmoid over each mask.
    sig = torch.sigmoid(torch.tensor([1.0, 2.0, 0.5, 2.0]))
    cls = torch.stack([probs[1, 2], probs[0, 0], probs[2, 1], probs[0, 1]])
    area = torch.tensor([10.0, 6.0, 1.0, 6.0])
    torch.testing.assert_close(result.scores, cls * sig * area / (area + 1e-6))
    assert result.pred_masks.dtype == torch.float32
    assert torch.equal(result.pred_masks[0], (mask_pred[1] > 0).float())
    boxes = result.pred_boxes.tensor.tolist()
    assert boxes[0] == [0.0, 0.0, 2.0, 5.0] and boxes[1] == [2.0, 1.0, 5.0, 3.0]
    assert boxes[2] == [5.0, 4.0, 6.0, 5.0]

    things = instance_inference(mask_cls, mask_pred, 4, thing_class_ids=[1])
    assert things.pred_classes.tolist() == [1, 1]
    torch.testing.assert_close(things.scores, result.scores[2:])


@pytest.mark.parametrize("seed", range(4))
def test_instance_random_matches_reference(seed):
    g = torch.Generator().manual_seed(seed)
    mask_cls = torch.randn(6, 5, generator=g) * 3
    mask_pred = torch.randn(6, 9, 11, generator=g) * 2
    for topk, things in [(10, None), (24, None), (10, [0, 2])]:
        result = instance_inference(mask_cls, mask_pred, topk, things)
        ref = reference_instances(mask_cls, mask_pred, topk, things)
        assert result.pred_classes.tolist() == [c for _, c, _ in ref]
        torch.testing.assert_close(result.scores, torch.tensor([s for s, _, _ in ref]))
        fg = torch.stack([m for _, _, m in ref])
        assert torch.equal(result.pred_masks.bool(), fg)
        torch.testing.assert_close(
            result.pred_boxes.tensor, BitMasks(fg).get_bounding_boxes().tensor
        )


def test_boxes_from_masks_matches_detectron2_and_handles_empty():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(7, 10, 13, generator=g) > 0.97
    masks[3] = False
    expected = BitMasks(masks).get_bounding_boxes().tensor
    assert torch.equal(boxes_from_masks(masks), expected)
    assert boxes_from_masks(torch.zeros(0, 4, 5, dtype=torch.bool)).shape == (0, 4)
