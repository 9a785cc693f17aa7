"""Checked inputs of the per-pixel semantic models (UperNet, Segmenter)."""

from __future__ import annotations

import torch
from detectron2.structures import ImageList


def register_pixel_stats(module: torch.nn.Module, pixel_mean, pixel_std) -> None:
    """Non-persistent (C, 1, 1) buffers ``pixel_mean``/``pixel_std`` (not in checkpoints)."""
    if len(pixel_mean) != len(pixel_std):
        raise ValueError(
            f"MODEL.PIXEL_MEAN ({len(pixel_mean)} values) and MODEL.PIXEL_STD "
            f"({len(pixel_std)} values) must have one value per channel each"
        )
    module.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
    module.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)


def normalised_images(
    batched_inputs: list[dict], pixel_mean: torch.Tensor, pixel_std: torch.Tensor, owner: str
) -> list[torch.Tensor]:
    """Each input's "image" (C, H, W) on the model's device, normalised; errors name the input."""
    channels = pixel_mean.shape[0]
    images = []
    for i, x in enumerate(batched_inputs):
        if "image" not in x:
            raise KeyError(f"{owner}: input {i} has no 'image' (keys: {sorted(x)})")
        image = x["image"]
        if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != channels:
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image)
            raise ValueError(
                f"{owner}: input {i} 'image' must be a ({channels}, H, W) tensor, got {shape}"
            )
        images.append((image.to(pixel_mean.device).float() - pixel_mean) / pixel_std)
    return images


def semantic_targets(
    batched_inputs: list[dict],
    images: ImageList,
    *,
    size_divisibility: int,
    ignore_value: int,
    num_classes: int,
    owner: str,
) -> torch.Tensor:
    """The "sem_seg" label maps padded like ``images`` (with ``ignore_value``), (N, H, W) long.

    Labels outside [0, num_classes) other than ``ignore_value`` are an error here rather than
    an index error (or a CUDA assert) inside the loss.
    """
    device = images.tensor.device
    targets = []
    for i, (x, size) in enumerate(zip(batched_inputs, images.image_sizes)):
        if "sem_seg" not in x:
            raise KeyError(
                f"{owner}: training input {i} has no 'sem_seg' label map; use a mapper that "
                f"writes one (INPUT.DATASET_MAPPER_NAME 'mask_former_semantic')"
            )
        sem_seg = x["sem_seg"]
        if sem_seg.dtype.is_floating_point or sem_seg.dtype == torch.bool:
            raise TypeError(
                f"{owner}: input {i} 'sem_seg' must hold integer labels, got {sem_seg.dtype}"
            )
        if tuple(sem_seg.shape) != tuple(size):
            raise ValueError(
                f"{owner}: input {i} 'sem_seg' has shape {tuple(sem_seg.shape)} but its image "
                f"is {tuple(size)}"
            )
        targets.append(sem_seg.to(device).long())
    padded = ImageList.from_tensors(targets, size_divisibility, pad_value=ignore_value).tensor
    labelled = padded[padded != ignore_value]
    if labelled.numel() and (labelled.min() < 0 or labelled.max() >= num_classes):
        raise ValueError(
            f"{owner}: 'sem_seg' labels must be in [0, {num_classes}) or {ignore_value} "
            f"(ignored); found {int(labelled.min())}..{int(labelled.max())} "
            "(MODEL.SEM_SEG_HEAD.NUM_CLASSES / IGNORE_VALUE)"
        )
    return padded
