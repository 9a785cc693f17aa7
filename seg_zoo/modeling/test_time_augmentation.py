"""Multi-scale + flip test-time augmentation for semantic segmentation (``TEST.AUG``)."""

from __future__ import annotations

import torch
from detectron2.data.transforms import HFlipTransform
from detectron2.modeling.test_time_augmentation import DatasetMapperTTA
from torch import nn


class SemanticSegmentorWithTTA(nn.Module):
    """Average a semantic model's ``sem_seg`` over detectron2's TTA views of each image.

    The views are ``DatasetMapperTTA``'s (every ``TEST.AUG.MIN_SIZES`` short side, capped by
    ``TEST.AUG.MAX_SIZE``, each also flipped when ``TEST.AUG.FLIP``). The model returns
    ``sem_seg`` at the original size for every view, so a flipped view's scores are flipped
    back and all views are averaged, as Mask2Former's evaluation with TTA does.
    """

    def __init__(self, cfg, model: nn.Module, tta_mapper=None):
        super().__init__()
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        self.model = model
        self.tta_mapper = tta_mapper if tta_mapper is not None else DatasetMapperTTA(cfg)

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        return [self._inference_one_image(x) for x in batched_inputs]

    @torch.no_grad()
    def _inference_one_image(self, inputs: dict) -> dict:
        views = self.tta_mapper(inputs)
        if not views:
            raise ValueError("TEST.AUG gives no view: set TEST.AUG.MIN_SIZES")
        total = None
        for view in views:
            transforms = view.pop("transforms")
            scores = self.model([view])[0]["sem_seg"]  # (K, H, W) at the original size
            if any(isinstance(t, HFlipTransform) for t in transforms.transforms):
                scores = scores.flip(dims=[2])
            total = scores if total is None else total + scores
        return {"sem_seg": total / len(views)}
