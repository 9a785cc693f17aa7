"""J&F evaluation of video object segmentation, as DAVIS-2017 defines it for its semi-supervised
and unsupervised tasks, plus a track-consistency figure.

Facts followed from the official DAVIS-2017 evaluation (davisvideochallenge/davis2017-evaluation,
davis2017/{metrics,evaluation,utils,davis}.py):

- The objects of a sequence are ids 1..K, K the largest id in the first frame's annotation;
  each is scored as a binary mask (annotation == k) against (prediction == k).
- Semi-supervised scoring skips the first frame (it is the given input) and the last frame:
  frames 1..T-2.
- J (region similarity): |P & G| / |P | G|, 1 when both are empty; pixels marked void (255) in
  the annotation are excluded when void handling is on. The official semi-supervised path
  passes no void mask (void pixels then count as background); ``use_void`` picks.
- F (boundary F-measure): one-pixel boundary maps (``seg2bmap``), a match tolerance of
  ceil(0.008 * image diagonal) pixels, applied by dilating the other boundary map with a disk
  of that radius; precision = matched predicted boundary / predicted boundary, recall likewise
  for the annotation; F = 2PR / (P + R), with the official conventions when a map is empty.
- Unsupervised (the task Pix2Seq-D reports; ``_evaluate_unsupervised`` there): the model is
  given nothing, so its ids are only labels and are matched to the objects. Objects are again
  ids 1..K of the first annotated frame; every frame is scored; void pixels are excluded (the
  official path passes the void masks). The predicted ids are read as proposal indices
  1..P, P the largest predicted id, so ids skipped in the numbering are empty proposals; more
  than 20 proposals (``max_n_proposals``) are refused; with fewer proposals than objects, empty
  ones are added up to K. J and F are computed for every (proposal, object) pair and frame, and
  a Hungarian assignment (``linear_sum_assignment``) maximises the sum over matched pairs of
  mean-over-frames (J + F) / 2. An object left with an empty proposal scores J = F = 0 where it
  is visible (and 1 where it is absent, the DAVIS convention for two empty masks).
- Per object: Mean = mean over frames, Recall = fraction of frames with value > 0.5, Decay =
  mean of the first quarter of frames minus mean of the last quarter (4 bins, with DAVIS's
  bin edges). The reported numbers are means over all objects of all sequences; J&F-Mean is
  (J-Mean + F-Mean) / 2. Reported in percent.

Track consistency (seg_zoo's own figure, for the synthetic videos): for each ground-truth
object and each pair of consecutive frames where it is visible in both, the predicted id that
covers most of its pixels (background 0 included) is found in both frames; the pair is
consistent when the two ids are equal and not 0. ``track_consistency_chance`` is what ids
drawn uniformly from the video's set of predicted (non-zero) ids would score: 1 / |set| per pair.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import OrderedDict

import cv2
import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from scipy.optimize import linear_sum_assignment

from ..data.datasets.register_davis import DAVIS_TASKS, DAVIS_VOID_LABEL, read_davis_annotation

__all__ = [
    "BOUNDARY_THRESHOLD",
    "DAVISEvaluator",
    "boundary_map",
    "boundary_f_measure",
    "region_jaccard",
    "mean_recall_decay",
    "evaluate_video",
    "evaluate_video_unsupervised",
    "track_consistency",
    "MAX_PROPOSALS",
]

logger = logging.getLogger(__name__)

# DAVIS's bound_th: the boundary tolerance as a fraction of the image diagonal.
BOUNDARY_THRESHOLD = 0.008
# DAVIS's max_n_proposals: the most predicted ids the unsupervised task accepts per video.
MAX_PROPOSALS = 20


def region_jaccard(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    """J of one binary mask pair (H, W): intersection over union outside ``void``; 1 if empty."""
    gt, pred = gt.astype(bool), pred.astype(bool)
    valid = np.ones_like(gt) if void is None else ~void.astype(bool)
    inter = np.count_nonzero(gt & pred & valid)
    union = np.count_nonzero((gt | pred) & valid)
    return 1.0 if union == 0 else inter / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a binary (H, W) mask, as DAVIS's ``seg2bmap`` draws it.

    A pixel is on the boundary when it differs from its right, lower or lower-right
    neighbour (pixels past the right/bottom edge count as background). In the last row only
    the right neighbour is compared, in the last column only the lower one, and the
    bottom-right pixel is never a boundary pixel.
    """
    seg = mask.astype(bool)
    right = np.zeros_like(seg)
    down = np.zeros_like(seg)
    diag = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    down[:-1, :] = seg[1:, :]
    diag[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ right) | (seg ^ down) | (seg ^ diag)
    b[-1, :] = seg[-1, :] ^ right[-1, :]
    b[:, -1] = seg[:, -1] ^ down[:, -1]
    b[-1, -1] = False
    return b


def _disk(radius: int) -> np.ndarray:
    """uint8 (2r+1, 2r+1) disk: offsets (dy, dx) with dy^2 + dx^2 <= r^2."""
    r = np.arange(-radius, radius + 1)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius).astype(np.uint8)


def boundary_f_measure(
    gt: np.ndarray,
    pred: np.ndarray,
    void: np.ndarray | None = None,
    bound_th: float = BOUNDARY_THRESHOLD,
) -> float:
    """F of one binary mask pair (H, W), as DAVIS's ``f_measure``.

    ``bound_th`` < 1 is a fraction of the image diagonal (rounded up to whole pixels), >= 1 a
    pixel tolerance.
    """
    gt, pred = gt.astype(bool), pred.astype(bool)
    if void is not None:
        keep = ~void.astype(bool)
        gt, pred = gt & keep, pred & keep
    disk = _disk(_boundary_radius(gt.shape, bound_th))
    return _f_from_boundaries(_boundary_parts(pred, disk), _boundary_parts(gt, disk))


def _boundary_radius(shape, bound_th: float) -> int:
    """The match tolerance in pixels: ``bound_th`` itself if >= 1, else a diagonal fraction."""
    return int(bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*shape)))


def _boundary_parts(mask: np.ndarray, disk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(boundary map, boundary map dilated by ``disk``) of a binary mask."""
    b = boundary_map(mask)
    return b, cv2.dilate(b.astype(np.uint8), disk).astype(bool)


def _f_from_boundaries(pred_parts, gt_parts) -> float:
    """F from the :func:`_boundary_parts` of a prediction and an annotation.

    Split out so the unsupervised protocol, which pairs every proposal with every object, draws
    and dilates each boundary once instead of once per pair.
    """
    (pred_b, pred_dil), (gt_b, gt_dil) = pred_parts, gt_parts
    n_pred, n_gt = int(pred_b.sum()), int(gt_b.sum())
    # DAVIS's conventions for empty boundary maps.
    if n_pred == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_pred > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = np.count_nonzero(pred_b & gt_dil) / n_pred
        recall = np.count_nonzero(gt_b & pred_dil) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def mean_recall_decay(values) -> tuple[float, float, float]:
    """(Mean, Recall, Decay) of one object's per-frame J or F values, as DAVIS computes them."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(np.nanmean(v))
    recall = float(np.nanmean(v > 0.5))
    # Four bins whose edges are DAVIS's: round(linspace(1, n, 5)) - 1, neighbouring bins
    # sharing their edge frame. The tiny offset makes .5 round up, as DAVIS's does.
    edges = (np.round(np.linspace(1, v.size, 5) + 1e-10) - 1).astype(np.int64)
    first = v[edges[0] : edges[1] + 1]
    last = v[edges[3] : edges[4] + 1]
    decay = float(np.nanmean(first) - np.nanmean(last))
    return mean, recall, decay


def _check_id_video(name: str, what: str, array: np.ndarray) -> np.ndarray:
    if array.ndim != 3:
        raise ValueError(f"{name}: {what} must be (T, H, W), got shape {tuple(array.shape)}")
    return array


def _check_same_shape(name: str, gt: np.ndarray, pred: np.ndarray) -> None:
    if gt.shape != pred.shape:
        raise ValueError(
            f"{name}: predicted ids have shape (T, H, W)={tuple(pred.shape)} but the annotations "
            f"have {tuple(gt.shape)}; predict every frame at the original resolution"
        )


def evaluate_video(
    gt: np.ndarray,
    pred: np.ndarray,
    *,
    use_void: bool = False,
    bound_th: float = BOUNDARY_THRESHOLD,
    name: str = "video",
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per-object, per-frame J and F of one video in the semi-supervised protocol.

    Args:
        gt: (T, H, W) integer annotation ids (0 background, 255 void).
        pred: (T, H, W) integer predicted ids at the annotation's resolution.
        use_void: exclude void pixels from J and F (the official semi-supervised path does
            not; it treats them as background).
        name: used in error messages.

    Returns:
        {object id: (J values, F values)} for object ids 1..K (K = max id of frame 0), each
        over frames 1..T-2.
    """
    gt = _check_id_video(name, "ground truth", np.asarray(gt))
    pred = _check_id_video(name, "prediction", np.asarray(pred))
    _check_same_shape(name, gt, pred)
    if gt.shape[0] < 3:
        raise ValueError(
            f"{name}: {gt.shape[0]} frames; the semi-supervised protocol scores frames 1..T-2 "
            "(the first is given, the last is skipped), so a video needs at least 3"
        )
    void = gt == DAVIS_VOID_LABEL
    gt = np.where(void, 0, gt)
    first = gt[0]
    num_objects = int(first.max()) if first.size else 0
    frames = range(1, gt.shape[0] - 1)
    out = {}
    for k in range(1, num_objects + 1):
        js, fs = [], []
        for t in frames:
            g, p = gt[t] == k, pred[t] == k
            v = void[t] if use_void else None
            js.append(region_jaccard(g, p, v))
            fs.append(boundary_f_measure(g, p, v, bound_th))
        out[k] = (np.asarray(js), np.asarray(fs))
    return out


def evaluate_video_unsupervised(
    gt: np.ndarray,
    pred: np.ndarray,
    *,
    use_void: bool = True,
    bound_th: float = BOUNDARY_THRESHOLD,
    max_proposals: int = MAX_PROPOSALS,
    name: str = "video",
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per-object, per-frame J and F of one video in the unsupervised protocol.

    Predicted ids are matched to the annotated objects (see the module docstring); each object
    gets the J and F of the proposal it was assigned.

    Args:
        gt: (T, H, W) integer annotation ids (0 background, 255 void).
        pred: (T, H, W) non-negative integer predicted ids at the annotation's resolution; id p
            is proposal p, 0 is background.
        use_void: exclude void pixels from J and F (the official unsupervised path does).
        max_proposals: the largest predicted id accepted (DAVIS's max_n_proposals).
        name: used in error messages.

    Returns:
        {object id: (J values, F values)} for object ids 1..K (K = max id of frame 0), each over
        all T frames.
    """
    gt = _check_id_video(name, "ground truth", np.asarray(gt))
    pred = _check_id_video(name, "prediction", np.asarray(pred))
    _check_same_shape(name, gt, pred)
    if not np.issubdtype(pred.dtype, np.integer):
        raise TypeError(f"{name}: predicted ids must be integers, got dtype {pred.dtype}")
    if gt.shape[0] < 1:
        raise ValueError(f"{name}: the video has no frames")
    pred = pred.astype(np.int64)
    if pred.size and pred.min() < 0:
        raise ValueError(f"{name}: predicted ids must be >= 0 (0 = background), got {pred.min()}")
    num_proposals = int(pred.max()) if pred.size else 0
    if num_proposals > max_proposals:
        distinct = int(np.count_nonzero(np.unique(pred)))
        raise ValueError(
            f"{name}: predicted ids go up to {num_proposals} ({distinct} distinct non-zero ids), "
            f"but the unsupervised protocol reads id p as proposal p and accepts at most "
            f"{max_proposals} proposals per video, as the official DAVIS toolkit does; keep at "
            f"most {max_proposals} objects and number them 1..N"
        )
    void = gt == DAVIS_VOID_LABEL
    gt = np.where(void, 0, gt)
    num_objects = int(gt[0].max()) if gt[0].size else 0
    if num_objects == 0:
        return {}
    # Ids skipped in the numbering are empty proposals, and empty ones are added up to K:
    # pred == p is simply all-False for those p.
    num_candidates = max(num_proposals, num_objects)
    num_frames = gt.shape[0]
    disk = _disk(_boundary_radius(gt.shape[1:], bound_th))
    j = np.zeros((num_candidates, num_objects, num_frames))  # (proposal, object, frame)
    f = np.zeros((num_candidates, num_objects, num_frames))
    for t in range(num_frames):
        keep = ~void[t] if use_void else np.ones(gt.shape[1:], bool)
        objects = [(gt[t] == k) & keep for k in range(1, num_objects + 1)]
        proposals = [(pred[t] == p) & keep for p in range(1, num_candidates + 1)]
        object_parts = [_boundary_parts(m, disk) for m in objects]
        proposal_parts = [_boundary_parts(m, disk) for m in proposals]
        for pi, pm in enumerate(proposals):
            for oi, om in enumerate(objects):
                # Masks are already cut to the non-void pixels, so no void argument here.
                j[pi, oi, t] = region_jaccard(om, pm)
                f[pi, oi, t] = _f_from_boundaries(proposal_parts[pi], object_parts[oi])
    score = (j.mean(axis=2) + f.mean(axis=2)) / 2  # (proposal, object)
    # Same orientation and sign as the official call, so ties resolve the same way.
    rows, cols = linear_sum_assignment(-score)
    return {int(c) + 1: (j[r, c], f[r, c]) for r, c in sorted(zip(rows, cols), key=lambda x: x[1])}


def track_consistency(gt: np.ndarray, pred: np.ndarray) -> tuple[int, int, float]:
    """(consistent pairs, pairs, expected consistent pairs by chance) of one video.

    See the module docstring for the definition. Void (255) is not an object.
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape or gt.ndim != 3:
        raise ValueError(
            f"track_consistency needs (T, H, W) arrays of one shape, got {tuple(gt.shape)} and "
            f"{tuple(pred.shape)}"
        )
    pred_ids = np.unique(pred)
    n_pred_ids = int(np.count_nonzero(pred_ids))
    chance_per_pair = 1.0 / n_pred_ids if n_pred_ids else 0.0
    objects = [int(k) for k in np.unique(gt) if k not in (0, DAVIS_VOID_LABEL)]
    consistent = pairs = 0
    for k in objects:
        majority = []
        for t in range(gt.shape[0]):
            covered = pred[t][gt[t] == k]
            if covered.size == 0:
                majority.append(None)
                continue
            values, counts = np.unique(covered, return_counts=True)
            majority.append(int(values[np.argmax(counts)]))
        for a, b in itertools.pairwise(majority):
            if a is None or b is None:
                continue
            pairs += 1
            consistent += int(a == b and a != 0)
    return consistent, pairs, pairs * chance_per_pair


class DAVISEvaluator(DatasetEvaluator):
    """J&F (DAVIS-2017, semi-supervised or unsupervised) and track consistency over videos.

    ``process`` takes the video mapper's inference dicts (they carry "annotation_file_names" and
    "video_id") and the model's outputs, each ``{"video_ids": (T, H, W) integer tensor}`` at the
    original frame resolution. Ground truth is read from the annotation files. The task used is
    in :attr:`task` and in the log; it is not put in the results, whose values detectron2's
    ``print_csv_format`` and ``EvalHook`` require to be numbers.
    """

    def __init__(
        self,
        dataset_name: str | None = None,
        *,
        distributed: bool = True,
        use_void: bool | None = None,
        bound_th: float = BOUNDARY_THRESHOLD,
        task: str | None = None,
        max_proposals: int = MAX_PROPOSALS,
    ):
        """
        Args:
            dataset_name: the dataset evaluated; its metadata's ``davis_task`` gives the task
                when ``task`` is None. Also used in log messages.
            distributed: gather the per-object results from all processes before reporting.
            use_void: exclude void (255) pixels from J and F. None does what the official
                toolkit does for the task: no for semi-supervised, yes for unsupervised.
            bound_th: the boundary tolerance (fraction of the diagonal if < 1, else pixels).
            task: "semi-supervised" (ids must equal the object ids) or "unsupervised" (ids are
                matched to objects). None: the dataset's ``davis_task``, else semi-supervised.
            max_proposals: the largest predicted id accepted in the unsupervised task.
        """
        if task is None:
            task = "semi-supervised"
            if dataset_name is not None and dataset_name in MetadataCatalog.list():
                task = MetadataCatalog.get(dataset_name).get("davis_task", task)
            where = f"metadata 'davis_task' of dataset {dataset_name!r}"
        else:
            where = "DAVISEvaluator(task=...)"
        if task not in DAVIS_TASKS:
            raise ValueError(f"{where} must be one of {DAVIS_TASKS}, got {task!r}")
        if not isinstance(max_proposals, int) or max_proposals < 1:
            raise ValueError(f"max_proposals must be a positive int, got {max_proposals!r}")
        self._dataset_name = dataset_name
        self._distributed = distributed
        self.task = task
        self._use_void = (task == "unsupervised") if use_void is None else bool(use_void)
        self._bound_th = bound_th
        self._max_proposals = max_proposals
        self.reset()

    def reset(self):
        # One record per (video, object): J and F per evaluated frame.
        self._objects: list[dict] = []
        self._consistency = [0, 0, 0.0]  # consistent pairs, pairs, chance-expected pairs

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs, strict=True):
            name = str(inp.get("video_id", "<unknown video>"))
            if "video_ids" not in out:
                raise KeyError(f"DAVISEvaluator: output for video {name!r} has no 'video_ids'")
            if "annotation_file_names" not in inp:
                raise KeyError(
                    f"DAVISEvaluator: input for video {name!r} has no 'annotation_file_names' "
                    "(use the video mapper's inference dicts)"
                )
            pred = out["video_ids"]
            if isinstance(pred, torch.Tensor):
                if pred.is_floating_point():
                    raise TypeError(
                        f"DAVISEvaluator: 'video_ids' of {name!r} must be an integer tensor, got "
                        f"{pred.dtype}"
                    )
                pred = pred.detach().to("cpu").numpy()
            gt = np.stack([read_davis_annotation(f) for f in inp["annotation_file_names"]])
            if self.task == "unsupervised":
                per_object = evaluate_video_unsupervised(
                    gt,
                    pred,
                    use_void=self._use_void,
                    bound_th=self._bound_th,
                    max_proposals=self._max_proposals,
                    name=name,
                )
            else:
                per_object = evaluate_video(
                    gt, pred, use_void=self._use_void, bound_th=self._bound_th, name=name
                )
            for k, (j, f) in per_object.items():
                self._objects.append({"video_id": name, "object": k, "J": j, "F": f})
            c, n, chance = track_consistency(np.where(gt == DAVIS_VOID_LABEL, 0, gt), pred)
            self._consistency[0] += c
            self._consistency[1] += n
            self._consistency[2] += chance

    def evaluate(self):
        objects, consistency = self._objects, [self._consistency]
        if self._distributed:
            comm.synchronize()
            objects = list(itertools.chain(*comm.gather(objects, dst=0)))
            consistency = comm.gather(self._consistency, dst=0)
            if not comm.is_main_process():
                return {}
        if not objects:
            logger.warning(
                "DAVISEvaluator(%s): no objects were evaluated; returning no results",
                self._dataset_name,
            )
            return {}
        stats = {"J": [], "F": []}
        for obj in objects:
            for key in ("J", "F"):
                stats[key].append(mean_recall_decay(obj[key]))
        j = np.asarray(stats["J"])  # (objects, [mean, recall, decay])
        f = np.asarray(stats["F"])
        jm, jr, jd = (float(np.nanmean(j[:, i])) for i in range(3))
        fm, fr, fd = (float(np.nanmean(f[:, i])) for i in range(3))
        consistent = sum(c[0] for c in consistency)
        pairs = sum(c[1] for c in consistency)
        chance = sum(c[2] for c in consistency)
        res = OrderedDict(
            [
                ("J&F-Mean", 100 * (jm + fm) / 2),
                ("J-Mean", 100 * jm),
                ("J-Recall", 100 * jr),
                ("J-Decay", 100 * jd),
                ("F-Mean", 100 * fm),
                ("F-Recall", 100 * fr),
                ("F-Decay", 100 * fd),
                ("track_consistency", 100 * consistent / pairs if pairs else float("nan")),
                ("track_consistency_chance", 100 * chance / pairs if pairs else float("nan")),
                ("num_objects", len(objects)),
            ]
        )
        logger.info(
            "DAVISEvaluator(%s): %s task, %d objects, J&F-Mean %.2f",
            self._dataset_name,
            self.task,
            len(objects),
            res["J&F-Mean"],
        )
        return OrderedDict([("davis", res)])
