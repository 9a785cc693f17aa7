"""Short synthetic videos of moving, occluding objects, written in DAVIS-2017's layout.

The video half of Pix2Seq-D needs clips whose object identities must be carried over frames,
and no real video dataset can be downloaded where seg_zoo is developed. Each clip here shows 2-4
textured objects (disc, box, diamond; each with its own colour and stripe pattern) gliding on
smooth, wall-bouncing paths over a textured, slowly drifting background. The paths are drawn to
cross near one point of the frame in the middle of the clip, so objects pass in front of each
other; a fixed depth order per clip decides which one is seen. Object ids (1..K, in random order
with respect to depth) never change within a clip, and every object is visible in the first
frame, which is the frame a semi-supervised method is given. Every clip has its own RNG seeded
from (seed, split, index), so the same arguments give byte-identical files.

Layout under ``<root>/seg_zoo_synthetic_video/`` (DAVIS-2017's; see :mod:`.register_davis`)::

    JPEGImages/480p/<seq>/%05d.jpg       RGB JPEG, quality 95 ("480p" is DAVIS's folder name;
                                         frames are --size H W)
    Annotations/480p/<seq>/%05d.png      palette PNG of object ids, 0 = background
    ImageSets/2017/{train,val}.txt       sequence names, e.g. ``train-0000``
    .stamp.json                          generator version + arguments; generation is skipped
                                         when they are unchanged

Registered names (paths bound to ``$DETECTRON2_DATASETS`` at import, checked when loaded):
``synthetic_video_train``, ``synthetic_video_val``; metadata and dicts as DAVIS's, with
``davis_task="unsupervised"`` (the task Pix2Seq-D is scored on).
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from ._paths import get_datasets_root
from .register_davis import DAVIS_RESOLUTION, davis_palette, register_davis_videos
from .synthetic import clear_generated, stamp_is_current

__all__ = [
    "SYNTHETIC_VIDEO_DIRNAME",
    "GENERATOR_VERSION",
    "synthetic_video_dir",
    "render_clip",
    "generate_synthetic_video_dataset",
    "register_all_synthetic_video",
]

GENERATOR_VERSION = 1
SYNTHETIC_VIDEO_DIRNAME = "seg_zoo_synthetic_video"
SPLITS = ("train", "val")
DEFAULT_SIZE = (64, 96)
DEFAULT_FRAMES = 8
OBJECTS_PER_CLIP = (2, 4)  # inclusive
# An object must show at least this many pixels in the first frame (the given frame).
MIN_FIRST_FRAME_AREA = 12
_SHAPES = ("disc", "box", "diamond")
_MAX_ATTEMPTS = 200

_HINT = "Create it with `python tools/make_synthetic_video_dataset.py` (see --help for --root)."


def synthetic_video_dir(root: str | None = None) -> str:
    """``<root>/seg_zoo_synthetic_video``, or ``root`` itself if it already is that folder."""
    root = get_datasets_root(root)
    if os.path.basename(os.path.normpath(root)) == SYNTHETIC_VIDEO_DIRNAME:
        return root
    return os.path.join(root, SYNTHETIC_VIDEO_DIRNAME)


# ----------------------------------------------------------------------------- rendering


def _bounce(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold positions into [lo, hi] as a ball bouncing between two walls would be."""
    span = hi - lo
    if span <= 0:
        return np.full_like(x, (lo + hi) / 2)
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


def _shape_mask(shape: str, cx: float, cy: float, r: float, yy, xx) -> np.ndarray:
    dx, dy = xx - cx, yy - cy
    if shape == "disc":
        return dx * dx + dy * dy <= r * r
    if shape == "box":
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.7 * r)
    return np.abs(dx) + np.abs(dy) <= 1.2 * r  # diamond


def _sample_objects(rng: np.random.Generator, h: int, w: int, frames: int) -> list[dict]:
    """Object parameters and per-frame centres, with paths that meet mid-clip."""
    k = int(rng.integers(OBJECTS_PER_CLIP[0], OBJECTS_PER_CLIP[1] + 1))
    t = np.arange(frames, dtype=np.float64)
    # Every path passes close to this point at this time, which is what makes them cross.
    meet_t = (frames - 1) / 2 + rng.uniform(-0.5, 0.5)
    meet = np.array([rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h])
    side = min(h, w)
    objects = []
    for _ in range(k):
        r = rng.uniform(0.1, 0.17) * side
        angle = rng.uniform(0, 2 * np.pi)
        # Objects start (and end) about one to two object widths away from the meeting point,
        # whatever the clip length, so they are apart at the ends and overlap in the middle.
        travel = rng.uniform(1.0, 2.0) * 0.3 * side
        speed = travel / max(meet_t, 1.0)
        velocity = speed * np.array([np.cos(angle), np.sin(angle)])
        start = meet + rng.normal(0, 0.08 * side, size=2)
        # A gentle sideways sway on top of the straight line, so paths are smooth curves.
        sway_amp, sway_freq = rng.uniform(0, 0.05 * side), rng.uniform(0.2, 0.6)
        sway = sway_amp * np.sin(sway_freq * t + rng.uniform(0, 2 * np.pi))
        normal = np.array([-velocity[1], velocity[0]]) / max(speed, 1e-6)
        path = start[None] + (t - meet_t)[:, None] * velocity[None] + sway[:, None] * normal[None]
        cx = _bounce(path[:, 0], r * 0.5, w - 1 - r * 0.5)
        cy = _bounce(path[:, 1], r * 0.5, h - 1 - r * 0.5)
        objects.append(
            {
                "shape": _SHAPES[int(rng.integers(len(_SHAPES)))],
                "r": r,
                "cx": cx,
                "cy": cy,
                "colour": rng.uniform(40, 230, size=3),
                "stripe_colour": rng.uniform(0, 255, size=3),
                "stripe_period": rng.uniform(3.0, 7.0),
                "stripe_angle": rng.uniform(0, np.pi),
            }
        )
    return objects


def _layout(objects, h, w, frames, yy, xx):
    """(T, H, W) int map of the index+1 of the visible object (later objects in front)."""
    vis = np.zeros((frames, h, w), dtype=np.int64)
    masks = np.zeros((len(objects), frames, h, w), dtype=bool)
    for i, obj in enumerate(objects):
        for f in range(frames):
            m = _shape_mask(obj["shape"], obj["cx"][f], obj["cy"][f], obj["r"], yy, xx)
            masks[i, f] = m
            vis[f][m] = i + 1
    return vis, masks


def render_clip(rng: np.random.Generator, frames: int = DEFAULT_FRAMES, size=DEFAULT_SIZE):
    """Draw one clip.

    Returns:
        images: (T, H, W, 3) uint8 RGB frames.
        ids: (T, H, W) uint8 object ids (0 = background), the same id for an object in every
            frame.
        occluded: whether some object hides part of another in at least one frame.
    """
    h, w = int(size[0]), int(size[1])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    # Resample until every object shows itself in the first frame and two objects overlap
    # somewhere; draws come from the clip's own RNG, so this stays deterministic.
    for _ in range(_MAX_ATTEMPTS):
        objects = _sample_objects(rng, h, w, frames)
        vis, masks = _layout(objects, h, w, frames, yy, xx)
        first_ok = all((vis[0] == i + 1).sum() >= MIN_FIRST_FRAME_AREA for i in range(len(objects)))
        overlap = (masks.sum(axis=0) >= 2).any()
        if first_ok and overlap:
            break
    else:
        raise RuntimeError(
            f"could not draw a clip of size {h}x{w} with {frames} frames in which every object "
            "is visible in the first frame and objects overlap; use a larger --size"
        )

    # Ids are a random permutation of the depth order, so an id says nothing about depth.
    id_of = np.concatenate([[0], rng.permutation(len(objects)) + 1]).astype(np.uint8)
    ids = id_of[vis]

    # Background: two-colour wavy texture drifting slowly (camera-like motion), plus noise.
    base = rng.uniform(60, 200, size=3)
    tint = rng.uniform(-50, 50, size=3)
    freq = rng.uniform(0.08, 0.2, size=2)
    drift = rng.uniform(-1.0, 1.0, size=2)
    images = np.zeros((frames, h, w, 3), dtype=np.float64)
    for f in range(frames):
        u, v = xx + drift[0] * f, yy + drift[1] * f
        wave = np.sin(freq[0] * u + 1.5 * np.sin(freq[1] * v))
        img = base[None, None] + wave[..., None] * tint[None, None]
        for i, obj in enumerate(objects):
            region = vis[f] == i + 1
            if not region.any():
                continue
            # Stripes move with the object (coordinates relative to its centre).
            c, s = np.cos(obj["stripe_angle"]), np.sin(obj["stripe_angle"])
            along = c * (xx - obj["cx"][f]) + s * (yy - obj["cy"][f])
            stripe = (np.mod(along, obj["stripe_period"]) < obj["stripe_period"] / 2)[..., None]
            tex = np.where(stripe, obj["colour"][None, None], obj["stripe_colour"][None, None])
            img[region] = tex[region]
        images[f] = img
    images += rng.normal(0, 3.0, size=images.shape)
    images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    return images, ids, bool((masks.sum(axis=0) >= 2).any())


# ----------------------------------------------------------------------------- writing


def _write_split(out: str, split: str, num: int, frames: int, size, seed: int) -> None:
    palette = davis_palette()
    names = []
    for index in range(num):
        seq = f"{split}-{index:04d}"
        rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))
        images, ids, _ = render_clip(rng, frames, size)
        img_dir = os.path.join(out, "JPEGImages", DAVIS_RESOLUTION, seq)
        ann_dir = os.path.join(out, "Annotations", DAVIS_RESOLUTION, seq)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for f in range(frames):
            Image.fromarray(images[f]).save(
                os.path.join(img_dir, f"{f:05d}.jpg"), quality=95, subsampling=0
            )
            # putpalette turns the grayscale image into a palette ("P") one, DAVIS's format.
            ann = Image.fromarray(ids[f])
            ann.putpalette(palette)
            ann.save(os.path.join(ann_dir, f"{f:05d}.png"))
        names.append(seq)
    list_dir = os.path.join(out, "ImageSets", "2017")
    os.makedirs(list_dir, exist_ok=True)
    with open(os.path.join(list_dir, f"{split}.txt"), "w") as f:
        f.write("".join(n + "\n" for n in names))


_GENERATED_ENTRIES = ("JPEGImages", "Annotations", "ImageSets", ".stamp.json")


def generate_synthetic_video_dataset(
    root: str | None = None,
    num_train: int = 16,
    num_val: int = 4,
    frames: int = DEFAULT_FRAMES,
    size: tuple[int, int] = DEFAULT_SIZE,
    seed: int = 0,
    force: bool = False,
) -> str:
    """Write the synthetic videos to ``<root>/seg_zoo_synthetic_video`` and return that folder.

    ``root`` defaults to ``$DETECTRON2_DATASETS`` (else ``datasets``). Does nothing when the
    folder's stamp records the same generator version and arguments, unless ``force``.
    """
    for name, value, low in (
        ("num_train", num_train, 1),
        ("num_val", num_val, 1),
        ("frames", frames, 2),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    size = tuple(size)
    if len(size) != 2 or not all(isinstance(s, int) and s >= 32 for s in size):
        raise ValueError(f"size must be two ints (H, W), each >= 32, got {size!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")

    out = synthetic_video_dir(root)
    stamp_path = os.path.join(out, ".stamp.json")
    stamp = {
        "generator_version": GENERATOR_VERSION,
        "num_train": num_train,
        "num_val": num_val,
        "frames": frames,
        "size": list(size),
        "seed": seed,
    }
    if not force and stamp_is_current(stamp_path, stamp):
        return out
    # Only what this generator writes is removed, never unrelated files a user put there.
    clear_generated(out, _GENERATED_ENTRIES)
    _write_split(out, "train", num_train, frames, size, seed)
    _write_split(out, "val", num_val, frames, size, seed)
    # Written last: a half-written dataset has no stamp and is regenerated next time.
    with open(stamp_path, "w") as f:
        json.dump(stamp, f)
    return out


# ----------------------------------------------------------------------------- registration


def register_all_synthetic_video(root: str | None = None) -> None:
    """Register ``synthetic_video_{train,val}``, data under ``<root>/seg_zoo_synthetic_video``.

    Nothing is read here; a missing folder or file is reported when the dataset is loaded.
    Calling this again with another root replaces the registrations.
    """
    root = get_datasets_root(root)
    out = synthetic_video_dir(root)
    for split in SPLITS:
        register_davis_videos(
            f"synthetic_video_{split}",
            out,
            split,
            root=root,
            hint=_HINT,
            # Pix2Seq-D is given no first-frame masks, so its clips are scored as DAVIS's
            # unsupervised task (predicted ids matched to the objects). The generator writes
            # one annotation folder, Annotations/, and it holds exactly those objects.
            davis_task="unsupervised",
            annotation_dirname="Annotations",
        )


register_all_synthetic_video()
