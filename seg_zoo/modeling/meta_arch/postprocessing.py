"""Turn one image's query predictions into semantic, panoptic and instance outputs.

Mask2Former's inference rules (Sec. 3.4 of the MaskFormer paper, kept by Mask2Former), written
with whole-tensor operations: there is no Python loop over queries, and each function waits on
the device only a fixed handful of times per image (to size the kept set and to build the
``segments_info`` list), however many queries there are.
"""

from collections.abc import Collection

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances
from torch import Tensor

__all__ = [
    "boxes_from_masks",
    "instance_inference",
    "panoptic_inference",
    "semantic_inference",
]


def _is_thing_table(thing_class_ids: Collection[int], num_classes: int, device) -> Tensor:
    """(num_classes + 1,) bool lookup: is contiguous class id c a thing class?"""
    table = torch.zeros(num_classes + 1, dtype=torch.bool)
    ids = [int(c) for c in thing_class_ids if 0 <= int(c) <= num_classes]
    table[ids] = True
    return table.to(device, non_blocking=True)


def semantic_inference(mask_cls: Tensor, mask_pred: Tensor) -> Tensor:
    """Per-class scores: sum over queries of P(class | query) * sigmoid(mask of query).

    Args:
        mask_cls: (Q, K + 1) class logits, the last class being "no object".
        mask_pred: (Q, H, W) mask logits.

    Returns:
        (K, H, W) scores; their argmax over K is the semantic prediction.
    """
    class_probs = F.softmax(mask_cls, dim=-1)[..., :-1]  # (Q, K)
    return torch.einsum("qc,qhw->chw", class_probs, mask_pred.sigmoid())


def panoptic_inference(
    mask_cls: Tensor,
    mask_pred: Tensor,
    object_mask_threshold: float,
    overlap_threshold: float,
    thing_class_ids: Collection[int],
) -> tuple[Tensor, list[dict]]:
    """Non-overlapping segments from the confident queries.

    A query is kept when its best class is not "no object" and scores above
    ``object_mask_threshold``. Each pixel goes to the kept query with the largest
    score * sigmoid(mask), and stays void (0) where that query's mask is below 0.5. A query
    becomes a segment when it wins some pixels, its mask (>= 0.5) is not empty, it keeps some
    pixels after the 0.5 test, and (pixels it wins) / (its mask's area) >= ``overlap_threshold``.
    Segments of the same stuff class share one id (the first one's); ids count from 1 in query
    order, as the official implementation numbers them.

    Args:
        mask_cls: (Q, K + 1) class logits.
        mask_pred: (Q, H, W) mask logits.
        object_mask_threshold: minimum class probability of a kept query.
        overlap_threshold: minimum ratio of won pixels to mask pixels.
        thing_class_ids: contiguous ids of the thing classes; the others are stuff.

    Returns:
        (H, W) int32 segment ids, and one dict {"id", "isthing", "category_id"} per segment.
    """
    num_classes = mask_cls.shape[-1] - 1
    device = mask_pred.device
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)  # (Q,), (Q,)
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    cur_scores = scores[keep]  # (N,)
    cur_classes = labels[keep]  # (N,)
    cur_masks = mask_pred[keep].sigmoid()  # (N, H, W)

    height, width = mask_pred.shape[-2:]
    panoptic_seg = torch.zeros((height, width), dtype=torch.int32, device=device)
    num_kept = cur_masks.shape[0]
    if num_kept == 0:
        return panoptic_seg, []

    winner = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)  # (H, W) in [0, N)
    in_mask = cur_masks >= 0.5  # (N, H, W)
    # The winner's own mask must cover the pixel for the pixel to be assigned.
    assigned = in_mask.gather(0, winner[None])[0]  # (H, W)
    won_area = torch.bincount(winner.flatten(), minlength=num_kept)  # (N,)
    assigned_area = torch.bincount(winner[assigned], minlength=num_kept)  # (N,)
    mask_area = in_mask.flatten(1).sum(1)  # (N,)
    # float64, like the official Python division of two ints.
    overlap = won_area.double() / mask_area.double().clamp(min=1)
    is_segment = (
        (won_area > 0) & (mask_area > 0) & (assigned_area > 0) & (overlap >= overlap_threshold)
    )

    is_thing = _is_thing_table(thing_class_ids, num_classes, device)[cur_classes]  # (N,)
    query_index = torch.arange(num_kept, device=device)
    # First segment of each stuff class: the one whose id the class's later segments reuse.
    is_stuff_segment = is_segment & ~is_thing
    first_of_class = torch.full((num_classes + 1,), num_kept, dtype=torch.int64, device=device)
    first_of_class.scatter_reduce_(
        0,
        cur_classes[is_stuff_segment],
        query_index[is_stuff_segment],
        reduce="amin",
    )
    owner = torch.where(is_thing, query_index, first_of_class[cur_classes])  # (N,)
    opens_segment = is_segment & (owner == query_index)
    new_id = torch.cumsum(opens_segment, 0, dtype=torch.int32)  # id if this query opens one
    segment_id = torch.where(is_segment, new_id[owner.clamp(max=num_kept - 1)], 0)  # (N,)
    panoptic_seg = torch.where(assigned, segment_id[winner], panoptic_seg)

    opened = opens_segment.nonzero()[:, 0]
    segments_info = [
        {"id": int(i), "isthing": bool(t), "category_id": int(c)}
        for i, t, c in zip(
            new_id[opened].tolist(), is_thing[opened].tolist(), cur_classes[opened].tolist()
        )
    ]
    return panoptic_seg, segments_info


def boxes_from_masks(masks: Tensor) -> Tensor:
    """(N, H, W) bool masks -> (N, 4) float XYXY boxes, (0, 0, 0, 0) for empty masks.

    Same boxes as detectron2's ``BitMasks.get_bounding_boxes`` (x2, y2 one past the last
    pixel), without its loop over masks.
    """
    num, height, width = masks.shape
    if masks.numel() == 0:
        return torch.zeros(num, 4, dtype=torch.float32, device=masks.device)
    cols = masks.any(dim=1)  # (N, W)
    rows = masks.any(dim=2)  # (N, H)
    xs = torch.arange(width, device=masks.device)
    ys = torch.arange(height, device=masks.device)
    x1 = torch.where(cols, xs, width).amin(1)
    x2 = torch.where(cols, xs, -1).amax(1) + 1
    y1 = torch.where(rows, ys, height).amin(1)
    y2 = torch.where(rows, ys, -1).amax(1) + 1
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()  # (N, 4)
    return torch.where(cols.any(1, keepdim=True), boxes, 0.0)


def instance_inference(
    mask_cls: Tensor,
    mask_pred: Tensor,
    topk_per_image: int,
    thing_class_ids: Collection[int] | None = None,
) -> Instances:
    """The ``topk_per_image`` best (query, class) pairs as instances.

    Every query may give several instances, one per class. An instance's score is its class
    probability times the mean sigmoid of its mask over the mask's pixels (logit > 0).

    Args:
        mask_cls: (Q, K + 1) class logits.
        mask_pred: (Q, H, W) mask logits, already at the output size.
        topk_per_image: instances kept before the thing filter (``TEST.DETECTIONS_PER_IMAGE``);
            at most Q * K.
        thing_class_ids: when given (panoptic models), only these classes are kept.

    Returns:
        Instances of size (H, W) sorted by class probability, with ``pred_masks`` (float 0/1),
        ``pred_boxes`` (from the masks), ``scores`` and ``pred_classes``.
    """
    num_classes = mask_cls.shape[-1] - 1
    class_probs = F.softmax(mask_cls, dim=-1)[:, :-1]  # (Q, K)
    k = min(topk_per_image, class_probs.numel())
    scores, flat_index = class_probs.flatten().topk(k, sorted=True)  # (k,)
    labels = flat_index % num_classes
    masks = mask_pred[flat_index // num_classes]  # (k, H, W)

    if thing_class_ids is not None:
        keep = _is_thing_table(thing_class_ids, num_classes, mask_cls.device)[labels]
        scores, labels, masks = scores[keep], labels[keep], masks[keep]

    result = Instances(tuple(mask_pred.shape[-2:]))
    pred_masks = (masks > 0).float()  # (k, H, W)
    mask_scores = (masks.sigmoid() * pred_masks).flatten(1).sum(1) / (
        pred_masks.flatten(1).sum(1) + 1e-6
    )
    result.pred_masks = pred_masks
    result.pred_boxes = Boxes(boxes_from_masks(masks > 0))
    result.scores = scores * mask_scores
    result.pred_classes = labels
    return result
