"""detectron2's checkpointer, plus a hint when a checkpoint was trained for other classes."""

from __future__ import annotations

import logging

import numpy as np
from detectron2.checkpoint import DetectionCheckpointer

from ..model_zoo.safe_load import load_checkpoint_file

logger = logging.getLogger(__name__)

# Parameters whose first dimension is the number of classes (+1 for "no object").
_CLASS_HEAD_SUFFIXES = ("class_embed.weight", "class_embed.bias")


def class_count_hints(checkpoint_state: dict, model_state: dict) -> list[str]:
    """One message per class-head parameter whose class dimension differs.

    ``class_embed`` of Mask2Former/MaskFormer has NUM_CLASSES + 1 outputs (the extra one is
    "no object"), so a checkpoint with C + 1 rows was trained with NUM_CLASSES = C.
    """
    hints = []
    for key, value in checkpoint_state.items():
        if not key.endswith(_CLASS_HEAD_SUFFIXES) or key not in model_state:
            continue
        ckpt_shape = tuple(np.shape(value))
        model_shape = tuple(model_state[key].shape)
        if ckpt_shape and model_shape and ckpt_shape[0] != model_shape[0]:
            hints.append(
                f"{key}: the checkpoint has {ckpt_shape[0]} class outputs "
                f"(NUM_CLASSES {ckpt_shape[0] - 1} + no-object) but the model has "
                f"{model_shape[0]} (NUM_CLASSES {model_shape[0] - 1}); set "
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES {ckpt_shape[0] - 1} to use this head, or "
                "keep it to fine-tune a new head (the class head is then left untrained)"
            )
    return hints


class Checkpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with safe loading and a NUM_CLASSES hint.

    Files are read by :func:`seg_zoo.model_zoo.safe_load.load_checkpoint_file`: ``.pkl``
    through a restricted unpickler (dicts, lists, numbers, strings, numpy arrays only; a
    refused global is named; ``SEG_ZOO_TRUST_PICKLES=1`` opts out for trusted files), others
    through ``torch.load(weights_only=True)``. detectron2 already lists missing keys,
    unexpected keys and shape mismatches (the latter are skipped, not loaded); this adds
    which config key to change when the mismatch is the class head.
    """

    def __init__(self, model, save_dir: str = "", *, use_ema: bool = False, **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        # Load a checkpoint's EMA weights (``ema_state``, MODEL_EMA) into the model, when present.
        self.use_ema = use_ema

    def _load_file(self, filename):
        if filename.endswith((".pkl", ".pyth")):
            return load_checkpoint_file(filename)
        return super()._load_file(filename)  # keeps detectron2's ?matching_heuristics=True

    def _torch_load(self, f):
        return load_checkpoint_file(f)

    def _load_model(self, checkpoint):
        if self.use_ema and "ema_state" in checkpoint:
            self.logger.info("loading the EMA weights of the checkpoint (ema_state) into the model")
            checkpoint["model"] = checkpoint.pop("ema_state")
        hints = class_count_hints(checkpoint.get("model", {}), self.model.state_dict())
        incompatible = super()._load_model(checkpoint)
        for hint in hints:
            logger.warning("class head mismatch: %s", hint)
        return incompatible
