"""Bipartite matching between predicted queries and ground-truth masks (Mask2Former Sec. 3.3).

The cost of pairing query i with target j is

    C[i, j] = w_class * -p_i(c_j) + w_mask * BCE(m_i, t_j) + w_dice * (1 - Dice(m_i, t_j)),

with the mask terms measured on points sampled uniformly in the image, the same points for every
query and target of one image, and the pairing that minimises the summed cost is found with the
Hungarian algorithm (DETR, Carion et al., 2020, Sec. 3.1).
"""

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from .point_sampling import point_sample

__all__ = ["HungarianMatcher", "batch_dice_cost", "batch_sigmoid_ce_cost"]


def batch_sigmoid_ce_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sigmoid binary cross-entropy, averaged over points, for every (prediction, target) pair.

    BCE(x, t) = t * softplus(-x) + (1 - t) * softplus(x), so the pairwise sums are two matrix
    products instead of a (Q, T, P) tensor.

    Args:
        inputs: (Q, P) predicted logits.
        targets: (T, P) target values in [0, 1].

    Returns:
        (Q, T) costs.
    """
    num_points = inputs.shape[1]
    loss_if_positive = F.binary_cross_entropy_with_logits(
        inputs, torch.ones_like(inputs), reduction="none"
    )  # (Q, P)
    loss_if_negative = F.binary_cross_entropy_with_logits(
        inputs, torch.zeros_like(inputs), reduction="none"
    )  # (Q, P)
    cost = loss_if_positive @ targets.T + loss_if_negative @ (1 - targets).T  # (Q, T)
    return cost / num_points


def batch_dice_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - (2|m t| + 1) / (|m| + |t| + 1) for every (prediction, target) pair, m = sigmoid(logits).

    Args:
        inputs: (Q, P) predicted logits.
        targets: (T, P) target values in [0, 1].

    Returns:
        (Q, T) costs.
    """
    probs = inputs.sigmoid()
    intersection = probs @ targets.T  # (Q, T)
    total = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]  # (Q, T)
    return 1 - (2 * intersection + 1) / (total + 1)


def _pixel_centre_coords(height: int, width: int, device) -> torch.Tensor:
    """(1, H * W, 2) [0, 1]-normalised (x, y) centres of an H x W grid, row-major."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1).reshape(1, -1, 2)


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets minimising class + mask + dice cost.

    Targets are fewer than queries; unmatched queries are supervised as "no object" by the
    criterion.
    """

    def __init__(
        self,
        cost_class: float = 1,
        cost_mask: float = 1,
        cost_dice: float = 1,
        num_points: int = 0,
    ):
        """
        Args:
            cost_class: weight of the classification cost (-probability of the target class).
            cost_mask: weight of the sigmoid binary cross-entropy cost between masks.
            cost_dice: weight of the dice cost between masks.
            num_points: points sampled uniformly per image on which mask costs are measured
                (Mask2Former uses 112 * 112 = 12544). 0 measures them at every pixel centre of
                the target masks instead, which is deterministic.
        """
        super().__init__()
        assert cost_class != 0 or cost_mask != 0 or cost_dice != 0, "all costs can't be 0"
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    def cost_matrix(
        self,
        pred_logits: torch.Tensor,
        pred_masks: torch.Tensor,
        tgt_labels: torch.Tensor,
        tgt_masks: torch.Tensor,
        point_coords: torch.Tensor,
    ) -> torch.Tensor:
        """Matching cost of one image.

        Args:
            pred_logits: (Q, K + 1) class logits, the last class being "no object".
            pred_masks: (Q, H_pred, W_pred) mask logits.
            tgt_labels: (T,) int64 class indices in [0, K).
            tgt_masks: (T, H_gt, W_gt) binary masks.
            point_coords: (1, P, 2) [0, 1]-normalised points shared by all masks.

        Returns:
            (Q, T) float32 costs.
        """
        pred_logits = pred_logits.float()
        pred_masks = pred_masks.float()
        tgt_masks = tgt_masks.float()
        point_coords = point_coords.float()

        # -p(c) rather than DETR's 1 - p(c): the constant does not change the assignment.
        cost_class = -pred_logits.softmax(-1)[:, tgt_labels]  # (Q, T)

        num_preds, num_tgts = pred_masks.shape[0], tgt_masks.shape[0]
        pred_points = point_sample(
            pred_masks[:, None], point_coords.expand(num_preds, -1, -1), align_corners=False
        )[:, 0]  # (Q, P)
        tgt_points = point_sample(
            tgt_masks[:, None], point_coords.expand(num_tgts, -1, -1), align_corners=False
        )[:, 0]  # (T, P)
        cost_mask = batch_sigmoid_ce_cost(pred_points, tgt_points)
        cost_dice = batch_dice_cost(pred_points, tgt_points)
        return (
            self.cost_mask * cost_mask + self.cost_class * cost_class + self.cost_dice * cost_dice
        )

    @torch.no_grad()
    def forward(
        self, outputs: dict, targets: list[dict]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match each image's queries to its targets.

        Args:
            outputs: "pred_logits" (B, Q, K + 1) class logits and "pred_masks"
                (B, Q, H_pred, W_pred) mask logits.
            targets: per image, "labels" (T_b,) int64 and "masks" (T_b, H_gt, W_gt).

        Returns:
            Per image, (query indices, target indices), int64 tensors of length min(Q, T_b) on
            the CPU; query indices are increasing.
        """
        pred_logits_all = outputs["pred_logits"]
        pred_masks_all = outputs["pred_masks"]
        device = pred_masks_all.device
        indices = []
        # The costs are differences of small numbers (BCE, dice ratios); half precision would
        # make ties and swaps, so the whole matching runs in float32.
        with torch.autocast(device_type=device.type, enabled=False):
            for b, target in enumerate(targets):
                tgt_masks = target["masks"]
                if self.num_points > 0:
                    # Drawn even for an image without targets, so that the random stream (and
                    # thus every later image's points) does not depend on target counts.
                    point_coords = torch.rand(1, self.num_points, 2, device=device)
                else:
                    point_coords = _pixel_centre_coords(*tgt_masks.shape[-2:], device=device)
                if tgt_masks.shape[0] == 0:
                    empty = torch.empty(0, dtype=torch.int64)
                    indices.append((empty, empty.clone()))
                    continue
                cost = self.cost_matrix(
                    pred_logits_all[b],
                    pred_masks_all[b],
                    target["labels"],
                    tgt_masks.to(device),
                    point_coords,
                )
                query_idx, tgt_idx = linear_sum_assignment(cost.cpu().numpy())
                indices.append(
                    (
                        torch.as_tensor(query_idx, dtype=torch.int64),
                        torch.as_tensor(tgt_idx, dtype=torch.int64),
                    )
                )
        return indices

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, "
            f"cost_dice={self.cost_dice}, num_points={self.num_points}"
        )
