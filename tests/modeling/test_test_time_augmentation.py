"""Semantic TTA: views are detectron2's, flipped views are flipped back, views averaged."""

import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from torch import nn

from seg_zoo.modeling.test_time_augmentation import SemanticSegmentorWithTTA


class Probe(nn.Module):
    """sem_seg channel 0: the image's first channel; channel 1: the column index (not
    flip-equivariant); both resized to the original (height, width)."""

    def forward(self, batched_inputs):
        out = []
        for x in batched_inputs:
            image = x["image"].float()[None]
            h, w = x["height"], x["width"]
            ramp = torch.arange(image.shape[-1], dtype=torch.float32).expand(image.shape[-2:])
            maps = torch.cat([image[:, :1], ramp[None, None]], dim=1)
            out.append({"sem_seg": F.interpolate(maps, size=(h, w), mode="nearest")[0]})
        return out


def _cfg(min_sizes, flip):
    cfg = get_cfg()
    cfg.TEST.AUG.MIN_SIZES = min_sizes
    cfg.TEST.AUG.MAX_SIZE = 1000
    cfg.TEST.AUG.FLIP = flip
    return cfg


def test_flip_views_are_flipped_back_and_averaged():
    image = torch.randint(0, 255, (3, 6, 8), dtype=torch.uint8)
    tta = SemanticSegmentorWithTTA(_cfg((6,), True), Probe())
    (out,) = tta([{"image": image, "height": 6, "width": 8}])
    # channel 0 is flip-equivariant: both views give the image back
    torch.testing.assert_close(out["sem_seg"][0], image[0].float())
    # the ramp is not: 0..7 averaged with 7..0 is 3.5 everywhere
    torch.testing.assert_close(out["sem_seg"][1], torch.full((6, 8), 3.5))


def test_without_flip_and_one_scale_it_is_the_model():
    image = torch.randint(0, 255, (3, 6, 8), dtype=torch.uint8)
    tta = SemanticSegmentorWithTTA(_cfg((6,), False), Probe())
    (out,) = tta([{"image": image, "height": 6, "width": 8}])
    (plain,) = Probe()([{"image": image, "height": 6, "width": 8}])
    torch.testing.assert_close(out["sem_seg"], plain["sem_seg"])


def test_two_scales_average_two_resized_views():
    image = torch.full((3, 4, 4), 100, dtype=torch.uint8)  # constant: resizing keeps it
    tta = SemanticSegmentorWithTTA(_cfg((4, 8), False), Probe())
    (out,) = tta([{"image": image, "height": 4, "width": 4}])
    # the ramp of the 8-pixel view, sampled back to 4 columns, is 0, 2, 4, 6 against the
    # 4-pixel view's 0, 1, 2, 3
    torch.testing.assert_close(out["sem_seg"][0], image[0].float())
    expected = (torch.tensor([0.0, 1, 2, 3]) + torch.tensor([0.0, 2, 4, 6])) / 2
    torch.testing.assert_close(out["sem_seg"][1], expected.expand(4, 4))
