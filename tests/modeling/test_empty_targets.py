"""Images without any instance train and infer (FILTER_EMPTY_ANNOTATIONS off, inference)."""

import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Instances

from seg_zoo import add_seg_zoo_config

CONFIG = os.path.join(
    os.path.dirname(__file__),
    "..",
    "..",
    "configs",
    "synthetic",
    "maskformer2_R18_tiny_panoptic.yaml",
)


@pytest.fixture(scope="module")
def model():
    cfg = get_cfg()
    add_seg_zoo_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.DATASETS.TRAIN = ("synthetic_panoptic_train",)
    torch.manual_seed(0)
    return build_model(cfg)


def _sample(num_instances, size=64):
    inst = Instances((size, size))
    inst.gt_classes = torch.arange(num_instances, dtype=torch.long)
    masks = torch.zeros(num_instances, size, size, dtype=torch.bool)
    for i in range(num_instances):
        masks[i, 8 * i : 8 * i + 16, 4:40] = True
    inst.gt_masks = masks
    image = torch.randint(0, 255, (3, size, size), dtype=torch.uint8)
    return {"image": image, "instances": inst, "height": size, "width": size}


@pytest.mark.parametrize("counts", [(0,), (0, 3)], ids=["all-empty", "one-empty"])
def test_training_step_with_empty_images(model, counts):
    model.train()
    losses = model([_sample(n) for n in counts])
    total = sum(losses.values())
    assert torch.isfinite(total)
    model.zero_grad()
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # With no target, every query is "no object": only the classification loss is non-zero.
    if counts == (0,):
        assert losses["loss_mask"] == 0 and losses["loss_dice"] == 0
        assert losses["loss_ce"] > 0


def test_inference_returns_all_outputs_in_original_size(model):
    model.eval()
    image = torch.randint(0, 255, (3, 50, 70), dtype=torch.uint8)
    with torch.no_grad():
        (out,) = model([{"image": image, "height": 100, "width": 140}])
    assert out["sem_seg"].shape[-2:] == (100, 140)
    assert out["panoptic_seg"][0].shape == (100, 140)
    assert out["instances"].image_size == (100, 140)
