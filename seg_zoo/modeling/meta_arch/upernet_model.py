"""UperNet for semantic segmentation on any detectron2 backbone (Swin paper's ADE20K system).

The backbone (Swin, ResNet, a ViT behind a simple feature pyramid, ...) is whatever
``MODEL.BACKBONE.NAME`` builds; the decode head is ``MODEL.SEM_SEG_HEAD.NAME`` (normally
``UperNetHead``) fed by the features ``MODEL.UPERNET.IN_FEATURES`` names; the auxiliary FCN head
reads ``MODEL.UPERNET.AUX_IN_FEATURE`` and only adds a loss in training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone, build_sem_seg_head
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList
from torch import nn

from ..heads.upernet import FCNAuxHead, per_pixel_cross_entropy
from .semantic_inputs import normalised_images, register_pixel_stats, semantic_targets


@META_ARCH_REGISTRY.register()
class UperNet(nn.Module):
    """Backbone + UperNet decode head (+ auxiliary FCN head in training), per-pixel CE.

    Training returns ``{"loss_sem_seg", "loss_sem_seg_aux"}`` (already weighted); inference
    returns per image ``{"sem_seg": (K, height, width)}`` class probabilities in the size the
    input dict asks for ("height"/"width", else the image's own), as detectron2's
    ``SemanticSegmentor`` does (it returns logits; probabilities average better under TTA).
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        aux_head: nn.Module | None,
        num_classes: int,
        pixel_mean: tuple[float, ...],
        pixel_std: tuple[float, ...],
        size_divisibility: int = 32,
        ignore_value: int = 255,
        loss_weight: float = 1.0,
        aux_loss_weight: float = 0.4,
        align_corners: bool = False,
    ):
        """
        Args:
            backbone: any detectron2 backbone.
            sem_seg_head: module whose ``layers(features)`` gives (N, K, h, w) logits.
            aux_head: module mapping the features to auxiliary logits, or None.
            num_classes: K; labels other than ``ignore_value`` must lie in [0, K).
            pixel_mean, pixel_std: input normalisation, per channel.
            size_divisibility: images (and labels) are padded to a multiple of it; negative
                means the backbone's own ``size_divisibility``.
            ignore_value: label of pixels that take no loss (also the label padding).
            loss_weight, aux_loss_weight: weights of the main and auxiliary cross-entropies.
            align_corners: of the bilinear resizes of the logits.
        """
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.aux_head = aux_head
        self.num_classes = num_classes
        if size_divisibility < 0:
            size_divisibility = backbone.size_divisibility
        self.size_divisibility = size_divisibility
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.aux_loss_weight = aux_loss_weight
        self.align_corners = align_corners
        register_pixel_stats(self, pixel_mean, pixel_std)

    @classmethod
    def from_config(cls, cfg) -> dict:
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        up = cfg.MODEL.UPERNET
        aux = FCNAuxHead(cfg, shapes) if up.AUX_LOSS_WEIGHT > 0 else None
        return {
            "backbone": backbone,
            "sem_seg_head": build_sem_seg_head(cfg, shapes),
            "aux_head": aux,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "pixel_mean": tuple(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": tuple(cfg.MODEL.PIXEL_STD),
            "size_divisibility": up.SIZE_DIVISIBILITY,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "loss_weight": cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT,
            "aux_loss_weight": up.AUX_LOSS_WEIGHT,
            "align_corners": up.ALIGN_CORNERS,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def _images(self, batched_inputs: list[dict]) -> ImageList:
        images = normalised_images(batched_inputs, self.pixel_mean, self.pixel_std, "UperNet")
        return ImageList.from_tensors(images, self.size_divisibility)

    def _targets(self, batched_inputs: list[dict], images: ImageList) -> torch.Tensor:
        return semantic_targets(
            batched_inputs,
            images,
            size_divisibility=self.size_divisibility,
            ignore_value=self.ignore_value,
            num_classes=self.num_classes,
            owner="UperNet",
        )

    def forward(self, batched_inputs: list[dict]):
        """
        Args:
            batched_inputs: per image, "image" (C, H, W) and, in training, "sem_seg" (H, W)
                integer labels; in inference, optionally "height" and "width" of the output.
        """
        images = self._images(batched_inputs)
        features = self.backbone(images.tensor)
        logits = self.sem_seg_head.layers(features)

        if self.training:
            targets = self._targets(batched_inputs, images)
            ce = per_pixel_cross_entropy(logits, targets, self.ignore_value, self.align_corners)
            losses = {"loss_sem_seg": ce * self.loss_weight}
            if self.aux_head is not None:
                aux = per_pixel_cross_entropy(
                    self.aux_head(features), targets, self.ignore_value, self.align_corners
                )
                losses["loss_sem_seg_aux"] = aux * self.aux_loss_weight
            return losses

        # Upsample to the padded batch, then crop each image's own area and resize it.
        logits = F.interpolate(
            logits, size=images.tensor.shape[-2:], mode="bilinear", align_corners=self.align_corners
        )
        results = []
        for result, x, size in zip(logits, batched_inputs, images.image_sizes):
            height = x.get("height", size[0])
            width = x.get("width", size[1])
            result = sem_seg_postprocess(result, size, height, width)
            results.append({"sem_seg": result.softmax(dim=0)})
        return results
