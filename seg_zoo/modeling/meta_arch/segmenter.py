"""Segmenter (Strudel et al., ICCV 2021): a plain ViT encoder and a linear or mask decoder.

Training sees fixed-size crops: the batch is padded to the patch size, the decoder's patch-level
logits are upsampled bilinearly to the padded input and scored by per-pixel cross-entropy.
Inference follows the official ``inference``/``sliding_window``/``merge_windows``: square
windows of ``WINDOW_SIZE`` every ``WINDOW_STRIDE`` pixels, the last one in each direction
moved back to touch the border, logits averaged where windows overlap, then resized to the
requested output size and turned into probabilities.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone, build_sem_seg_head
from detectron2.structures import ImageList
from torch import nn

from ..heads.upernet import per_pixel_cross_entropy
from .semantic_inputs import normalised_images, register_pixel_stats, semantic_targets

__all__ = ["Segmenter", "sliding_window_anchors", "sliding_window_logits"]


def sliding_window_anchors(length: int, window: int, stride: int) -> list[int]:
    """Window starts along one side: every ``stride``, the last one ending at the border.

    ``length`` must be at least ``window`` (smaller images are padded first).
    """
    if window <= 0 or stride <= 0:
        raise ValueError(f"window ({window}) and stride ({stride}) must be positive")
    if length < window:
        raise ValueError(f"side {length} is shorter than the window {window}; pad it first")
    return [a for a in range(0, length, stride) if a < length - window] + [length - window]


def sliding_window_logits(
    image: torch.Tensor,
    predict: Callable[[torch.Tensor], torch.Tensor],
    window: int,
    stride: int,
    batch_size: int = 4,
) -> torch.Tensor:
    """Logits (K, H, W) of one normalised image (C, H, W), averaged over sliding windows.

    ``predict`` maps a batch of windows (B, C, window, window) to logits (B, K, window,
    window). A side shorter than the window is padded with zeros (the mean colour after
    normalisation) at the bottom/right, and the padding is cropped from the result.
    """
    if image.dim() != 3:
        raise ValueError(f"expected one image (C, H, W), got shape {tuple(image.shape)}")
    _, height, width = image.shape
    padded = F.pad(image, (0, max(0, window - width), 0, max(0, window - height)))
    ph, pw = padded.shape[-2:]
    anchors = [
        (y, x)
        for y in sliding_window_anchors(ph, window, stride)
        for x in sliding_window_anchors(pw, window, stride)
    ]
    total = None
    count = padded.new_zeros((1, ph, pw))
    for i in range(0, len(anchors), batch_size):
        chunk = anchors[i : i + batch_size]
        crops = torch.stack([padded[:, y : y + window, x : x + window] for y, x in chunk])
        logits = predict(crops)  # (B, K, window, window)
        if total is None:
            total = padded.new_zeros((logits.shape[1], ph, pw))
        for (y, x), lg in zip(chunk, logits):
            total[:, y : y + window, x : x + window] += lg
            count[:, y : y + window, x : x + window] += 1
    return (total / count)[:, :height, :width]


@META_ARCH_REGISTRY.register()
class Segmenter(nn.Module):
    """ViT backbone + Segmenter decoder, per-pixel cross-entropy, sliding-window inference.

    Training returns ``{"loss_sem_seg"}``; inference returns per image
    ``{"sem_seg": (K, height, width)}`` softmax probabilities at the size the input dict asks
    ("height"/"width", else the image's own), so ``TEST.AUG`` can average them.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        num_classes: int,
        pixel_mean: tuple[float, ...],
        pixel_std: tuple[float, ...],
        patch_size: int,
        window_size: int = 512,
        window_stride: int = 512,
        ignore_value: int = 255,
        window_batch_size: int = 4,
    ):
        """
        Args:
            backbone: gives the patch-token map the head reads.
            sem_seg_head: maps the backbone's features to (N, K, H/p, W/p) logits.
            num_classes: K; labels other than ``ignore_value`` must lie in [0, K).
            pixel_mean, pixel_std: input normalisation, per channel (0-255 scale).
            patch_size: inputs are zero-padded (after normalisation) to a multiple of it.
            window_size, window_stride: of sliding-window inference.
            ignore_value: label of pixels that take no loss (also the label padding).
            window_batch_size: windows predicted together in inference.
        """
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.num_classes = num_classes
        self.patch_size = patch_size
        if window_size <= 0 or window_stride <= 0:
            raise ValueError(
                f"MODEL.SEGMENTER.WINDOW_SIZE ({window_size}) and WINDOW_STRIDE "
                f"({window_stride}) must be positive"
            )
        self.window_size = window_size
        self.window_stride = window_stride
        self.window_batch_size = window_batch_size
        self.ignore_value = ignore_value
        register_pixel_stats(self, pixel_mean, pixel_std)

    @classmethod
    def from_config(cls, cfg) -> dict:
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        seg = cfg.MODEL.SEGMENTER
        if seg.IN_FEATURE not in shapes:
            raise KeyError(
                f"MODEL.SEGMENTER.IN_FEATURE {seg.IN_FEATURE!r} is not an output of backbone "
                f"{cfg.MODEL.BACKBONE.NAME} ({sorted(shapes)})"
            )
        return {
            "backbone": backbone,
            "sem_seg_head": build_sem_seg_head(cfg, shapes),
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "pixel_mean": tuple(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": tuple(cfg.MODEL.PIXEL_STD),
            # the ViT's stride is its patch size
            "patch_size": shapes[seg.IN_FEATURE].stride,
            "window_size": seg.WINDOW_SIZE,
            "window_stride": seg.WINDOW_STRIDE,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, H, W) of normalised images (N, C, H, W), any H and W.

        The batch is padded to the patch size, the decoder's patch-level logits upsampled to
        the padded size, and the padding cropped, as the official ``Segmenter.forward``.
        """
        height, width = images.shape[-2:]
        p = self.patch_size
        padded = F.pad(images, (0, -width % p, 0, -height % p))
        logits = self.sem_seg_head(self.backbone(padded))
        if logits.dim() != 4 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"Segmenter: the decoder gave logits {tuple(logits.shape)}, expected "
                f"(N, {self.num_classes}, h, w) (MODEL.SEM_SEG_HEAD.NUM_CLASSES)"
            )
        logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear")
        return logits[:, :, :height, :width]

    def _normalised(self, batched_inputs: list[dict]) -> list[torch.Tensor]:
        return normalised_images(batched_inputs, self.pixel_mean, self.pixel_std, "Segmenter")

    def _targets(self, batched_inputs: list[dict], images: ImageList) -> torch.Tensor:
        return semantic_targets(
            batched_inputs,
            images,
            size_divisibility=self.patch_size,
            ignore_value=self.ignore_value,
            num_classes=self.num_classes,
            owner="Segmenter",
        )

    def forward(self, batched_inputs: list[dict]):
        """
        Args:
            batched_inputs: per image, "image" (C, H, W) and, in training, "sem_seg" (H, W)
                integer labels; in inference, optionally "height" and "width" of the output.
        """
        images = self._normalised(batched_inputs)
        if self.training:
            batch = ImageList.from_tensors(images, self.patch_size)
            targets = self._targets(batched_inputs, batch)
            logits = self.predict_logits(batch.tensor)
            return {"loss_sem_seg": per_pixel_cross_entropy(logits, targets, self.ignore_value)}

        results = []
        for x, image in zip(batched_inputs, images):
            logits = sliding_window_logits(
                image,
                self.predict_logits,
                self.window_size,
                self.window_stride,
                self.window_batch_size,
            )
            height = x.get("height", image.shape[-2])
            width = x.get("width", image.shape[-1])
            if tuple(logits.shape[-2:]) != (height, width):
                # (a same-size bilinear resize is the identity: skipping it saves a full pass)
                logits = F.interpolate(logits[None], size=(height, width), mode="bilinear")[0]
            results.append({"sem_seg": logits.softmax(dim=0)})
        return results
