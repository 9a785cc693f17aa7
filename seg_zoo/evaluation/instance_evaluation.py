"""Mask AP for panoptic datasets whose thing classes are not the first contiguous ids."""

from __future__ import annotations

import logging

import torch
from detectron2.data.catalog import Metadata
from detectron2.evaluation import COCOEvaluator

logger = logging.getLogger(__name__)


class InstanceSegEvaluator(COCOEvaluator):
    """detectron2's ``COCOEvaluator`` for models whose class ids index ALL categories.

    Mask2Former's panoptic datasets (ADE20K, Mapillary Vistas) number things and stuff in one
    contiguous range, so ``thing_dataset_id_to_contiguous_id`` maps to a scattered subset of
    it (ADE20K's "bed" is 7 of 150). ``COCOEvaluator`` requires the thing ids to be exactly
    0..T-1. This evaluator re-indexes the thing ids densely (in contiguous-id order, which is
    the order of ``thing_classes``), maps each prediction's class the same way, and drops
    predictions of stuff classes (they have no COCO category) with a count in the log.
    """

    def __init__(self, dataset_name: str, *args, **kwargs):
        super().__init__(dataset_name, *args, **kwargs)
        meta = self._metadata
        if not hasattr(meta, "thing_dataset_id_to_contiguous_id"):
            raise ValueError(
                f"InstanceSegEvaluator: metadata of {dataset_name!r} has no "
                "thing_dataset_id_to_contiguous_id; it is needed to map classes to COCO ids"
            )
        sparse = meta.thing_dataset_id_to_contiguous_id
        order = sorted(sparse.items(), key=lambda kv: kv[1])  # (dataset id, contiguous id)
        # contiguous id (model output) -> dense thing index 0..T-1
        self._to_dense = {contiguous: i for i, (_, contiguous) in enumerate(order)}
        dense_meta = meta.as_dict()
        dense_meta["thing_dataset_id_to_contiguous_id"] = {
            dataset_id: i for i, (dataset_id, _) in enumerate(order)
        }
        self._metadata = Metadata(**dense_meta)
        self._dropped = 0

    def reset(self):
        super().reset()
        self._dropped = 0

    def process(self, inputs, outputs):
        remapped = []
        for output in outputs:
            if "instances" in output:
                instances = output["instances"]
                classes = instances.pred_classes.tolist()
                keep = [c in self._to_dense for c in classes]
                self._dropped += len(keep) - sum(keep)
                instances = instances[torch.tensor(keep, dtype=torch.bool)]
                instances.pred_classes = instances.pred_classes.new_tensor(
                    [self._to_dense[c] for c in instances.pred_classes.tolist()]
                ).long()
                output = {**output, "instances": instances}
            remapped.append(output)
        super().process(inputs, remapped)

    def evaluate(self, img_ids=None):
        if self._dropped:
            logger.info(
                "InstanceSegEvaluator: %d predictions of non-thing classes were not scored",
                self._dropped,
            )
        return super().evaluate(img_ids)
