"""Large-scale-jitter (LSJ) mapper for COCO instance segmentation (``coco_instance_lsj``).

LSJ (Ghiasi et al., "Simple Copy-Paste", CVPR 2021, Sec. 3) resizes the image so that it fits
a random multiple of IMAGE_SIZE x IMAGE_SIZE, then crops or pads it to exactly that square.
Mask2Former trains its COCO models this way.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Instances

from ..augmentation import annotations_to_masks, build_flip_augmentation
from . import register_dataset_mapper
from ._base import (
    BaseDatasetMapper,
    image_to_tensor,
    num_valid_classes,
    read_dataset_image,
    train_metadata,
)

__all__ = [
    "COCOInstanceNewBaselineDatasetMapper",
    "LSJDatasetMapper",
    "build_lsj_augmentations",
    "lsj_image",
]


def build_lsj_augmentations(cfg, is_train: bool) -> list[T.Augmentation]:
    """Flip (``INPUT.RANDOM_FLIP``) + ResizeScale(MIN_SCALE..MAX_SCALE) + FixedSizeCrop.

    For ``is_train=False`` (the official mappers refuse it) the deterministic part is kept:
    no flip, scale fixed at 1 (longest side fits IMAGE_SIZE), then padding to the square, so
    an evaluation batch still has the shape the model was trained on.
    """
    size = cfg.INPUT.IMAGE_SIZE
    if is_train:
        augs = build_flip_augmentation(cfg)
        min_scale, max_scale = cfg.INPUT.MIN_SCALE, cfg.INPUT.MAX_SCALE
    else:
        augs, min_scale, max_scale = [], 1.0, 1.0
    augs += [
        T.ResizeScale(
            min_scale=min_scale, max_scale=max_scale, target_height=size, target_width=size
        ),
        T.FixedSizeCrop(crop_size=(size, size)),
    ]
    return augs


def lsj_image(dataset_dict: dict, image_format: str, augmentations: T.AugmentationList):
    """Read and augment the image.

    Returns (image HxWxC, transforms, padding_mask (H, W) bool, original (H, W)).

    ``padding_mask`` is True where FixedSizeCrop padded, i.e. where there is no image. It is
    found by sending an all-ones map through the same transforms: whatever value the crop pads
    segmentations with (0 or 255, depending on the detectron2 version), it is not 1.
    """
    image = read_dataset_image(dataset_dict, image_format)
    aug_input = T.AugInput(image)
    transforms = augmentations(aug_input)
    ones = np.ones(image.shape[:2], dtype=np.uint8)
    padding_mask = transforms.apply_segmentation(ones) != 1
    return aug_input.image, transforms, padding_mask, image.shape[:2]


class LSJDatasetMapper(BaseDatasetMapper):
    """What the two LSJ mappers share: settings, config and the image half of the output.

    Subclasses set ``class_key``, the metadata list whose length caps the valid category ids,
    and build their targets in ``__call__`` from :meth:`_map_image`'s results.
    """

    # LSJ also serves evaluation (deterministic resize + pad), unlike the MaskFormer mappers.
    training_only = False
    class_key: str = "thing_classes"

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list,
        image_format: str,
        num_classes: int,
    ):
        """
        Args:
            is_train: whether to build training targets.
            augmentations: the LSJ augmentations (see :func:`build_lsj_augmentations`).
            image_format: channel order for ``read_image``.
            num_classes: valid category ids are 0..num_classes-1.
        """
        super().__init__(
            is_train,
            augmentations=augmentations,
            image_format=image_format,
            num_classes=num_classes,
        )

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        meta = train_metadata(cfg) if is_train else None
        return {
            "is_train": is_train,
            "augmentations": build_lsj_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "num_classes": num_valid_classes(cfg, meta, cls.class_key),
        }

    def _map_image(self, dataset_dict: dict):
        """Copy the dict and add "image" (3, S, S) and "padding_mask" (S, S) to the copy.

        Returns (the copy, the augmented image HxWxC, the transforms, the original (H, W)).
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        image, transforms, padding_mask, in_hw = lsj_image(
            dataset_dict, self.image_format, self.augmentations
        )
        dataset_dict["image"] = image_to_tensor(image)
        dataset_dict["padding_mask"] = torch.as_tensor(np.ascontiguousarray(padding_mask))
        return dataset_dict, image, transforms, in_hw


@register_dataset_mapper("coco_instance_lsj")
class COCOInstanceNewBaselineDatasetMapper(LSJDatasetMapper):
    """COCO instance dict -> LSJ-augmented "image" (3, S, S) uint8, "padding_mask" (S, S) bool
    and, in training, "instances" with ``gt_classes``, ``gt_masks`` (N, S, S) bool and
    ``gt_boxes`` (tight boxes of the augmented masks). Instances that the crop removed
    entirely and crowd annotations are dropped. With ``is_train=False`` annotations are dropped.
    """

    class_key = "thing_classes"

    def __call__(self, dataset_dict: dict) -> dict:
        """Map one dataset dict (left unmodified) to a new dict of tensors."""
        dataset_dict, image, transforms, in_hw = self._map_image(dataset_dict)
        annotations = dataset_dict.pop("annotations", None)
        if not self.is_train or annotations is None:
            return dataset_dict

        out_hw = image.shape[:2]
        gt_classes, gt_masks = annotations_to_masks(
            annotations, transforms, in_hw, out_hw, self.num_classes, dataset_dict["file_name"]
        )
        instances = Instances(out_hw)
        instances.gt_classes = gt_classes
        instances.gt_masks = gt_masks
        # Boxes come from the augmented masks: a cropped object's box is not the crop of its box.
        instances.gt_boxes = BitMasks(gt_masks).get_bounding_boxes()
        dataset_dict["instances"] = instances
        return dataset_dict
