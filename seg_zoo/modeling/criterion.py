"""Set prediction loss of Mask2Former (Sec. 3.3 and 4.1 of the paper).

After Hungarian matching, matched queries are supervised with the target's class and mask,
unmatched ones with the "no object" class (down-weighted by `eos_coef`). Mask losses are a
sigmoid binary cross-entropy and a dice loss measured on K points per mask chosen by PointRend's
importance sampling, normalised by the number of target masks in the whole (distributed) batch.
Every intermediate decoder layer gets the same losses (deep supervision).
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .point_sampling import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
)

__all__ = ["SetCriterion", "dice_loss", "sigmoid_ce_loss"]


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Sum over masks of 1 - (2|m t| + 1) / (|m| + |t| + 1), m = sigmoid(inputs), / num_masks.

    Args:
        inputs: (N, P) logits.
        targets: (N, P) target values in [0, 1].
        num_masks: normaliser.
    """
    probs = inputs.sigmoid().flatten(1)
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    loss = 1 - (numerator + 1) / (denominator + 1)  # (N,)
    return loss.sum() / num_masks


def sigmoid_ce_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Sum over masks of the point-averaged sigmoid binary cross-entropy, / num_masks.

    Args:
        inputs: (N, P) logits.
        targets: (N, P) target values in [0, 1].
        num_masks: normaliser.
    """
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")  # (N, P)
    return loss.mean(1).sum() / num_masks


def _pad_masks(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Zero-pad (T, h, w) masks at the bottom and right to (T, height, width)."""
    return F.pad(masks, (0, width - masks.shape[-1], 0, height - masks.shape[-2]))


class SetCriterion(nn.Module):
    """Hungarian-matched classification and point-sampled mask losses, with deep supervision.

    The returned losses are unweighted; `weight_dict` is kept for the model, which applies it.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: nn.Module,
        weight_dict: dict,
        eos_coef: float,
        losses: list[str],
        num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
    ):
        """
        Args:
            num_classes: K, the number of object classes; index K is "no object".
            matcher: maps (outputs, targets) to per-image (query indices, target indices).
            weight_dict: loss name -> weight, including the suffixed deep-supervision names.
            eos_coef: classification weight of the "no object" class (0.1 in Mask2Former).
            losses: which losses to compute, among "labels" and "masks".
            num_points: K points sampled per mask for the mask losses (112 * 112 = 12544).
            oversample_ratio: candidates drawn per sampled point (3.0).
            importance_sample_ratio: share of points chosen by uncertainty (0.75).
        """
        super().__init__()
        for loss in losses:
            assert loss in ("labels", "masks"), f"unknown loss {loss!r}"
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.eos_coef = eos_coef
        self.losses = losses
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        # Persistent, as in the official model: its checkpoints hold `criterion.empty_weight`.
        self.register_buffer("empty_weight", empty_weight)

    def loss_labels(
        self, outputs: dict, targets: list[dict], indices: list, num_masks: float
    ) -> dict[str, torch.Tensor]:
        """Cross-entropy over all queries; unmatched queries target "no object"."""
        logits = outputs["pred_logits"].float()  # (B, Q, K + 1)
        batch_idx, query_idx = self._matched_query_index(indices)
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )  # (B, Q)
        target_classes[batch_idx, query_idx] = torch.cat(
            [t["labels"][tgt].to(logits.device) for t, (_, tgt) in zip(targets, indices)]
        )
        # cross_entropy wants classes on dim 1; the weighted mean divides by the summed weights.
        loss_ce = F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight)
        return {"loss_ce": loss_ce}

    def loss_masks(
        self, outputs: dict, targets: list[dict], indices: list, num_masks: float
    ) -> dict[str, torch.Tensor]:
        """Sigmoid BCE and dice between matched masks on importance-sampled points."""
        pred_masks = outputs["pred_masks"]  # (B, Q, H_pred, W_pred)
        batch_idx, query_idx = self._matched_query_index(indices)
        src_masks = pred_masks[batch_idx, query_idx][:, None]  # (N, 1, H_pred, W_pred)

        # Targets of different images may differ in size; zero-padding them to a common size
        # at the bottom-right matches how images are padded into one batch.
        height = max(t["masks"].shape[-2] for t in targets)
        width = max(t["masks"].shape[-1] for t in targets)
        tgt_masks = torch.cat(
            [
                _pad_masks(t["masks"][tgt].to(src_masks), height, width)
                for t, (_, tgt) in zip(targets, indices)
            ]
        )[:, None]  # (N, 1, H_gt, W_gt)

        # Predictions and targets are compared at [0, 1]-normalised points, so neither needs to
        # be resized to the other's resolution.
        with torch.no_grad():
            point_coords = get_uncertain_point_coords_with_randomness(
                src_masks,
                calculate_uncertainty,
                self.num_points,
                self.oversample_ratio,
                self.importance_sample_ratio,
            )  # (N, P, 2)
            point_labels = point_sample(tgt_masks, point_coords, align_corners=False)[:, 0]
        point_logits = point_sample(src_masks, point_coords, align_corners=False)[:, 0]  # (N, P)

        return {
            "loss_mask": sigmoid_ce_loss(point_logits, point_labels, num_masks),
            "loss_dice": dice_loss(point_logits, point_labels, num_masks),
        }

    @staticmethod
    def _matched_query_index(indices: list) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch index, query index) of every matched query, image by image."""
        batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)])
        query_idx = torch.cat([src for src, _ in indices])
        return batch_idx, query_idx

    def get_loss(
        self, loss: str, outputs: dict, targets: list[dict], indices: list, num_masks: float
    ) -> dict[str, torch.Tensor]:
        loss_fns = {"labels": self.loss_labels, "masks": self.loss_masks}
        return loss_fns[loss](outputs, targets, indices, num_masks)

    def _average_num_masks(self, targets: list[dict], device) -> float:
        """Target masks per worker, averaged over distributed workers and at least 1."""
        num_masks = torch.as_tensor(
            [float(sum(len(t["labels"]) for t in targets))], dtype=torch.float, device=device
        )
        world_size = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num_masks)
            world_size = dist.get_world_size()
        return torch.clamp(num_masks / world_size, min=1).item()

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        """Compute the losses of the final prediction and of every entry of `aux_outputs`.

        Args:
            outputs: "pred_logits" (B, Q, K + 1), "pred_masks" (B, Q, H_pred, W_pred) and
                optionally "aux_outputs", a list of dicts of the same two entries, one per
                intermediate decoder layer.
            targets: per image, "labels" (T_b,) int64 and "masks" (T_b, H_gt, W_gt).

        Returns:
            "loss_ce", "loss_mask", "loss_dice" for the final prediction and the same names
            suffixed "_0", "_1", ... for the intermediate ones.
        """
        final_outputs = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        num_masks = self._average_num_masks(targets, outputs["pred_logits"].device)

        losses = {}
        indices = self.matcher(final_outputs, targets)
        for loss in self.losses:
            losses.update(self.get_loss(loss, final_outputs, targets, indices, num_masks))

        # Each intermediate layer is matched on its own predictions.
        for i, aux_outputs in enumerate(outputs.get("aux_outputs", [])):
            indices = self.matcher(aux_outputs, targets)
            for loss in self.losses:
                layer_losses = self.get_loss(loss, aux_outputs, targets, indices, num_masks)
                losses.update({f"{name}_{i}": value for name, value in layer_losses.items()})
        return losses

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, losses={self.losses}, "
            f"weight_dict={self.weight_dict}, eos_coef={self.eos_coef}, "
            f"num_points={self.num_points}, oversample_ratio={self.oversample_ratio}, "
            f"importance_sample_ratio={self.importance_sample_ratio}"
        )
