"""MaskFormer's training mapper for panoptic segmentation (``mask_former_panoptic``)."""

from __future__ import annotations

import copy

import numpy as np
import torch
from detectron2.structures import Instances
from panopticapi.utils import rgb2id

from ..augmentation import (
    check_category_ids,
    check_same_size,
    pad_bottom_right,
    read_image_checked,
    read_label_map,
)
from . import register_dataset_mapper
from .mask_former_semantic_dataset_mapper import MaskFormerSemanticDatasetMapper

__all__ = [
    "MaskFormerPanopticDatasetMapper",
    "read_panoptic_png",
    "check_segments",
    "segment_targets",
]

# rgb2id of the black VOID colour; pixels of no segment carry it.
PANOPTIC_VOID_ID = 0


def read_panoptic_png(pan_file: str, image_hw, image_file: str) -> np.ndarray:
    """Read a COCO-panoptic PNG as HxWx3 uint8 RGB, checked against its image's size.

    The RGB form is what gets augmented (nearest-neighbour keeps every colour, hence every
    segment id, intact); ids are decoded with ``rgb2id`` afterwards.
    """
    pan_rgb = read_image_checked(pan_file, format="RGB")
    check_same_size(image_hw, image_file, pan_rgb.shape, pan_file, "Panoptic PNG")
    return pan_rgb


def check_segments(segments_info, num_classes: int, pan_file: str) -> None:
    """Every segment needs a non-zero "id" and a "category_id" in 0..num_classes-1."""
    for seg in segments_info:
        if "id" not in seg or "category_id" not in seg:
            raise ValueError(
                f"A segment of {pan_file!r} lacks 'id' or 'category_id': keys {sorted(seg)}"
            )
        if seg["id"] == PANOPTIC_VOID_ID:
            raise ValueError(f"Segment id 0 in {pan_file!r} is the VOID colour, not a segment")
        check_category_ids([seg["category_id"]], num_classes, pan_file)


def segment_targets(pan_ids: np.ndarray, segments_info, image_hw) -> Instances:
    """One mask per non-crowd segment: ``gt_classes`` = category_id, ``gt_masks`` bool.

    Segments with no pixel left (cropped away) are dropped: an empty target mask with a class
    asks the model for an object that is not in the picture.
    """
    pan_ids = torch.as_tensor(pan_ids)
    kept = [s for s in segments_info if not s.get("iscrowd", 0)]
    classes = torch.tensor([s["category_id"] for s in kept], dtype=torch.int64)
    ids = torch.tensor([s["id"] for s in kept], dtype=pan_ids.dtype)
    masks = pan_ids[None] == ids[:, None, None]  # (N, H, W)
    present = masks.flatten(1).any(1)
    instances = Instances(tuple(image_hw))
    instances.gt_classes = classes[present]
    instances.gt_masks = masks[present]
    return instances


def _semantic_from_panoptic(pan_ids: np.ndarray, segments_info, ignore_label: int):
    # A category map for the category-area crop when no semantic PNG exists; crowd and VOID
    # pixels count as ignore, as in the semantic PNGs derived from COCO panoptic.
    sem = np.full(pan_ids.shape, ignore_label, dtype=np.float64)
    for seg in segments_info:
        if not seg.get("iscrowd", 0):
            sem[pan_ids == seg["id"]] = seg["category_id"]
    return sem


@register_dataset_mapper("mask_former_panoptic")
class MaskFormerPanopticDatasetMapper(MaskFormerSemanticDatasetMapper):
    """Turns a panoptic dataset dict into MaskFormer's training input.

    Reads ``pan_seg_file_name`` + ``segments_info`` (category ids already contiguous, as
    detectron2's panoptic loaders produce them) and, when present, ``sem_seg_file_name``.
    Augmentations are those of the semantic mapper. Returns "image", "instances" (one mask
    per non-crowd segment with pixels left after augmentation) and "sem_seg" when the
    semantic PNG exists. Padding uses 128 for the image, the ignore label for "sem_seg";
    padded pixels belong to no segment. Constructor arguments and ``from_config`` are the
    semantic mapper's, inherited.
    """

    def __call__(self, dataset_dict: dict) -> dict:
        """Map one dataset dict (left unmodified) to a new dict of training tensors."""
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict["file_name"]
        if "annotations" in dataset_dict:
            raise ValueError(
                f"{file_name!r}: a panoptic dict must not carry 'annotations'; its segments "
                "belong in 'segments_info'"
            )
        if "pan_seg_file_name" not in dataset_dict or "segments_info" not in dataset_dict:
            raise ValueError(
                f"{file_name!r}: a panoptic dict needs 'pan_seg_file_name' and 'segments_info'"
            )
        image = self._read_image(dataset_dict)
        pan_file = dataset_dict.pop("pan_seg_file_name")
        segments_info = dataset_dict["segments_info"]
        pan_rgb = read_panoptic_png(pan_file, image.shape, file_name)
        check_segments(segments_info, self.num_classes, pan_file)

        sem_file = dataset_dict.pop("sem_seg_file_name", None)
        if sem_file is not None:
            sem_seg = read_label_map(sem_file, image.shape, file_name)
            check_category_ids(np.unique(sem_seg), self.num_classes, sem_file, self.ignore_label)
        else:
            sem_seg = _semantic_from_panoptic(rgb2id(pan_rgb), segments_info, self.ignore_label)

        aug_input, transforms = self._augment(image, sem_seg=sem_seg)
        pan_ids = rgb2id(transforms.apply_segmentation(pan_rgb)).astype(np.int64)

        out_hw = self._padded_size(aug_input.image.shape[:2])
        dataset_dict["image"] = self._image_tensor(aug_input.image, out_hw)
        if sem_file is not None:
            dataset_dict["sem_seg"] = self._label_tensor(aug_input.sem_seg, out_hw)
        pan_ids = pad_bottom_right(torch.as_tensor(pan_ids), *out_hw, value=PANOPTIC_VOID_ID)
        dataset_dict["instances"] = segment_targets(pan_ids, segments_info, out_hw)
        return dataset_dict
