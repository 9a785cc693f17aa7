"""Backbone checkpoint converters: timm/Microsoft Swin and torchvision ResNet -> detectron2 names.

The references are independent of the converters: timm's and torchvision's own forward passes,
the names/shapes of Microsoft's official Swin state_dicts recorded in
/work/shared/reference/swin, and hand-worked facts about the relative position table.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from zoo_helpers import load_tool

from seg_zoo.model_zoo.convert import (
    convert_swin_to_d2,
    convert_torchvision_resnet_to_d2,
    interpolate_relative_position_bias_table,
    load_source_state_dict,
    save_d2_checkpoint,
)
from seg_zoo.modeling.backbone.swin import D2SwinTransformer

REPO = Path(__file__).resolve().parents[2]
SWIN_REFERENCE = Path("/work/shared/reference/swin")
OUTPUT_NORMS = {f"norm{i}.{p}" for i in range(4) for p in ("weight", "bias")}


def perturb_(model: nn.Module, seed: int) -> nn.Module:
    """Add seeded noise to every parameter, so LayerNorm/BN weights are not all 1 and 0 (a
    swapped or dropped norm would then go unnoticed)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


# --------------------------------------------------------------------------------------------
# Swin from timm
# --------------------------------------------------------------------------------------------
def test_timm_swin_converted_gives_timm_stage_outputs():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    # always_partition: timm otherwise drops the shift in a stage whose map is no larger than
    # the window (the 7x7 res5 map at 224), which Microsoft's detectron2 backbone, and so
    # D2SwinTransformer, never does. At 224 the stage maps are 56, 28, 14 and 7, multiples of
    # the window, so no stage is padded either (timm pads after the cyclic shift, the D2
    # backbone before, which gives different outputs).
    # Swin-T with fewer, narrower blocks, to stay fast on CPU; the names of the full Swin-T are
    # checked by the tests below (timm's features_only model, Microsoft's reference).
    sizes = {"embed_dim": 48, "depths": (2, 2, 2, 2), "num_heads": (2, 4, 8, 16)}
    ref = timm.create_model(
        "swin_tiny_patch4_window7_224", pretrained=False, always_partition=True, **sizes
    ).eval()
    perturb_(ref, seed=1)
    ref_keys = set(ref.state_dict())
    assert "layers.0.downsample.reduction.weight" not in ref_keys  # timm >= 0.9 layout
    assert "layers.3.downsample.reduction.weight" in ref_keys

    messages = []
    converted = convert_swin_to_d2(ref.state_dict(), log=messages.append)
    assert any("head.fc.weight" in m for m in messages)

    model = D2SwinTransformer(window_size=7, drop_path_rate=0.0, **sizes).eval()
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert set(missing) == OUTPUT_NORMS and unexpected == []
    # The output norms norm0..3 are new in the detectron2 backbone (timm's stage outputs are
    # un-normalized), so they are taken out to compare the stages themselves.
    for i in range(4):
        setattr(model, f"norm{i}", nn.Identity())

    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = ref.forward_intermediates(x, intermediates_only=True)  # NCHW, per stage
        actual = model(x)
    assert len(expected) == 4
    for i, name in enumerate(["res2", "res3", "res4", "res5"]):
        assert actual[name].shape == expected[i].shape, name
        # float32 rounding alone reaches ~1e-6 of the feature scale over the 8 blocks
        # (features grow to ~10 here), so the bound is relative to that scale; a wrong name,
        # stage or window order gives errors of the order of the features themselves.
        scale = expected[i].abs().max()
        torch.testing.assert_close(
            actual[name] / scale, expected[i] / scale, rtol=0, atol=1e-5, msg=name
        )


def test_timm_features_only_names_convert_like_the_plain_model():
    timm = pytest.importorskip("timm")
    # On the meta device: only names and shapes are compared (shapes differ from stage to
    # stage, so a patch merging moved to the wrong stage shows).
    with torch.device("meta"):
        plain = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)
        features = timm.create_model(
            "swin_tiny_patch4_window7_224", pretrained=False, features_only=True
        )
    assert any(k.startswith("layers_1.") for k in features.state_dict())
    a = convert_swin_to_d2(plain.state_dict(), log=lambda _: None)
    b = convert_swin_to_d2(features.state_dict(), log=lambda _: None)
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    with torch.device("meta"):
        model = D2SwinTransformer(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
    expected = {k: v.shape for k, v in model.state_dict().items() if k not in OUTPUT_NORMS}
    assert {k: v.shape for k, v in a.items()} == expected


# --------------------------------------------------------------------------------------------
# Swin in Microsoft's official layout
# --------------------------------------------------------------------------------------------
def official_swin_checkpoint(name: str, device: str = "cpu") -> dict:
    """A {"model": state_dict} with the names/shapes/dtypes of an official release, seeded."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for line in (SWIN_REFERENCE / f"{name}.txt").read_text().splitlines():
        if line.startswith("#"):
            continue
        key, shape = line.split("\t")
        shape = tuple(int(s) for s in re.findall(r"\d+", shape))
        if key.endswith("relative_position_index"):
            state[key] = torch.zeros(shape, dtype=torch.int64, device=device)
        elif device == "meta":
            state[key] = torch.empty(shape, device="meta")
        else:
            state[key] = torch.randn(shape, generator=gen)
    return {"model": state}


def swin_cfg(config: str):
    from detectron2.config import get_cfg

    from seg_zoo import add_seg_zoo_config

    cfg = get_cfg()
    add_seg_zoo_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / config))
    return cfg


def test_official_swin_tiny_loads_into_config_backbone(tmp_path):
    from detectron2.modeling import build_backbone

    from seg_zoo.engine.checkpoint import Checkpointer

    checkpoint = official_swin_checkpoint("swin_tiny_patch4_window7_224")
    source = checkpoint["model"]
    messages = []
    converted = convert_swin_to_d2(checkpoint, log=messages.append)
    log = "\n".join(messages)
    assert "head.weight" in log and "norm.weight" in log and "attn_mask" in log

    class Model(nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone

    cfg = swin_cfg("ade20k/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_160k.yaml")
    model = Model(build_backbone(cfg))
    missing, unexpected = model.backbone.load_state_dict(converted, strict=False)
    assert set(missing) == OUTPUT_NORMS and unexpected == []

    # Through the written .pkl and detectron2's checkpointer (name matching by suffix), into
    # the backbone of a model, starting from zeros so that every loaded value shows.
    path = tmp_path / "swin_tiny.pkl"
    save_d2_checkpoint(converted, path)
    with open(path, "rb") as f:
        raw = pickle.load(f)
    assert raw["matching_heuristics"] is True and "__author__" in raw
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    Checkpointer(model).load(str(path))
    loaded = model.backbone.state_dict()
    for key, value in source.items():
        if key.startswith(("head.", "norm.")) or key.endswith(("attn_mask", "_index")):
            continue
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)


def test_official_swin_22k_converts_like_1k():
    # Same backbone, a 21841-class head: only the dropped classifier differs.
    one_k = convert_swin_to_d2(official_swin_checkpoint("swin_tiny_patch4_window7_224", "meta"))
    messages = []
    checkpoint = official_swin_checkpoint("swin_tiny_patch4_window7_224_22k", "meta")
    assert checkpoint["model"]["head.weight"].shape == (21841, 768)
    twenty_two_k = convert_swin_to_d2(checkpoint, log=messages.append)
    assert {k: v.shape for k, v in twenty_two_k.items()} == {k: v.shape for k, v in one_k.items()}
    assert any("head.weight" in m for m in messages)


@pytest.mark.parametrize("window_size", [None, 7])
def test_official_swin_base_384_names_and_shapes(window_size):
    from detectron2.modeling import build_backbone

    checkpoint = official_swin_checkpoint("swin_base_patch4_window12_384_22kto1k_finetune", "meta")
    converted = convert_swin_to_d2(checkpoint, window_size=window_size, log=lambda _: None)
    cfg = swin_cfg(
        "ade20k/semantic-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_160k_res640.yaml"
    )
    if window_size is not None:
        cfg.MODEL.SWIN.WINDOW_SIZE = window_size
    with torch.device("meta"):
        backbone = build_backbone(cfg)
    expected = {k: tuple(v.shape) for k, v in backbone.state_dict().items()}
    assert set(expected) - set(converted) == OUTPUT_NORMS
    assert set(converted) <= set(expected)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        k: s for k, s in expected.items() if k not in OUTPUT_NORMS
    }


# --------------------------------------------------------------------------------------------
# Relative position bias resizing
# --------------------------------------------------------------------------------------------
def test_window_7_to_12_keeps_the_zero_offset_bias():
    table = torch.randn(13 * 13, 4, generator=torch.Generator().manual_seed(0))
    resized = interpolate_relative_position_bias_table(table, 12)
    assert resized.shape == (23 * 23, 4)
    # Rows are offsets (dy, dx) in [-(W-1), W-1]^2, row-major: (0, 0) is row (W-1)*(2W-1)+(W-1).
    torch.testing.assert_close(resized[11 * 23 + 11], table[6 * 13 + 6], rtol=0, atol=1e-5)
    constant = torch.full((13 * 13, 3), 0.37)
    torch.testing.assert_close(
        interpolate_relative_position_bias_table(constant, 12),
        torch.full((23 * 23, 3), 0.37),
        rtol=0,
        atol=1e-6,
    )


def test_convert_with_new_window_rebuilds_the_index():
    checkpoint = official_swin_checkpoint("swin_tiny_patch4_window7_224")
    messages = []
    converted = convert_swin_to_d2(checkpoint, window_size=12, log=messages.append)
    assert any("window 7 (169 rows) to window 12 (529 rows)" in m for m in messages)
    table = converted["layers.2.blocks.3.attn.relative_position_bias_table"]
    index = converted["layers.2.blocks.3.attn.relative_position_index"]
    assert table.shape == (529, 12) and index.shape == (144, 144)
    # A token seen from itself has offset (0, 0): row 11 * 23 + 11 of the window-12 table,
    # which holds the window-7 table's (0, 0) row, 6 * 13 + 6.
    assert torch.all(index.diagonal() == 11 * 23 + 11)
    source = checkpoint["model"]["layers.2.blocks.3.attn.relative_position_bias_table"]
    torch.testing.assert_close(table[264], source[84], rtol=0, atol=1e-5)


def test_absolute_pos_embed_reshaped_and_resized():
    checkpoint = official_swin_checkpoint("swin_tiny_patch4_window7_224", "meta")
    # Microsoft's classification model adds a (1, L, C) embedding to tokens flattened
    # row-major from the (56, 56) patch grid: token r * 56 + c is patch (r, c).
    rows, cols, chans = torch.meshgrid(
        torch.arange(56.0), torch.arange(56.0), torch.arange(96.0), indexing="ij"
    )
    code = rows * 1000 + cols + chans / 1000  # (56, 56, 96): position and channel readable
    checkpoint["model"]["absolute_pos_embed"] = code.reshape(1, 56 * 56, 96)
    converted = convert_swin_to_d2(checkpoint, log=lambda _: None)
    torch.testing.assert_close(
        converted["absolute_pos_embed"], code.permute(2, 0, 1)[None], rtol=0, atol=0
    )

    checkpoint["model"]["absolute_pos_embed"] = torch.full((1, 56 * 56, 96), 0.5)
    messages = []
    converted = convert_swin_to_d2(checkpoint, pretrain_img_size=384, log=messages.append)
    assert any("absolute_pos_embed" in m for m in messages)
    with torch.device("meta"):
        model = D2SwinTransformer(ape=True, pretrain_img_size=384)
    expected = {k: v.shape for k, v in model.state_dict().items() if k not in OUTPUT_NORMS}
    assert {k: v.shape for k, v in converted.items()} == expected
    torch.testing.assert_close(
        converted["absolute_pos_embed"], torch.full((1, 96, 96, 96), 0.5), rtol=0, atol=1e-6
    )


# --------------------------------------------------------------------------------------------
# ResNet from torchvision
# --------------------------------------------------------------------------------------------
def random_bn_stats_(model: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
    return model


def d2_resnet(depth: int):
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone.resnet import build_resnet_backbone

    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False  # torchvision strides in the 3x3 conv
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    if depth < 50:
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    return build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()


def test_torchvision_resnet50_converted_gives_torchvision_outputs():
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.resnet50(weights=None).eval()
    random_bn_stats_(perturb_(ref, seed=2), seed=3)
    converted = convert_torchvision_resnet_to_d2(ref.state_dict(), log=lambda _: None)
    model = d2_resnet(50)
    model.load_state_dict(converted, strict=True)  # every FrozenBN buffer and conv filled

    # Pixel mean/std are applied by the meta-architecture, outside the backbone: both take
    # the same already-normalized tensor.
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
        expected = {}
        for i, layer in enumerate([ref.layer1, ref.layer2, ref.layer3, ref.layer4]):
            y = layer(y)
            expected[f"res{i + 2}"] = y
        actual = model(x)
    for name, value in expected.items():
        scale = value.abs().max()
        torch.testing.assert_close(actual[name] / scale, value / scale, rtol=0, atol=1e-5)


def test_resnet_names_of_torchvision_r101_match_detectron2():
    import torchvision

    with torch.device("meta"):
        ref = torchvision.models.resnet101(weights=None)
        model = d2_resnet(101)
    converted = convert_torchvision_resnet_to_d2(ref.state_dict(), log=lambda _: None)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        k: tuple(v.shape) for k, v in model.state_dict().items()
    }


# --------------------------------------------------------------------------------------------
# Command lines and bad input
# --------------------------------------------------------------------------------------------
def test_torchvision_tool_end_to_end(tmp_path, capsys):
    import torchvision

    src = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), src)
    out = tmp_path / "R-18.pkl"
    assert load_tool("convert-torchvision-to-d2.py").main([str(src), str(out)]) == 0
    with open(out, "rb") as f:
        data = pickle.load(f)
    assert data["__author__"] == "torchvision" and data["matching_heuristics"] is True
    expected = d2_resnet(18).state_dict()
    assert {k: v.shape for k, v in data["model"].items()} == {
        k: tuple(v.shape) for k, v in expected.items()
    }


def test_swin_tool_reads_safetensors(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    src = tmp_path / "swin.safetensors"
    safetensors_torch.save_file(
        official_swin_checkpoint("swin_tiny_patch4_window7_224")["model"], src
    )
    out = tmp_path / "swin.pkl"
    tool = load_tool("convert-pretrained-swin-model-to-d2.py")
    assert tool.main([str(src), str(out), "--window-size", "12"]) == 0
    with open(out, "rb") as f:
        model = pickle.load(f)["model"]
    assert model["layers.0.blocks.0.attn.relative_position_bias_table"].shape == (529, 3)


@pytest.mark.parametrize("kind", ["garbage", "truncated", "missing", "not_tensors"])
def test_bad_files_are_named_in_the_error(kind, tmp_path, capsys):
    path = tmp_path / "bad.pth"
    if kind == "garbage":
        path.write_bytes(b"this is not a checkpoint\x00\x01" * 10)
    elif kind == "truncated":
        torch.save({"model": {"w": torch.randn(1000)}}, path)
        path.write_bytes(path.read_bytes()[:700])
    elif kind == "not_tensors":
        torch.save({"model": {"w": [1, 2, 3]}}, path)
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(str(path))):
        load_source_state_dict(path)
    rc = load_tool("convert-pretrained-swin-model-to-d2.py").main(
        [str(path), str(tmp_path / "o.pkl")]
    )
    assert rc == 1
    assert str(path) in capsys.readouterr().err
    assert not (tmp_path / "o.pkl").exists()


def test_corrupt_safetensors_is_named(tmp_path):
    pytest.importorskip("safetensors")
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_source_state_dict(path)


def test_wrong_architecture_is_refused_with_the_keys():
    import torchvision

    with torch.device("meta"):
        resnet = torchvision.models.resnet18(weights=None).state_dict()
    with pytest.raises(ValueError, match="not a Swin checkpoint"):
        convert_swin_to_d2(resnet)
    swin = official_swin_checkpoint("swin_tiny_patch4_window7_224", "meta")
    with pytest.raises(ValueError, match=r"not a torchvision ResNet checkpoint.*layers\.0\.blocks"):
        convert_torchvision_resnet_to_d2(swin)
    # Swin V2 adds a continuous position bias MLP the V1 backbone has no place for.
    swin["model"]["layers.0.blocks.0.attn.cpb_mlp.0.weight"] = torch.empty(512, 2)
    with pytest.raises(ValueError, match="cpb_mlp"):
        convert_swin_to_d2(swin)
    with pytest.raises(ValueError, match="169 rows|window_size"):
        convert_swin_to_d2(swin, window_size=0)
