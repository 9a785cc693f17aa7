"""DAVIS-2017 video object segmentation: one dataset dict per video, in DAVIS's own layout.

Layout (as distributed by the DAVIS challenge; seg_zoo reads it unchanged)::

    <root>/DAVIS/JPEGImages/480p/<sequence>/00000.jpg, 00001.jpg, ...
    <root>/DAVIS/Annotations/480p/<sequence>/00000.png, 00001.png, ...
    <root>/DAVIS/Annotations_unsupervised/480p/<sequence>/00000.png, ...   (unsupervised task)
    <root>/DAVIS/ImageSets/2017/{train,val}.txt       one sequence name per line

Annotations are indexed (palette) PNGs whose pixel value is the object id: 0 is background,
1..K are the objects of the sequence (K = the largest id of the first frame, which is the frame
semi-supervised methods are given), 255 is void. The task is class-agnostic, so the metadata has
a single thing class, "object".

DAVIS-2017 has two tasks over the same frames and sequence lists. Semi-supervised: the first
frame's masks are given and ``Annotations/`` holds the objects to follow. Unsupervised: nothing is
given, the model finds and tracks the salient objects itself, and ``Annotations_unsupervised/``
holds those objects (a different annotation from the semi-supervised one). Pix2Seq-D reports the
unsupervised task. The metadata key ``davis_task`` ("semi-supervised" or "unsupervised") tells
:class:`seg_zoo.evaluation.DAVISEvaluator` which protocol to score with.

Each dataset dict describes a whole video::

    {"video_id": <sequence name>, "file_names": [...], "annotation_file_names": [...],
     "height": H, "width": W, "length": T}

Frames are the sorted ``*.jpg`` files of the sequence; every frame must have an annotation PNG of
the same stem (the train and val splits are annotated densely). Only the first frame is opened
(its header) to learn H and W; the mappers check every frame they read against it.

Registered names (paths bound to ``$DETECTRON2_DATASETS`` at import; nothing is read until a
dataset is loaded): ``davis_2017_train``, ``davis_2017_val`` (semi-supervised, ``Annotations/``),
``davis_2017_unsupervised_train``, ``davis_2017_unsupervised_val`` (``Annotations_unsupervised/``).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from ._paths import get_datasets_root, register_replacing, require_path

__all__ = [
    "DAVIS_DIRNAME",
    "DAVIS_RESOLUTION",
    "DAVIS_VOID_LABEL",
    "DAVIS_SPLITS",
    "DAVIS_UNSUPERVISED_SPLITS",
    "DAVIS_TASKS",
    "DAVIS_ANNOTATION_DIRNAMES",
    "davis_palette",
    "get_davis_metadata",
    "load_davis_videos",
    "read_davis_annotation",
    "register_davis_videos",
    "register_all_davis",
]

DAVIS_DIRNAME = "DAVIS"
DAVIS_RESOLUTION = "480p"
# DAVIS marks pixels it does not score (ambiguous borders) with this value.
DAVIS_VOID_LABEL = 255
# The two DAVIS-2017 tasks, in the official toolkit's spelling.
DAVIS_TASKS = ("semi-supervised", "unsupervised")
# Task -> the annotation folder DAVIS ships for it (next to JPEGImages/).
DAVIS_ANNOTATION_DIRNAMES = {
    "semi-supervised": "Annotations",
    "unsupervised": "Annotations_unsupervised",
}
# Registered name -> ImageSets/2017 split, per task. Both tasks share frames and split lists.
DAVIS_SPLITS = {"davis_2017_train": "train", "davis_2017_val": "val"}
DAVIS_UNSUPERVISED_SPLITS = {
    "davis_2017_unsupervised_train": "train",
    "davis_2017_unsupervised_val": "val",
}

_HINT = (
    "Download DAVIS-2017 TrainVal 480p from https://davischallenge.org/davis2017/code.html and "
    "unpack it so that DAVIS/ sits under the dataset root."
)
_UNSUPERVISED_HINT = (
    "Download DAVIS-2017 TrainVal 480p and the DAVIS-2017 Unsupervised TrainVal 480p annotations "
    "from https://davischallenge.org/davis2017/code.html and unpack both so that "
    "DAVIS/JPEGImages/ and DAVIS/Annotations_unsupervised/ sit under the dataset root."
)


def _check_task(task: str) -> str:
    if task not in DAVIS_TASKS:
        raise ValueError(f"davis_task must be one of {DAVIS_TASKS}, got {task!r}")
    return task


def davis_palette() -> list[int]:
    """The 256-colour PASCAL VOC palette DAVIS writes its annotations with, flattened RGB.

    Colour of index i: the bits of i are dealt out, three at a time from the least significant,
    to the most significant free bit of R, G and B.
    """
    palette = []
    for index in range(256):
        rgb = [0, 0, 0]
        value = index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        palette.extend(rgb)
    return palette


def get_davis_metadata(task: str = "semi-supervised") -> dict:
    """Class-agnostic metadata: one thing class, void label, evaluator type, DAVIS task."""
    return {
        "thing_classes": ["object"],
        "thing_colors": [davis_palette()[3:6]],
        "thing_dataset_id_to_contiguous_id": {1: 0},
        "ignore_label": DAVIS_VOID_LABEL,
        "evaluator_type": "davis",
        "davis_task": _check_task(task),
    }


def read_davis_annotation(path: str, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Read one DAVIS annotation PNG as a uint8 (H, W) array of object ids (255 = void).

    Palette ("P") and grayscale ("L") PNGs hold the ids directly. An RGB rendering of an
    annotation does not (its values are palette colours), so it is refused with a message
    saying so rather than read as garbage ids.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"DAVIS annotation file not found: {path!r}")
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode not in ("P", "L"):
                raise ValueError(
                    f"DAVIS annotation {path!r} has PIL mode {mode!r}; expected an indexed "
                    "('P') or grayscale ('L') PNG whose pixel values are object ids"
                )
            ids = np.array(im, dtype=np.uint8)
    except (OSError, SyntaxError) as e:
        raise OSError(f"Could not decode DAVIS annotation {path!r}: {e}") from e
    if expected_hw is not None and tuple(ids.shape) != tuple(expected_hw):
        raise ValueError(
            f"DAVIS annotation {path!r} has size (H, W)={tuple(ids.shape)} but its video's "
            f"frames have size (H, W)={tuple(expected_hw)}"
        )
    return ids


def load_davis_videos(
    davis_root: str,
    split: str,
    *,
    dataset_name: str,
    root: str,
    hint: str | None = _HINT,
    resolution: str = DAVIS_RESOLUTION,
    annotation_dirname: str = "Annotations",
) -> list[dict]:
    """One dict per video of ``ImageSets/2017/<split>.txt`` under ``davis_root``.

    Args:
        davis_root: the folder holding JPEGImages/, the annotation folder and ImageSets/.
        split: "train" or "val" (the file name in ImageSets/2017).
        dataset_name, root, hint: for error messages (which dataset, which dataset root, how
            to create the missing data).
        resolution: the resolution folder ("480p" or "Full-Resolution").
        annotation_dirname: "Annotations" (semi-supervised) or "Annotations_unsupervised".
    """

    def need(path, what, is_dir):
        require_path(
            path, dataset_name=dataset_name, root=root, what=what, is_dir=is_dir, hint=hint
        )

    need(davis_root, "DAVIS folder", True)
    list_file = os.path.join(davis_root, "ImageSets", "2017", f"{split}.txt")
    need(list_file, "sequence list", False)
    image_root = os.path.join(davis_root, "JPEGImages", resolution)
    ann_root = os.path.join(davis_root, annotation_dirname, resolution)
    need(image_root, "frame folder", True)
    need(ann_root, "annotation folder", True)
    with open(list_file) as f:
        sequences = [line.strip() for line in f if line.strip()]
    if not sequences:
        raise ValueError(f"Dataset '{dataset_name}': the sequence list {list_file} is empty")

    videos = []
    for seq in sequences:
        seq_images = os.path.join(image_root, seq)
        seq_anns = os.path.join(ann_root, seq)
        need(seq_images, f"frame folder of sequence {seq!r}", True)
        need(seq_anns, f"annotation folder of sequence {seq!r}", True)
        stems = sorted(os.path.splitext(f)[0] for f in os.listdir(seq_images) if f.endswith(".jpg"))
        if not stems:
            raise FileNotFoundError(
                f"Dataset '{dataset_name}': no *.jpg frames in {seq_images} (sequence {seq!r})"
            )
        file_names = [os.path.join(seq_images, s + ".jpg") for s in stems]
        ann_names = [os.path.join(seq_anns, s + ".png") for s in stems]
        for ann in ann_names:
            need(ann, f"annotation of sequence {seq!r}", False)
        # Only the header is read here; a full decode of every frame would make loading the
        # catalog as slow as a pass over the data.
        with Image.open(file_names[0]) as im:
            width, height = im.size
        videos.append(
            {
                "video_id": seq,
                "file_names": file_names,
                "annotation_file_names": ann_names,
                "height": height,
                "width": width,
                "length": len(file_names),
            }
        )
    return videos


def register_davis_videos(
    name: str,
    davis_root: str,
    split: str,
    *,
    root: str,
    hint: str | None = _HINT,
    davis_task: str = "semi-supervised",
    annotation_dirname: str | None = None,
    **extra_metadata,
) -> None:
    """(Re-)register ``name`` as the ``split`` videos of a DAVIS-layout folder.

    ``davis_task`` is recorded in the metadata (it picks the evaluation protocol);
    ``annotation_dirname`` defaults to the folder DAVIS ships for that task.
    """
    _check_task(davis_task)
    if annotation_dirname is None:
        annotation_dirname = DAVIS_ANNOTATION_DIRNAMES[davis_task]
    register_replacing(
        name,
        lambda: load_davis_videos(
            davis_root,
            split,
            dataset_name=name,
            root=root,
            hint=hint,
            annotation_dirname=annotation_dirname,
        ),
        **get_davis_metadata(davis_task),
        image_root=os.path.join(davis_root, "JPEGImages", DAVIS_RESOLUTION),
        annotation_root=os.path.join(davis_root, annotation_dirname, DAVIS_RESOLUTION),
        davis_root=davis_root,
        split=split,
        **extra_metadata,
    )


def register_all_davis(root: str | None = None) -> None:
    """Register ``davis_2017_{train,val}`` and ``davis_2017_unsupervised_{train,val}`` with the
    data under ``<root>/DAVIS``.

    ``root`` defaults to ``$DETECTRON2_DATASETS`` (else ``datasets``).
    """
    root = get_datasets_root(root)
    davis_root = os.path.join(root, DAVIS_DIRNAME)
    for name, split in DAVIS_SPLITS.items():
        register_davis_videos(name, davis_root, split, root=root, davis_task="semi-supervised")
    for name, split in DAVIS_UNSUPERVISED_SPLITS.items():
        register_davis_videos(
            name, davis_root, split, root=root, hint=_UNSUPERVISED_HINT, davis_task="unsupervised"
        )


register_all_davis()
