"""The NUM_CLASSES hint on a class-head shape mismatch."""

import logging
import os

import numpy as np
import torch
from torch import nn

from seg_zoo.engine import Checkpointer, class_count_hints


class Head(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.predictor = nn.Module()
        self.predictor.class_embed = nn.Linear(8, num_classes + 1)
        self.mask_embed = nn.Linear(8, 8)


def test_hint_names_key_and_both_class_counts():
    hints = class_count_hints(
        {"sem_seg_head.predictor.class_embed.weight": np.zeros((151, 8))},
        {"sem_seg_head.predictor.class_embed.weight": torch.zeros(134, 8)},
    )
    assert len(hints) == 1
    assert "sem_seg_head.predictor.class_embed.weight" in hints[0]
    assert "NUM_CLASSES 150" in hints[0] and "NUM_CLASSES 133" in hints[0]
    assert "MODEL.SEM_SEG_HEAD.NUM_CLASSES 150" in hints[0]
    same = {"a.class_embed.bias": torch.zeros(3)}
    assert class_count_hints(same, same) == []


def test_checkpointer_reports_mismatch_and_loads_the_rest(tmp_path, caplog):
    source, target = Head(150), Head(133)
    path = os.path.join(tmp_path, "model.pth")
    torch.save({"model": source.state_dict()}, path)
    with caplog.at_level(logging.WARNING):
        Checkpointer(target).load(path)
    text = caplog.text
    assert "predictor.class_embed.weight" in text  # detectron2's own shape report
    assert "MODEL.SEM_SEG_HEAD.NUM_CLASSES 150" in text  # seg_zoo's hint
    torch.testing.assert_close(target.mask_embed.weight, source.mask_embed.weight)
