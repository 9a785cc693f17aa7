"""MaskFormer's training mapper for semantic segmentation (``mask_former_semantic``)."""

from __future__ import annotations

import copy

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.structures import Instances

from ..augmentation import (
    build_resize_crop_augmentations,
    check_category_ids,
    pad_bottom_right,
    read_label_map,
)
from . import register_dataset_mapper
from ._base import PaddedDatasetMapper, num_valid_classes, train_metadata

# The two config helpers live in ._base and stay importable from here, where they started.
__all__ = ["MaskFormerSemanticDatasetMapper", "train_metadata", "num_valid_classes"]


def per_class_targets(label: torch.Tensor, ignore_label: int) -> Instances:
    """One binary mask per class present in ``label`` (H, W), ignore excluded, as Instances."""
    classes = torch.unique(label)
    classes = classes[classes != ignore_label]
    instances = Instances(tuple(label.shape))
    instances.gt_classes = classes.to(torch.int64)
    # (K, H, W) bool; K = 0 gives the (0, H, W) an image with only ignore pixels needs.
    instances.gt_masks = label[None] == classes[:, None, None]
    return instances


@register_dataset_mapper("mask_former_semantic")
class MaskFormerSemanticDatasetMapper(PaddedDatasetMapper):
    """Turns a semantic-segmentation dataset dict into MaskFormer's training input.

    Reads ``file_name`` and ``sem_seg_file_name``, applies resize / category-area crop /
    optional SSD colour / flip to both, pads to ``size_divisibility``, and returns the dict with
    "image" (uint8 (3, H, W)), "sem_seg" (int64 (H, W)) and "instances" (``gt_classes`` and
    one ``gt_masks`` bool mask per class present). Training only: evaluation reads images with
    detectron2's ``DatasetMapper``.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list,
        image_format: str,
        ignore_label: int,
        size_divisibility: int,
        num_classes: int,
    ):
        """
        Args:
            is_train: must be True (see the class docstring).
            augmentations: detectron2 augmentations/transforms applied to image and labels.
            image_format: channel order for ``read_image`` ("BGR", "RGB", ...).
            ignore_label: label value that is not a class; also the padding label.
            size_divisibility: pad height and width up to multiples of it; <= 0 disables.
            num_classes: valid labels are 0..num_classes-1 (plus ``ignore_label``).
        """
        super().__init__(
            is_train,
            augmentations=augmentations,
            image_format=image_format,
            size_divisibility=size_divisibility,
            num_classes=num_classes,
        )
        self.ignore_label = ignore_label

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        meta = train_metadata(cfg)
        return {
            "is_train": is_train,
            "augmentations": build_resize_crop_augmentations(cfg, category_area_crop=True),
            "image_format": cfg.INPUT.FORMAT,
            # Datasets that do not state their ignore label use the one the loss ignores.
            "ignore_label": meta.get("ignore_label", cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE),
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
            "num_classes": num_valid_classes(cfg, meta, "stuff_classes"),
        }

    # -- shared with the panoptic mapper ----------------------------------------------------
    def _label_tensor(self, label: np.ndarray, out_hw) -> torch.Tensor:
        label = torch.as_tensor(label.astype(np.int64))
        return pad_bottom_right(label, *out_hw, value=self.ignore_label)

    def __call__(self, dataset_dict: dict) -> dict:
        """Map one dataset dict (left unmodified) to a new dict of training tensors."""
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict["file_name"]
        if "annotations" in dataset_dict:
            raise ValueError(
                f"{file_name!r}: a semantic-segmentation dict must not carry 'annotations'; "
                "use an instance or panoptic mapper for those"
            )
        if "sem_seg_file_name" not in dataset_dict:
            raise ValueError(f"{file_name!r}: the dataset dict has no 'sem_seg_file_name'")
        image = self._read_image(dataset_dict)
        label_file = dataset_dict.pop("sem_seg_file_name")
        label = read_label_map(label_file, image.shape, file_name)
        check_category_ids(np.unique(label), self.num_classes, label_file, self.ignore_label)

        aug_input, _ = self._augment(image, sem_seg=label)

        out_hw = self._padded_size(aug_input.image.shape[:2])
        dataset_dict["image"] = self._image_tensor(aug_input.image, out_hw)
        sem_seg = self._label_tensor(aug_input.sem_seg, out_hw)
        dataset_dict["sem_seg"] = sem_seg
        dataset_dict["instances"] = per_class_targets(sem_seg, self.ignore_label)
        return dataset_dict
