"""What every seg_zoo dataset mapper does the same way, written once.

All five mappers copy the dict, read the image (with errors naming the file), run a detectron2
``AugmentationList`` over it and turn the result into a (3, H, W) uint8 tensor; the MaskFormer
ones then pad to ``INPUT.SIZE_DIVISIBILITY``, the LSJ ones to a fixed square. Only the ground
truth each reads, and the targets built from it, differ; those stay in the mapper modules.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from ..augmentation import pad_bottom_right, pad_to_divisibility, read_image_checked

__all__ = [
    "IMAGE_PAD_VALUE",
    "BaseDatasetMapper",
    "image_to_tensor",
    "num_valid_classes",
    "read_dataset_image",
    "train_metadata",
]

# The official mapper pads images with this grey level; the model normalises it like any pixel.
IMAGE_PAD_VALUE = 128


def train_metadata(cfg):
    """Metadata of ``DATASETS.TRAIN[0]``, which the training mappers take as representative."""
    if len(cfg.DATASETS.TRAIN) == 0:
        raise ValueError("DATASETS.TRAIN is empty; the training mappers read its metadata")
    return MetadataCatalog.get(cfg.DATASETS.TRAIN[0])


def num_valid_classes(cfg, metadata, class_key: str) -> int:
    """Number of valid contiguous category ids: NUM_CLASSES, capped by the metadata's list.

    An id that the model has no output for, or that the dataset has no name for, is a data
    error, so the smaller of the two decides.
    """
    n = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    names = metadata.get(class_key, None) if metadata is not None else None
    return min(n, len(names)) if names is not None else n


def read_dataset_image(dataset_dict: dict, image_format: str) -> np.ndarray:
    """The dict's "file_name" read in ``image_format``, checked against its "height"/"width"."""
    image = read_image_checked(dataset_dict["file_name"], format=image_format)
    utils.check_image_size(dataset_dict, image)
    return image


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWxC array -> contiguous (C, H, W) tensor of the same dtype."""
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


class BaseDatasetMapper:
    """Holds the settings every mapper has and the steps they share.

    Subclasses keep their own ``@configurable`` ``__init__`` (their public signature) and call
    this one with the common arguments. ``training_only`` mappers refuse ``is_train=False``:
    evaluation reads images with detectron2's ``DatasetMapper`` instead.
    """

    training_only: bool = True

    def __init__(self, is_train: bool, *, augmentations: list, image_format: str, num_classes: int):
        if self.training_only and not is_train:
            raise ValueError(
                f"{type(self).__name__} is for training only; evaluation uses detectron2's "
                "DatasetMapper (build the test loader without a custom mapper)"
            )
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.num_classes = num_classes
        # Logged under the subclass's module, where a user looking for it would expect it.
        what = "training augmentations" if self.training_only else "augmentations"
        logging.getLogger(type(self).__module__).info(
            f"[{type(self).__name__}] {what}: {augmentations}"
        )

    def _read_image(self, dataset_dict: dict) -> np.ndarray:
        return read_dataset_image(dataset_dict, self.image_format)

    def _augment(self, image: np.ndarray, sem_seg: np.ndarray | None = None):
        """Run the augmentations; returns (the ``AugInput`` after them, their transforms)."""
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        transforms = self.augmentations(aug_input)
        return aug_input, transforms


class PaddedDatasetMapper(BaseDatasetMapper):
    """A mapper that pads its outputs bottom/right up to multiples of ``size_divisibility``."""

    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: list,
        image_format: str,
        size_divisibility: int,
        num_classes: int,
    ):
        super().__init__(
            is_train,
            augmentations=augmentations,
            image_format=image_format,
            num_classes=num_classes,
        )
        self.size_divisibility = size_divisibility

    def _padded_size(self, hw) -> tuple[int, int]:
        return pad_to_divisibility(tuple(hw), self.size_divisibility)

    def _image_tensor(self, image: np.ndarray, out_hw) -> torch.Tensor:
        return pad_bottom_right(image_to_tensor(image), *out_hw, value=IMAGE_PAD_VALUE)
