"""UperNet head, auxiliary FCN head and the ``UperNet`` meta-architecture.

References: the Swin Transformer paper's ADE20K table (UperNet parameter counts), a hand count
of mmseg's UPerHead/FCNHead layer sizes, cross-entropy values worked out by hand, and a short
CPU training on the synthetic dataset.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY

import seg_zoo  # noqa: F401  (registers the models)
from seg_zoo.config import load_config
from seg_zoo.modeling.heads import FCNAuxHead, UperNetHead, per_pixel_cross_entropy
from seg_zoo.modeling.meta_arch.upernet_model import UperNet

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
UPERNET = CONFIGS / "ade20k" / "semantic-segmentation" / "upernet"
TINY = CONFIGS / "synthetic" / "upernet_R18_tiny_semantic.yaml"

SWIN_T_SHAPES = {
    "res2": ShapeSpec(channels=96, stride=4),
    "res3": ShapeSpec(channels=192, stride=8),
    "res4": ShapeSpec(channels=384, stride=16),
    "res5": ShapeSpec(channels=768, stride=32),
}


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------
# architecture facts


# Swin paper, Table 3 (ADE20K val, UperNet, 150 classes, auxiliary head included) and the
# count this implementation gives (measured on the meta device).
PAPER_PARAMS = {
    "upernet_swin_tiny_bs16_160k.yaml": (60e6, 59_941_862),
    "upernet_swin_small_bs16_160k.yaml": (81e6, 81_259_766),
    "upernet_swin_base_bs16_160k.yaml": (121e6, 121_279_716),
    "upernet_swin_base_IN21k_384_bs16_160k_res640.yaml": (121e6, 121_415_076),
    "upernet_swin_large_IN21k_384_bs16_160k_res640.yaml": (234e6, 233_962_976),
}


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_parameter_count_matches_the_swin_paper(name):
    cfg = load_config(str(UPERNET / name))
    cfg.MODEL.DEVICE = "cpu"
    with torch.device("meta"):  # no memory, no initialisation
        model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    assert isinstance(model, UperNet) and model.aux_head is not None
    total = _numel(model)
    paper, measured = PAPER_PARAMS[name]
    print(f"{name}: {total} parameters (paper {paper / 1e6:.0f}M)")
    assert abs(total - paper) < 1e6
    assert total == measured


def _conv_bn(cin: int, cout: int, k: int) -> int:
    """Parameters of an mmcv ConvModule with BN: bias-free conv + BN weight and bias."""
    return cin * cout * k * k + 2 * cout


def test_head_sizes_equal_a_hand_count_of_mmseg_uperhead_and_fcnhead():
    """Swin-T ADE20K heads, counted layer by layer from mmseg's UPerHead/FCNHead definitions."""
    ins, c, k = [96, 192, 384, 768], 512, 150
    head = UperNetHead(SWIN_T_SHAPES, num_classes=k, norm="BN")
    want = {
        "psp_modules": 4 * _conv_bn(768, c, 1),
        "bottleneck": _conv_bn(768 + 4 * c, c, 3),
        "lateral_convs": sum(_conv_bn(i, c, 1) for i in ins[:-1]),
        "fpn_convs": 3 * _conv_bn(c, c, 3),
        "fpn_bottleneck": _conv_bn(4 * c, c, 3),
        "conv_seg": c * k + k,
    }
    got = {name: _numel(getattr(head, name)) for name in want}
    assert got == want
    assert _numel(head) == sum(want.values()) == 31_497_366

    shapes = {n: tuple(p.shape) for n, p in head.state_dict().items()}
    assert shapes["psp_modules.3.1.weight"] == (c, 768, 1, 1)
    assert head.psp_modules[3][0].output_size == 6
    assert shapes["bottleneck.weight"] == (c, 768 + 4 * c, 3, 3)
    assert shapes["lateral_convs.0.weight"] == (c, 96, 1, 1)
    assert shapes["fpn_bottleneck.weight"] == (c, 4 * c, 3, 3)
    assert shapes["conv_seg.weight"] == (k, c, 1, 1)
    assert "bottleneck.bias" not in shapes  # convs followed by a norm have no bias
    assert isinstance(head.dropout, torch.nn.Dropout2d) and head.dropout.p == 0.1

    aux = FCNAuxHead(in_feature="res4", in_channels=384, num_classes=k, norm="BN")
    assert _numel(aux) == _conv_bn(384, 256, 3) + 256 * k + k == 923_798
    assert len(aux.convs) == 1 and tuple(aux.convs[0].weight.shape) == (256, 384, 3, 3)


def test_official_recipe_values():
    cfg = load_config(str(UPERNET / "upernet_swin_tiny_bs16_160k.yaml"))
    s = cfg.SOLVER
    assert (s.OPTIMIZER, s.BASE_LR, s.WEIGHT_DECAY, s.WEIGHT_DECAY_NORM) == ("ADAMW", 6e-5, 0.01, 0)
    assert (s.POLY_LR_POWER, s.WARMUP_ITERS, s.WARMUP_FACTOR) == (1.0, 1500, 1e-6)
    assert (s.MAX_ITER, s.IMS_PER_BATCH, s.BACKBONE_MULTIPLIER) == (160000, 16, 1.0)
    assert cfg.MODEL.SWIN.DROP_PATH_RATE == 0.3 and cfg.MODEL.UPERNET.NORM == "SyncBN"
    assert tuple(cfg.INPUT.CROP.SIZE) == (512, 512)
    large = load_config(str(UPERNET / "upernet_swin_large_IN21k_384_bs16_160k_res640.yaml"))
    assert tuple(large.INPUT.CROP.SIZE) == (640, 640) and large.MODEL.SWIN.WINDOW_SIZE == 12
    r50 = load_config(str(UPERNET / "upernet_R50_bs16_160k.yaml"))
    assert r50.MODEL.BACKBONE.NAME == "build_resnet_backbone" and r50.MODEL.RESNETS.DEPTH == 50


# ---------------------------------------------------------------------------------------------
# forward, loss, inference


def _features(n=2, h=64, w=96, shapes=None):
    shapes = shapes or {
        "res2": ShapeSpec(channels=8, stride=4),
        "res3": ShapeSpec(channels=16, stride=8),
        "res4": ShapeSpec(channels=24, stride=16),
        "res5": ShapeSpec(channels=32, stride=32),
    }
    feats = {
        k: torch.randn(n, s.channels, math.ceil(h / s.stride), math.ceil(w / s.stride))
        for k, s in shapes.items()
    }
    return shapes, feats


def test_forward_shapes():
    shapes, feats = _features()
    head = UperNetHead(shapes, num_classes=5, channels=32, norm="GN").eval()
    assert head.layers(feats).shape == (2, 5, 16, 24)  # stride 4
    logits, losses = head(feats)  # detectron2 SemSegFPNHead contract
    assert logits.shape == (2, 5, 64, 96) and losses == {}
    aux = FCNAuxHead(in_feature="res4", in_channels=24, num_classes=5, channels=32, norm="GN")
    assert aux(feats).shape == (2, 5, 4, 6)  # stride 16
    # one feature only (a plain ViT): the head is a PPM + classifier
    one = UperNetHead({"res4": shapes["res4"]}, num_classes=3, channels=8, norm="").eval()
    assert one.layers(feats).shape == (2, 3, 4, 6)


def test_cross_entropy_against_hand_values():
    # Spatially constant logits resize exactly. Logits (0, ln 2, 0): p = (1/4, 1/2, 1/4).
    logits = torch.tensor([0.0, math.log(2.0), 0.0]).view(1, 3, 1, 1)
    targets = torch.tensor([[[1, 0], [2, 255]]])
    # pixels: -ln(1/2), -ln(1/4), -ln(1/4); the 255 pixel is ignored
    want = (math.log(2) + 2 * math.log(4)) / 3
    assert per_pixel_cross_entropy(logits, targets, 255).item() == pytest.approx(want, rel=1e-6)
    all_ignored = per_pixel_cross_entropy(logits.requires_grad_(), torch.full((1, 2, 2), 255), 255)
    assert all_ignored.item() == 0.0 and all_ignored.requires_grad
    with pytest.raises(TypeError, match="integer"):
        per_pixel_cross_entropy(logits, targets.float(), 255)


class _StubBackbone(torch.nn.Module):
    """Returns a zero feature at stride 4; the heads below ignore its values."""

    size_divisibility = 4

    def forward(self, x):
        return {"res2": x.new_zeros(x.shape[0], 1, x.shape[2] // 4, x.shape[3] // 4)}


class _ConstantHead(torch.nn.Module):
    """Logits (0, ln 2, 0) everywhere, at the input feature's resolution."""

    def __init__(self):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor([0.0, math.log(2.0), 0.0]))

    def layers(self, features):
        x = features["res2"]
        return self.logits.view(1, 3, 1, 1).expand(x.shape[0], 3, x.shape[2], x.shape[3])

    def forward(self, features):
        return self.layers(features)


def _stub_model(**kw):
    return UperNet(
        backbone=_StubBackbone(),
        sem_seg_head=_ConstantHead(),
        aux_head=_ConstantHead(),
        num_classes=3,
        pixel_mean=(0.0, 0.0, 0.0),
        pixel_std=(1.0, 1.0, 1.0),
        size_divisibility=8,
        **kw,
    )


def test_meta_arch_losses_are_weighted_hand_values():
    model = _stub_model(loss_weight=1.0, aux_loss_weight=0.4).train()
    # a 6x5 image padded to 8x8: padding must be ignored, not counted as class 0
    inputs = [
        {"image": torch.zeros(3, 6, 5), "sem_seg": torch.ones(6, 5, dtype=torch.long)},
        {"image": torch.zeros(3, 8, 8), "sem_seg": torch.full((8, 8), 2, dtype=torch.long)},
    ]
    losses = model(inputs)
    # 30 pixels of class 1 (-ln 1/2) and 64 of class 2 (-ln 1/4), averaged over all 94
    hand = (30 * math.log(2) + 64 * math.log(4)) / 94
    assert losses["loss_sem_seg"].item() == pytest.approx(hand, rel=1e-6)
    assert losses["loss_sem_seg_aux"].item() == pytest.approx(0.4 * hand, rel=1e-6)


def test_inference_returns_the_original_size():
    model = _stub_model().eval()
    inputs = [
        {"image": torch.zeros(3, 30, 45), "height": 60, "width": 90},
        {"image": torch.zeros(3, 21, 13)},
    ]
    with torch.no_grad():
        out = model(inputs)
    assert out[0]["sem_seg"].shape == (3, 60, 90)
    assert out[1]["sem_seg"].shape == (3, 21, 13)
    probs = out[1]["sem_seg"]
    assert torch.allclose(probs[:, 5, 5], torch.tensor([0.25, 0.5, 0.25]))


class _PoolingBackbone(torch.nn.Module):
    """Stride-4 average of the image (ceil sizes, as Swin's internal padding); records inputs."""

    size_divisibility = 32

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(tuple(x.shape))
        return {"res2": F.avg_pool2d(x, 4, ceil_mode=True)}


class _LinearHead(torch.nn.Module):
    def layers(self, features):
        x = features["res2"]
        return torch.cat([x[:, :1], -x[:, 1:2], x[:, 2:3] * 2], dim=1)

    def forward(self, features):
        return self.layers(features)


def test_whole_image_inference_without_padding_is_mmseg_whole_mode():
    """SIZE_DIVISIBILITY 0: the image goes in unpadded; logits are resized to the image, then
    to the requested size, as mmseg's ``whole_inference`` (bilinear, align_corners False)."""
    backbone = _PoolingBackbone()
    kw = dict(num_classes=3, pixel_mean=(0.0,) * 3, pixel_std=(1.0,) * 3, aux_head=None)
    model = UperNet(backbone=backbone, sem_seg_head=_LinearHead(), size_divisibility=0, **kw)
    image = torch.randn(3, 30, 45, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model.eval()([{"image": image, "height": 61, "width": 90}])[0]["sem_seg"]
    assert backbone.seen == [(1, 3, 30, 45)]
    logits = _LinearHead().layers({"res2": F.avg_pool2d(image[None], 4, ceil_mode=True)})
    up = F.interpolate(logits, size=(30, 45), mode="bilinear", align_corners=False)
    want = F.interpolate(up, size=(61, 90), mode="bilinear", align_corners=False)[0].softmax(0)
    torch.testing.assert_close(out, want)
    # the backbone's own divisibility (negative) pads to 32
    padded = UperNet(backbone=backbone, sem_seg_head=_LinearHead(), size_divisibility=-1, **kw)
    with torch.no_grad():
        padded.eval()([{"image": image}])
    assert backbone.seen[-1] == (1, 3, 32, 64)


def test_bad_input_is_named():
    model = _stub_model().train()
    image = torch.zeros(3, 8, 8)
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        model([{"image": image, "sem_seg": torch.full((8, 8), 3, dtype=torch.long)}])
    with pytest.raises(KeyError, match="sem_seg"):
        model([{"image": image}])
    with pytest.raises(ValueError, match=r"shape \(4, 4\)"):
        model([{"image": image, "sem_seg": torch.zeros(4, 4, dtype=torch.long)}])
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        model([{"image": torch.zeros(8, 8)}])
    shapes, feats = _features()
    with pytest.raises(KeyError, match="MODEL.UPERNET"):
        UperNetHead.from_config(load_config(str(TINY)), {"res4": shapes["res4"]})
    head = UperNetHead(shapes, num_classes=2, channels=8, norm="BN").train()
    with pytest.raises(ValueError, match="MODEL.UPERNET.NORM"):
        head.layers({k: v[:1] for k, v in feats.items()})


def test_head_works_in_detectron2_semantic_segmentor():
    cfg = load_config(str(TINY), ["MODEL.META_ARCHITECTURE", "SemanticSegmentor"])
    model = META_ARCH_REGISTRY.get("SemanticSegmentor")(cfg)
    image = torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)
    losses = model([{"image": image, "sem_seg": torch.zeros(32, 32, dtype=torch.long)}] * 2)
    assert set(losses) == {"loss_sem_seg"} and torch.isfinite(losses["loss_sem_seg"])
    model.eval()
    with torch.no_grad():
        out = model([{"image": image[:, :20, :30]}])
    assert out[0]["sem_seg"].shape == (7, 20, 30)


# ---------------------------------------------------------------------------------------------
# training on CPU


@pytest.mark.slow  # about 5 s of CPU time (10 ResNet-18 steps), more on a busy machine
def test_tiny_config_trains_and_loss_decreases(tmp_path):
    from detectron2.engine import HookBase

    from seg_zoo.data.datasets.synthetic import generate_synthetic_dataset, register_all_synthetic
    from seg_zoo.engine import Trainer

    root = str(tmp_path / "data")
    generate_synthetic_dataset(root, num_train=8, num_val=2)
    register_all_synthetic(root)
    try:
        # 10 steps of 4 crops of 64 pixels at a constant lr (poly power 0): enough for the
        # loss to fall clearly, while staying a few seconds on an idle CPU.
        cfg = load_config(
            str(TINY),
            ["SOLVER.MAX_ITER", 10, "SOLVER.IMS_PER_BATCH", 4, "SOLVER.WARMUP_ITERS", 0,
             "SOLVER.BASE_LR", 0.005, "SOLVER.POLY_LR_POWER", 0.0,
             "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.CROP.SIZE", "(64, 64)",
             "INPUT.SIZE_DIVISIBILITY", 64, "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", 0,
             "SOLVER.CHECKPOINT_PERIOD", 1000, "OUTPUT_DIR", str(tmp_path / "out")],
        )  # fmt: skip
        torch.manual_seed(0)  # the initial weights; the Trainer seeds every step itself
        trainer = Trainer(cfg)
        assert isinstance(trainer.model, UperNet)

        losses: list[float] = []

        class Record(HookBase):
            def after_step(self):
                latest = self.trainer.storage.latest()
                losses.append(latest["loss_sem_seg"][0] + latest["loss_sem_seg_aux"][0])

        trainer.register_hooks([Record()])
        trainer.train()
    finally:
        register_all_synthetic(os.environ.get("DETECTRON2_DATASETS"))
    assert len(losses) == 10 and all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    # Measured: 2.61 -> 2.30 (main + aux loss; chance level is 1.4 * ln 7 = 2.72).
    print(f"mean loss, first 3 steps {first:.3f}, last 3 steps {last:.3f}")
    assert last < 0.92 * first
