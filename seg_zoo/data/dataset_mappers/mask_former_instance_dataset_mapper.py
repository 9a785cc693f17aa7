"""MaskFormer's training mapper for instance segmentation (``mask_former_instance``)."""

from __future__ import annotations

import copy

from detectron2.config import configurable
from detectron2.structures import Instances

from ..augmentation import (
    annotations_to_masks,
    build_resize_crop_augmentations,
    pad_bottom_right,
)
from . import register_dataset_mapper
from ._base import PaddedDatasetMapper, num_valid_classes, train_metadata

__all__ = ["MaskFormerInstanceDatasetMapper"]


@register_dataset_mapper("mask_former_instance")
class MaskFormerInstanceDatasetMapper(PaddedDatasetMapper):
    """Turns a COCO-style instance dataset dict into MaskFormer's training input.

    Applies shortest-edge resize, an optional plain random crop, optional SSD colour and flip;
    converts every non-crowd annotation's segmentation (polygons, compressed or uncompressed
    RLE, or an (H, W) binary array) to a mask in the augmented frame; pads image (128) and
    masks (0) to ``size_divisibility``. Returns "image" and "instances" with ``gt_classes``
    and ``gt_masks`` (N, H, W) bool. Training only.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list,
        image_format: str,
        size_divisibility: int,
        num_classes: int,
    ):
        """
        Args:
            is_train: must be True; evaluation uses detectron2's ``DatasetMapper``.
            augmentations: detectron2 augmentations/transforms applied to image and masks.
            image_format: channel order for ``read_image``.
            size_divisibility: pad height and width up to multiples of it; <= 0 disables.
            num_classes: valid category ids are 0..num_classes-1.
        """
        super().__init__(
            is_train,
            augmentations=augmentations,
            image_format=image_format,
            size_divisibility=size_divisibility,
            num_classes=num_classes,
        )

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {
            "is_train": is_train,
            # Instances have no semantic map to constrain the crop with.
            "augmentations": build_resize_crop_augmentations(cfg, category_area_crop=False),
            "image_format": cfg.INPUT.FORMAT,
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
            "num_classes": num_valid_classes(cfg, train_metadata(cfg), "thing_classes"),
        }

    def __call__(self, dataset_dict: dict) -> dict:
        """Map one dataset dict (left unmodified) to a new dict of training tensors."""
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict["file_name"]
        if "annotations" not in dataset_dict:
            raise ValueError(f"{file_name!r}: an instance dataset dict needs 'annotations'")
        image = self._read_image(dataset_dict)
        in_hw = image.shape[:2]

        aug_input, transforms = self._augment(image)
        image = aug_input.image
        gt_classes, gt_masks = annotations_to_masks(
            dataset_dict.pop("annotations"),
            transforms,
            in_hw,
            image.shape[:2],
            self.num_classes,
            file_name,
        )

        out_hw = self._padded_size(image.shape[:2])
        dataset_dict["image"] = self._image_tensor(image, out_hw)
        instances = Instances(out_hw)
        instances.gt_classes = gt_classes
        instances.gt_masks = pad_bottom_right(gt_masks, *out_hw, value=False)
        dataset_dict["instances"] = instances
        return dataset_dict
