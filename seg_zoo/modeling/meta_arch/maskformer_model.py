"""The mask-classification meta-architecture of MaskFormer and Mask2Former."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone, build_sem_seg_head
from detectron2.modeling.backbone import Backbone
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import BitMasks, ImageList, Instances
from detectron2.utils.memory import retry_if_cuda_oom
from torch import nn

from ..criterion import SetCriterion
from ..matcher import HungarianMatcher
from .postprocessing import instance_inference, panoptic_inference, semantic_inference

__all__ = ["MaskFormer"]


@META_ARCH_REGISTRY.register()
class MaskFormer(nn.Module):
    """Backbone + MaskFormer head; trained with a set criterion, decoded per task at test time."""

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        criterion: nn.Module,
        num_queries: int,
        object_mask_threshold: float,
        overlap_threshold: float,
        metadata,
        size_divisibility: int,
        sem_seg_postprocess_before_inference: bool,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        semantic_on: bool,
        panoptic_on: bool,
        instance_on: bool,
        test_topk_per_image: int,
    ):
        """
        Args:
            backbone: a detectron2 backbone.
            sem_seg_head: maps backbone features to "pred_logits", "pred_masks" and
                "aux_outputs" (e.g. :class:`MaskFormerHead`); has ``num_classes``.
            criterion: maps (outputs, targets) to named losses; has ``weight_dict``.
            num_queries: Q, the number of object queries.
            object_mask_threshold: panoptic inference keeps queries scoring above it.
            overlap_threshold: panoptic inference drops segments keeping less of their mask.
            metadata: the training dataset's metadata; its ``thing_dataset_id_to_contiguous_id``
                tells thing classes from stuff.
            size_divisibility: images are padded to a multiple of it; negative means the
                backbone's own ``size_divisibility``.
            sem_seg_postprocess_before_inference: resize mask logits to the output size before
                the semantic inference (needed by panoptic and instance inference) rather than
                resizing the semantic scores after it (cheaper on large images).
            pixel_mean, pixel_std: per-channel input normalisation.
            semantic_on, panoptic_on, instance_on: which outputs inference returns.
            test_topk_per_image: instances kept per image by instance inference.
        """
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.num_queries = num_queries
        self.overlap_threshold = overlap_threshold
        self.object_mask_threshold = object_mask_threshold
        self.metadata = metadata
        if size_divisibility < 0:
            size_divisibility = self.backbone.size_divisibility
        self.size_divisibility = size_divisibility
        self.sem_seg_postprocess_before_inference = sem_seg_postprocess_before_inference
        # Not persistent: the official checkpoints do not hold them.
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.semantic_on = semantic_on
        self.instance_on = instance_on
        self.panoptic_on = panoptic_on
        self.test_topk_per_image = test_topk_per_image
        if not self.semantic_on:
            assert self.sem_seg_postprocess_before_inference

    @classmethod
    def from_config(cls, cfg) -> dict:
        backbone = build_backbone(cfg)
        sem_seg_head = build_sem_seg_head(cfg, backbone.output_shape())

        mf = cfg.MODEL.MASK_FORMER
        class_weight, mask_weight, dice_weight = mf.CLASS_WEIGHT, mf.MASK_WEIGHT, mf.DICE_WEIGHT
        matcher = HungarianMatcher(
            cost_class=class_weight,
            cost_mask=mask_weight,
            cost_dice=dice_weight,
            num_points=mf.TRAIN_NUM_POINTS,
        )
        weight_dict = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
        if mf.DEEP_SUPERVISION:
            # One set of losses per intermediate prediction: DEC_LAYERS counts all of them,
            # the final one included.
            aux_weights = {
                f"{name}_{i}": weight
                for i in range(mf.DEC_LAYERS - 1)
                for name, weight in weight_dict.items()
            }
            weight_dict.update(aux_weights)
        criterion = SetCriterion(
            sem_seg_head.num_classes,
            matcher=matcher,
            weight_dict=weight_dict,
            eos_coef=mf.NO_OBJECT_WEIGHT,
            losses=["labels", "masks"],
            num_points=mf.TRAIN_NUM_POINTS,
            oversample_ratio=mf.OVERSAMPLE_RATIO,
            importance_sample_ratio=mf.IMPORTANCE_SAMPLE_RATIO,
        )
        return {
            "backbone": backbone,
            "sem_seg_head": sem_seg_head,
            "criterion": criterion,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "object_mask_threshold": mf.TEST.OBJECT_MASK_THRESHOLD,
            "overlap_threshold": mf.TEST.OVERLAP_THRESHOLD,
            "metadata": MetadataCatalog.get(cfg.DATASETS.TRAIN[0]),
            "size_divisibility": mf.SIZE_DIVISIBILITY,
            "sem_seg_postprocess_before_inference": (
                mf.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE
                or mf.TEST.PANOPTIC_ON
                or mf.TEST.INSTANCE_ON
            ),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "semantic_on": mf.TEST.SEMANTIC_ON,
            "instance_on": mf.TEST.INSTANCE_ON,
            "panoptic_on": mf.TEST.PANOPTIC_ON,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def thing_class_ids(self) -> list[int]:
        """Contiguous ids of the thing classes (none if the metadata has no things)."""
        mapping = getattr(self.metadata, "thing_dataset_id_to_contiguous_id", None) or {}
        return list(mapping.values())

    def forward(self, batched_inputs: list[dict]):
        """
        Args:
            batched_inputs: per image, "image" (C, H, W) and, in training, "instances" with
                ``gt_classes`` and ``gt_masks`` ((T, H, W) tensor or BitMasks); in inference,
                optionally "height" and "width" of the output.

        Returns:
            In training, the weighted losses. In inference, per image a dict with "sem_seg"
            (K, height, width), "panoptic_seg" ((height, width) ids, segments_info) and
            "instances", as enabled.
        """
        images = [
            (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs
        ]
        images = ImageList.from_tensors(images, self.size_divisibility)
        features = self.backbone(images.tensor)
        outputs = self.sem_seg_head(features)

        if self.training:
            targets = None
            if "instances" in batched_inputs[0]:
                gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
                targets = self.prepare_targets(gt_instances, images)
            losses = self.criterion(outputs, targets)
            weight_dict = self.criterion.weight_dict
            # Losses without a weight are dropped, as in the official model.
            return {k: v * weight_dict[k] for k, v in losses.items() if k in weight_dict}
        return self.inference(outputs, batched_inputs, images)

    def prepare_targets(self, gt_instances: list[Instances], images: ImageList) -> list[dict]:
        """Per image {"labels", "masks"}, the masks zero-padded to the padded image size."""
        h_pad, w_pad = images.tensor.shape[-2:]
        targets = []
        for instances in gt_instances:
            gt_masks = instances.gt_masks
            if isinstance(gt_masks, BitMasks):
                gt_masks = gt_masks.tensor
            padded = gt_masks.new_zeros((gt_masks.shape[0], h_pad, w_pad))
            padded[:, : gt_masks.shape[1], : gt_masks.shape[2]] = gt_masks
            targets.append({"labels": instances.gt_classes, "masks": padded})
        return targets

    def inference(self, outputs: dict, batched_inputs: list[dict], images: ImageList) -> list[dict]:
        mask_cls_results = outputs["pred_logits"]  # (B, Q, K + 1)
        # Mask logits are predicted at 1/4 resolution; bring them to the padded input size.
        mask_pred_results = F.interpolate(
            outputs["pred_masks"],
            size=images.tensor.shape[-2:],
            mode="bilinear",
            align_corners=False,
        )  # (B, Q, H_pad, W_pad)
        del outputs

        processed_results = []
        for mask_cls, mask_pred, input_per_image, image_size in zip(
            mask_cls_results, mask_pred_results, batched_inputs, images.image_sizes
        ):
            height = input_per_image.get("height", image_size[0])
            width = input_per_image.get("width", image_size[1])
            result = {}
            if self.sem_seg_postprocess_before_inference:
                mask_pred = retry_if_cuda_oom(sem_seg_postprocess)(
                    mask_pred, image_size, height, width
                )
                mask_cls = mask_cls.to(mask_pred)
            if self.semantic_on:
                sem_seg = retry_if_cuda_oom(semantic_inference)(mask_cls, mask_pred)
                if not self.sem_seg_postprocess_before_inference:
                    sem_seg = retry_if_cuda_oom(sem_seg_postprocess)(
                        sem_seg, image_size, height, width
                    )
                result["sem_seg"] = sem_seg
            if self.panoptic_on:
                result["panoptic_seg"] = retry_if_cuda_oom(panoptic_inference)(
                    mask_cls,
                    mask_pred,
                    self.object_mask_threshold,
                    self.overlap_threshold,
                    self.thing_class_ids,
                )
            if self.instance_on:
                result["instances"] = retry_if_cuda_oom(instance_inference)(
                    mask_cls,
                    mask_pred,
                    self.test_topk_per_image,
                    self.thing_class_ids if self.panoptic_on else None,
                )
            processed_results.append(result)
        return processed_results
