"""Pix2Seq-D's video mapper (``video_panoptic``): frame triplets for training, whole videos for
inference, from the per-video dicts of :mod:`seg_zoo.data.datasets.register_davis`.

What follows the official code (pix2seq tasks/video_panoptic_segmentation.py, data/video.py,
configs/config_diffusion_panoptic_video.py and transform_configs.py):

- a training sample is the frame t to segment plus the masks of the frames t + o for every o
  in ``proceeding_frames`` (official default -2, -1) as conditioning;
- one geometric augmentation (scale jitter to the target size, fixed-size crop, horizontal
  flip; the official DAVIS recipe uses scale 1.0..1.0) is sampled once and applied to the image
  and to every mask of the sample, so the conditioning masks stay aligned with the image;
- object ids stay those of the annotation files, the same object keeping its id across the
  frames of a sample; the model gives them identities (``MODEL.PIX2SEQ_D.OBJECT_ORDER``, the
  official ``process_instance_id_map``) with one assignment for all frames of the sample;
- DAVIS is class-agnostic (the official loader puts 0 in the semantic channel); here every
  object pixel has contiguous class 0 ("object") and everything else is 255.

Where it differs: the official TFRecords hold consecutive frame triplets (t >= 2 only); here t
is drawn uniformly over the whole video and offsets before frame 0 are clamped to frame 0, so
the first frames are trained on too, with their own mask as the earlier condition. Dropping
conditioning frames (``frames_dropout``) is left to the model, which owns that probability.

Randomness (frame choice, augmentations) comes from numpy's global RNG, which
detectron2's augmentations use and which seg_zoo's training loader seeds per sample
(:class:`seg_zoo.engine.train_loader.SeededMapDataset`), so samples are reproducible.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T

from ..augmentation import build_flip_augmentation, check_same_size, read_image_checked
from ..datasets.register_davis import DAVIS_VOID_LABEL, read_davis_annotation
from . import register_dataset_mapper
from ._base import IMAGE_PAD_VALUE, image_to_tensor

__all__ = ["VideoPanopticDatasetMapper"]
# Contiguous class of every object pixel (the single "object" class) and of everything else.
OBJECT_CLASS = 0
NO_OBJECT_LABEL = 255


@register_dataset_mapper("video_panoptic")
class VideoPanopticDatasetMapper:
    """Turns a per-video dataset dict into Pix2Seq-D's video input.

    Training returns, for one frame t drawn uniformly from the video::

        "image":      uint8 (3, H, W), frame t after augmentation
        "ids":        int64 (H, W), object ids of frame t (0 = background, void or padding)
        "sem":        int64 (H, W), 0 on object pixels, 255 elsewhere (class-agnostic)
        "cond_ids":   int64 (F, H, W), object ids of frames t + proceeding_frames (clamped to
                      the video), under the same augmentation
        "frame_index": t, "cond_frame_indices": list of the F conditioning frame indices,
        "video_id", "height", "width" (the original frame size)

    Inference returns the whole video::

        "images":          uint8 (T, 3, H, W), every frame resized by the test augmentation
        "first_frame_ids": int64 (H, W), frame 0's object ids at that size (the semi-supervised
                           input)
        "video_id", "height", "width", "file_names", "annotation_file_names"
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list,
        image_format: str,
        proceeding_frames: list[int] = (-2, -1),
    ):
        """
        Args:
            is_train: training (one frame + conditioning masks) or inference (whole video).
            augmentations: detectron2 augmentations; sampled once per sample and applied to
                every frame and mask of it.
            image_format: channel order for ``read_image`` ("BGR", "RGB", ...).
            proceeding_frames: offsets of the conditioning frames relative to t (official -2, -1).
        """
        offsets = [int(o) for o in proceeding_frames]
        if is_train and not offsets:
            raise ValueError(
                "proceeding_frames (MODEL.PIX2SEQ_D.VIDEO.PROCEEDING_FRAMES) is empty; the "
                "video mapper needs at least one conditioning frame offset"
            )
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.proceeding_frames = offsets
        mode = "training" if is_train else "inference"
        logging.getLogger(__name__).info(
            f"[VideoPanopticDatasetMapper] {mode} augmentations: {augmentations}; "
            f"proceeding_frames {offsets}"
        )

    @classmethod
    def from_config(
        cls,
        cfg,
        is_train: bool = True,
        *,
        scale_range: tuple[float, float] = (1.0, 1.0),
    ):
        if is_train:
            if cfg.INPUT.CROP.TYPE != "absolute":
                raise ValueError(
                    "VideoPanopticDatasetMapper takes its training size (H, W) from "
                    "INPUT.CROP.SIZE and needs INPUT.CROP.TYPE 'absolute', got "
                    f"{cfg.INPUT.CROP.TYPE!r}"
                )
            height, width = (int(s) for s in cfg.INPUT.CROP.SIZE)
            augs = [
                # The official scale_jitter: fit inside (H, W) * scale keeping the aspect ratio,
                # then crop / pad to exactly (H, W).
                T.ResizeScale(scale_range[0], scale_range[1], height, width),
                T.FixedSizeCrop(
                    (height, width), pad=True, pad_value=IMAGE_PAD_VALUE, seg_pad_value=0
                ),
                *build_flip_augmentation(cfg),
            ]
        else:
            augs = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)]
        return {
            "is_train": is_train,
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "proceeding_frames": list(cfg.MODEL.PIX2SEQ_D.VIDEO.PROCEEDING_FRAMES),
        }

    # ------------------------------------------------------------------------------------
    def _check_video(self, video: dict) -> int:
        name = video.get("video_id", "<unknown video>")
        for key in ("file_names", "annotation_file_names", "height", "width"):
            if key not in video:
                raise ValueError(f"Video dict of {name!r} has no {key!r}; keys: {sorted(video)}")
        n, m = len(video["file_names"]), len(video["annotation_file_names"])
        if n == 0 or n != m:
            raise ValueError(
                f"Video {name!r} has {n} frames and {m} annotation files; expected the same "
                "non-zero number"
            )
        return n

    def _read_frame(self, video: dict, index: int) -> np.ndarray:
        file_name = video["file_names"][index]
        image = read_image_checked(file_name, format=self.image_format)
        expected = (video["height"], video["width"])
        if tuple(image.shape[:2]) != expected:
            raise ValueError(
                f"Frame {file_name!r} of video {video.get('video_id')!r} has size (H, W)="
                f"{tuple(image.shape[:2])} but the dataset dict says {expected}"
            )
        return image

    def _read_ids(self, video: dict, index: int) -> np.ndarray:
        """Object ids of frame ``index`` as uint8 (H, W), void (255) already turned into 0."""
        ann = read_davis_annotation(video["annotation_file_names"][index])
        check_same_size(
            (video["height"], video["width"]),
            video["file_names"][index],
            ann.shape,
            video["annotation_file_names"][index],
            "DAVIS annotation",
        )
        # Void pixels carry no object: id 0, like background, as the DAVIS evaluation treats
        # them when it builds per-object masks.
        return np.where(ann == DAVIS_VOID_LABEL, 0, ann).astype(np.uint8)

    # ------------------------------------------------------------------------------------
    def __call__(self, video: dict) -> dict:
        """Map one video dict (left unmodified) to a new dict of tensors."""
        video = copy.deepcopy(video)
        num_frames = self._check_video(video)
        if self.is_train:
            return self._train_sample(video, num_frames)
        return self._video_sample(video, num_frames)

    def _train_sample(self, video: dict, num_frames: int) -> dict:
        t = int(np.random.randint(num_frames))
        cond_indices = [min(max(t + o, 0), num_frames - 1) for o in self.proceeding_frames]
        image = self._read_frame(video, t)
        ids_by_frame = {i: self._read_ids(video, i) for i in {t, *cond_indices}}

        aug_input = T.AugInput(image, sem_seg=ids_by_frame[t])
        transforms = self.augmentations(aug_input)
        # The conditioning masks go through the very transforms sampled for frame t.
        warped = {t: aug_input.sem_seg}
        for i in cond_indices:
            if i not in warped:
                warped[i] = transforms.apply_segmentation(ids_by_frame[i])

        ids = torch.as_tensor(warped[t].astype(np.int64))
        sem = torch.where(ids > 0, OBJECT_CLASS, NO_OBJECT_LABEL).to(torch.int64)
        cond = np.stack([warped[i].astype(np.int64) for i in cond_indices])
        return {
            "image": image_to_tensor(aug_input.image),
            "ids": ids,
            "sem": sem,
            "cond_ids": torch.as_tensor(cond),
            "frame_index": t,
            "cond_frame_indices": cond_indices,
            "video_id": video.get("video_id"),
            "height": video["height"],
            "width": video["width"],
        }

    def _video_sample(self, video: dict, num_frames: int) -> dict:
        frames = [self._read_frame(video, i) for i in range(num_frames)]
        aug_input = T.AugInput(frames[0])
        transforms = self.augmentations(aug_input)
        images = [aug_input.image] + [transforms.apply_image(f) for f in frames[1:]]
        first = transforms.apply_segmentation(self._read_ids(video, 0))
        return {
            "images": torch.stack([image_to_tensor(im) for im in images]),
            "first_frame_ids": torch.as_tensor(first.astype(np.int64)),
            "video_id": video.get("video_id"),
            "height": video["height"],
            "width": video["width"],
            "file_names": video["file_names"],
            "annotation_file_names": video["annotation_file_names"],
        }
