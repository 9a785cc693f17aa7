"""Tests for the DAVIS J&F evaluator and the track-consistency figure.

References are written here: J on masks worked out by hand, F by a slow loop over boundary
pixels and the pixels within the tolerance disk, Mean/Recall/Decay on a sequence whose per-frame
J is known by construction.
"""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from seg_zoo.evaluation.davis_evaluation import (
    DAVISEvaluator,
    boundary_f_measure,
    region_jaccard,
    track_consistency,
)


# ----------------------------------------------------------------------------- J
def test_region_jaccard_hand_made():
    gt = np.zeros((10, 10), bool)
    gt[2:6, 2:6] = True  # 16 px
    pred = np.zeros((10, 10), bool)
    pred[3:7, 2:6] = True  # 16 px, 12 shared
    assert region_jaccard(gt, pred) == pytest.approx(12 / 20)
    # Void over the predicted-only row 6 removes 4 px from the union.
    void = np.zeros((10, 10), bool)
    void[6, :] = True
    assert region_jaccard(gt, pred, void) == pytest.approx(12 / 16)
    empty = np.zeros((10, 10), bool)
    assert region_jaccard(empty, empty) == 1.0
    assert region_jaccard(gt, empty) == 0.0


# ----------------------------------------------------------------------------- F
def _slow_boundary(mask):
    """Boundary pixels by DAVIS's definition, pixel by pixel."""
    h, w = mask.shape

    def at(y, x):
        return bool(mask[y, x]) if y < h and x < w else False

    out = set()
    for y in range(h):
        for x in range(w):
            if y == h - 1 and x == w - 1:
                continue  # the bottom-right pixel is never a boundary pixel
            me = at(y, x)
            if y == h - 1:
                neighbours = [at(y, x + 1)]
            elif x == w - 1:
                neighbours = [at(y + 1, x)]
            else:
                neighbours = [at(y, x + 1), at(y + 1, x), at(y + 1, x + 1)]
            if any(n != me for n in neighbours):
                out.add((y, x))
    return out


def _slow_f(gt, pred, tol):
    gb, pb = _slow_boundary(gt), _slow_boundary(pred)

    def matched(points, others):
        return sum(
            any((y - v) ** 2 + (x - u) ** 2 <= tol * tol for v, u in others) for y, x in points
        )

    if not pb and not gb:
        return 1.0
    if not pb or not gb:
        return 0.0
    p = matched(pb, gb) / len(pb)
    r = matched(gb, pb) / len(gb)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _blob(h, w, rng, n=3):
    yy, xx = np.mgrid[0:h, 0:w]
    m = np.zeros((h, w), bool)
    for _ in range(n):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 20)
        m |= (yy - cy) ** 2 + ((xx - cx) * rng.uniform(0.6, 1.4)) ** 2 <= r * r
    return m


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boundary_f_matches_slow_reference(seed):
    rng = np.random.default_rng(seed)
    h, w = 60, 90  # diagonal 108.2 -> tolerance ceil(0.87) = 1 px
    gt, pred = _blob(h, w, rng), _blob(h, w, rng)
    pred |= gt & (rng.random((h, w)) < 0.5)  # share part of the boundary
    tol = math.ceil(0.008 * math.hypot(h, w))
    assert tol == 1
    assert boundary_f_measure(gt, pred) == pytest.approx(_slow_f(gt, pred, tol))
    # An explicit pixel tolerance (bound_th >= 1) of 3 px.
    assert boundary_f_measure(gt, pred, bound_th=3) == pytest.approx(_slow_f(gt, pred, 3))


def test_boundary_f_tolerance_from_diagonal():
    # 200 x 300: diagonal 360.6 -> ceil(2.88) = 3 px. A mask shifted by 3 px matches fully,
    # one shifted by 5 px only where the shift runs along the boundary.
    h, w = 200, 300
    gt = np.zeros((h, w), bool)
    gt[50:150, 100:200] = True
    near = np.roll(gt, 3, axis=1)
    far = np.roll(gt, 5, axis=1)
    assert boundary_f_measure(gt, near) == pytest.approx(1.0)
    assert boundary_f_measure(gt, far) == pytest.approx(_slow_f(gt, far, 3))
    assert boundary_f_measure(gt, far) < 0.9


def test_boundary_f_empty_conventions():
    gt = np.zeros((20, 20), bool)
    gt[5:10, 5:10] = True
    empty = np.zeros_like(gt)
    assert boundary_f_measure(gt, empty) == 0.0
    assert boundary_f_measure(empty, gt) == 0.0
    assert boundary_f_measure(empty, empty) == 1.0


# ----------------------------------------------------------------------------- evaluator
def _write_video(tmp_path, name, gt):
    """Annotation PNGs (palette) of a (T, H, W) id video; returns the evaluator input dict."""
    folder = tmp_path / name
    folder.mkdir()
    files = []
    for t, frame in enumerate(gt):
        im = Image.fromarray(frame.astype(np.uint8))
        im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
        path = str(folder / f"{t:05d}.png")
        im.save(path)
        files.append(path)
    return {"video_id": name, "annotation_file_names": files}


def _moving_squares(t=6, h=40, w=50):
    gt = np.zeros((t, h, w), np.uint8)
    for f in range(t):
        gt[f, 5:15, 3 + 2 * f : 13 + 2 * f] = 1
        gt[f, 22:34, 30 - f : 42 - f] = 2
    return gt


def _evaluate(inputs, preds, **kwargs):
    ev = DAVISEvaluator("test", **kwargs)
    ev.reset()
    ev.process(inputs, [{"video_ids": torch.as_tensor(p)} for p in preds])
    return ev.evaluate()["davis"]


def test_perfect_and_empty_predictions(tmp_path):
    gt = _moving_squares()
    inputs = [_write_video(tmp_path, "a", gt)]
    res = _evaluate(inputs, [gt.astype(np.int64)])
    for key in ("J&F-Mean", "J-Mean", "F-Mean", "J-Recall", "F-Recall"):
        assert res[key] == pytest.approx(100.0), key
    assert res["J-Decay"] == pytest.approx(0.0)
    assert res["num_objects"] == 2
    assert res["track_consistency"] == pytest.approx(100.0)
    assert res["track_consistency_chance"] == pytest.approx(50.0)  # 2 predicted ids

    res = _evaluate(inputs, [np.zeros_like(gt, dtype=np.int64)])
    for key in ("J&F-Mean", "J-Mean", "F-Mean", "J-Recall", "F-Recall"):
        assert res[key] == pytest.approx(0.0), key
    assert res["track_consistency"] == pytest.approx(0.0)


def test_known_mean_recall_decay_and_skipped_frames(tmp_path):
    # 10 frames -> frames 1..8 scored. The object is a 10x10 square; in scored frame i the
    # prediction covers its first m_i columns, so J_i = m_i / 10.
    t, m = 10, [10, 9, 8, 7, 6, 5, 4, 3]
    gt = np.zeros((t, 20, 20), np.uint8)
    gt[:, 5:15, 5:15] = 1
    pred = np.zeros((t, 20, 20), np.int64)
    for i, cols in enumerate(m):
        pred[i + 1, 5:15, 5 : 5 + cols] = 1
    # Frames 0 and 9 are wrong on purpose: DAVIS skips them, so nothing below may change.
    pred[0] = 0
    pred[9, 0:3, 0:3] = 1
    res = _evaluate([_write_video(tmp_path, "d", gt)], [pred])
    j = np.array(m) / 10
    assert res["J-Mean"] == pytest.approx(100 * j.mean())  # 65
    assert res["J-Recall"] == pytest.approx(100 * 5 / 8)  # values > 0.5: 1 .. 0.6
    # DAVIS's bins for 8 values: edges round(linspace(1, 8, 5)) - 1 = 0, 2, 4, 5, 7 (4.5 rounds
    # up), so the first bin is values 0..2 and the last 5..7.
    assert res["J-Decay"] == pytest.approx(100 * (j[0:3].mean() - j[5:8].mean()))  # 50


def test_void_pixels_only_count_with_use_void(tmp_path):
    gt = _moving_squares()
    pred = gt.astype(np.int64).copy()
    gt_void = gt.copy()
    # A void band next to object 1 that the prediction claims as object 1.
    gt_void[:, 15:17, 3:20] = 255
    pred[:, 15:17, 3:20] = 1
    inputs = [_write_video(tmp_path, "v", gt_void)]
    with_void = _evaluate(inputs, [pred], use_void=True)
    without = _evaluate(inputs, [pred])  # official semi-supervised: void is background
    assert with_void["J-Mean"] == pytest.approx(100.0)
    assert without["J-Mean"] < 95.0


def test_track_consistency_shuffled_ids():
    gt = np.zeros((5, 30, 40), np.uint8)
    for k in range(4):
        gt[:, 2 + 7 * k : 7 + 7 * k, 5:30] = k + 1
    assert track_consistency(gt, gt.astype(np.int64))[:2] == (16, 16)  # 4 objects x 4 pairs
    # Ids rotate every frame: every object changes id between any two frames.
    rotated = np.stack(
        [np.where(f > 0, (f.astype(np.int64) - 1 + t) % 4 + 1, 0) for t, f in enumerate(gt)]
    )
    consistent, pairs, chance = track_consistency(gt, rotated)
    assert (consistent, pairs) == (0, 16)
    assert chance == pytest.approx(16 / 4)
    # Hand case: object 1 hidden in frame 2 -> only pairs (0,1) and (3,4) count for it.
    gt2 = gt.copy()
    gt2[2][gt2[2] == 1] = 0
    assert track_consistency(gt2, gt2.astype(np.int64))[:2] == (14, 14)


def test_bad_outputs_are_named(tmp_path):
    gt = _moving_squares()
    inputs = [_write_video(tmp_path, "bad", gt)]
    ev = DAVISEvaluator("test")
    with pytest.raises(ValueError, match="bad.*shape"):
        ev.process(inputs, [{"video_ids": torch.zeros(6, 20, 25, dtype=torch.int64)}])
    with pytest.raises(KeyError, match="video_ids"):
        ev.process(inputs, [{"sem_seg": torch.zeros(1)}])
    with pytest.raises(TypeError, match="integer"):
        ev.process(inputs, [{"video_ids": torch.zeros(6, 40, 50)}])
    short = [_write_video(tmp_path, "short", gt[:2])]
    with pytest.raises(ValueError, match="at least 3"):
        ev.process(short, [{"video_ids": torch.as_tensor(gt[:2]).long()}])


# ----------------------------------------------------------------------------- unsupervised
# References below: J by pixel counts written here, F by the slow boundary loop above, the
# assignment by trying every injective object -> proposal map, and hand-worked means.
def test_permuted_ids_unsupervised_vs_semi_supervised(tmp_path):
    gt = _moving_squares()
    # Object 1 predicted as id 7, object 2 as id 3 (ids 1, 2, 4, 5, 6 are empty proposals).
    pred = np.select([gt == 1, gt == 2], [7, 3], 0).astype(np.int64)
    inputs = [_write_video(tmp_path, "perm", gt)]
    unsup = _evaluate(inputs, [pred], task="unsupervised")
    for key in ("J&F-Mean", "J-Mean", "F-Mean", "J-Recall", "F-Recall"):
        assert unsup[key] == pytest.approx(100.0), key
    assert unsup["num_objects"] == 2
    # Semi-supervised: prediction == 1 and == 2 are empty while both objects are visible in
    # every scored frame, so J = F = 0 everywhere.
    semi = _evaluate(inputs, [pred], task="semi-supervised")
    for key in ("J&F-Mean", "J-Mean", "F-Mean"):
        assert semi[key] == pytest.approx(0.0), key
    # Track consistency does not depend on the matching: ids are stable, so 100 either way.
    assert unsup["track_consistency"] == semi["track_consistency"] == pytest.approx(100.0)


def test_fewer_proposals_than_objects_score_zero_where_visible(tmp_path):
    # Three objects, one proposal (object 2, exactly, as id 1). Objects 1 and 3 are left with
    # the empty padding proposals: J = F = 0 where they are visible, 1 where they are absent.
    t, h, w = 6, 30, 40
    gt = np.zeros((t, h, w), np.uint8)
    gt[:, 2:8, 2:10] = 1
    gt[:, 12:20, 5:15] = 2
    gt[:4, 22:28, 25:35] = 3  # object 3 leaves the scene after frame 3
    pred = np.where(gt == 2, 1, 0).astype(np.int64)
    res = _evaluate([_write_video(tmp_path, "few", gt)], [pred], task="unsupervised")
    # Per object mean J (and F): object 1 = 0, object 2 = 1, object 3 = 2/6 (frames 4 and 5).
    expected = (0 + 1 + 2 / 6) / 3
    assert res["J-Mean"] == pytest.approx(100 * expected)
    assert res["F-Mean"] == pytest.approx(100 * expected)
    assert res["J-Recall"] == pytest.approx(100 * (0 + 1 + 2 / 6) / 3)
    assert res["num_objects"] == 3


def test_spurious_proposal_does_not_change_the_score(tmp_path):
    gt = _moving_squares()
    # An imperfect prediction (shifted one pixel down), so the score is not trivially 100.
    pred = np.roll(np.select([gt == 1, gt == 2], [2, 1], 0), 1, axis=1).astype(np.int64)
    noisy = pred.copy()
    noisy[:, 36:40, 0:4] = 5  # a blob in an empty corner, away from every object
    assert not (gt[:, 36:40, 0:4] > 0).any()
    inputs = [_write_video(tmp_path, "spur", gt)]
    clean = _evaluate(inputs, [pred], task="unsupervised")
    extra = _evaluate(inputs, [noisy], task="unsupervised")
    assert 50.0 < clean["J&F-Mean"] < 100.0
    for key in ("J&F-Mean", "J-Mean", "F-Mean", "J-Recall", "F-Recall", "J-Decay"):
        assert extra[key] == pytest.approx(clean[key]), key


def _rect_video(rng, t, h, w, n, max_id=None):
    """(T, H, W) ids: n jittering rectangles per frame, ids 1..n (or drawn up to max_id)."""
    ids = np.arange(1, n + 1) if max_id is None else rng.choice(np.arange(1, max_id + 1), n, False)
    out = np.zeros((t, h, w), np.int64)
    boxes = [(rng.integers(0, h - 8), rng.integers(0, w - 8)) for _ in range(n)]
    for f in range(t):
        for k, (y, x) in zip(ids, boxes, strict=True):
            dy, dx = rng.integers(-1, 2, size=2)
            y0, x0 = int(np.clip(y + dy, 0, h - 8)), int(np.clip(x + dx, 0, w - 8))
            out[f, y0 : y0 + int(rng.integers(4, 9)), x0 : x0 + int(rng.integers(4, 9))] = k
    return out, ids


@pytest.mark.parametrize("seed", [0, 1])
def test_unsupervised_matches_brute_force_assignment(tmp_path, seed):
    import itertools

    rng = np.random.default_rng(seed)
    t, h, w = 4, 24, 30  # diagonal 38.4 -> tolerance ceil(0.31) = 1 px
    gt, _ = _rect_video(rng, t, h, w, 3)
    gt = gt.astype(np.uint8)
    gt[:, 0, :] = 255  # a void row
    pred, ids = _rect_video(rng, t, h, w, 4, max_id=7)  # gaps: empty proposals
    num_proposals = int(pred.max())
    res = _evaluate([_write_video(tmp_path, f"bf{seed}", gt)], [pred], task="unsupervised")

    keep = gt != 255  # unsupervised excludes void by default, as the official path
    objects = [int(k) for k in range(1, int(np.where(keep, gt, 0)[0].max()) + 1)]

    def jf(k, p):
        js, fs = [], []
        for f in range(t):
            g, q = (gt[f] == k) & keep[f], (pred[f] == p) & keep[f]
            union = np.count_nonzero(g | q)
            js.append(1.0 if union == 0 else np.count_nonzero(g & q) / union)
            fs.append(_slow_f(g, q, 1))
        return np.mean(js), np.mean(fs)

    table = {(k, p): jf(k, p) for k in objects for p in range(1, num_proposals + 1)}
    best = max(
        itertools.permutations(range(1, num_proposals + 1), len(objects)),
        key=lambda a: sum(sum(table[k, p]) / 2 for k, p in zip(objects, a, strict=True)),
    )
    j_mean = np.mean([table[k, p][0] for k, p in zip(objects, best, strict=True)])
    f_mean = np.mean([table[k, p][1] for k, p in zip(objects, best, strict=True)])
    assert res["J-Mean"] == pytest.approx(100 * j_mean)
    assert res["F-Mean"] == pytest.approx(100 * f_mean)
    assert res["num_objects"] == len(objects)


def test_unsupervised_scores_every_frame_and_excludes_void(tmp_path):
    t = 4
    gt = np.zeros((t, 20, 20), np.uint8)
    gt[:, 5:15, 5:15] = 1
    gt[:, 15:17, 5:15] = 255  # void band below the object
    pred = np.where(gt == 1, 4, 0).astype(np.int64)
    pred[:, 15:17, 5:15] = 4  # claimed void pixels: ignored by default in this task
    pred[0] = 0  # frame 0 missed: the unsupervised task scores it (semi-supervised does not)
    inputs = [_write_video(tmp_path, "frames", gt)]
    res = _evaluate(inputs, [pred], task="unsupervised")
    assert res["J-Mean"] == pytest.approx(100 * 3 / 4)  # J = 0, 1, 1, 1
    assert res["F-Mean"] == pytest.approx(100 * 3 / 4)
    # With void counted as background the claimed band costs J in frames 1..3: 100 / 120 px.
    counted = _evaluate(inputs, [pred], task="unsupervised", use_void=False)
    assert counted["J-Mean"] == pytest.approx(100 * 3 * (100 / 120) / 4)


def test_too_many_proposals_are_refused(tmp_path):
    gt = _moving_squares()
    inputs = [_write_video(tmp_path, "crowd", gt)]
    pred = np.select([gt == 1, gt == 2], [1, 21], 0).astype(np.int64)
    ev = DAVISEvaluator("test", task="unsupervised")
    with pytest.raises(ValueError, match=r"crowd.*up to 21 \(2 distinct.*at most 20"):
        ev.process(inputs, [{"video_ids": torch.as_tensor(pred)}])
    # 20 is the limit, not past it.
    ok = _evaluate(inputs, [np.where(pred == 21, 20, pred)], task="unsupervised")
    assert ok["J&F-Mean"] == pytest.approx(100.0)
    small = DAVISEvaluator("test", task="unsupervised", max_proposals=2)
    three = np.where(gt == 2, 3, gt).astype(np.int64)
    with pytest.raises(ValueError, match=r"crowd.*up to 3.*at most 2"):
        small.process(inputs, [{"video_ids": torch.as_tensor(three)}])
    with pytest.raises(ValueError, match=">= 0"):
        ev.process(inputs, [{"video_ids": torch.as_tensor(-pred)}])


def test_task_comes_from_metadata_and_results_are_numbers(tmp_path):
    from detectron2.data import MetadataCatalog
    from detectron2.evaluation.testing import flatten_results_dict, print_csv_format

    name = "_test_davis_task_unsup"
    MetadataCatalog.get(name).set(davis_task="unsupervised")
    bad = "_test_davis_task_bad"
    MetadataCatalog.get(bad).set(davis_task="zero-shot")
    try:
        assert DAVISEvaluator(name).task == "unsupervised"
        assert DAVISEvaluator(name, task="semi-supervised").task == "semi-supervised"
        assert DAVISEvaluator("_never_registered_davis").task == "semi-supervised"
        assert DAVISEvaluator().task == "semi-supervised"
        with pytest.raises(ValueError, match=f"davis_task.*{bad}.*zero-shot"):
            DAVISEvaluator(bad)
        with pytest.raises(ValueError, match="task=.*'sup'"):
            DAVISEvaluator(task="sup")
        gt = _moving_squares()
        ev = DAVISEvaluator(name)
        ev.process([_write_video(tmp_path, "n", gt)], [{"video_ids": torch.as_tensor(gt).long()}])
        results = ev.evaluate()
        # detectron2's EvalHook and print_csv_format need every value to be a number.
        assert all(isinstance(float(v), float) for v in flatten_results_dict(results).values())
        print_csv_format(results)
    finally:
        MetadataCatalog.remove(name)
        MetadataCatalog.remove(bad)
