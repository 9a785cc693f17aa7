"""Tests of the pixel decoders and of Mask2Former's config keys.

State-dict layouts are checked against the official models' (``/work/shared/reference``);
the deformable encoder and the FPN are checked against a slow re-derivation written with
functional ops and the pure-PyTorch deformable attention.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("detectron2")

from detectron2.config import get_cfg  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY  # noqa: E402

from seg_zoo.config import add_seg_zoo_config  # noqa: E402
from seg_zoo.layers import ms_deform_attn_pytorch  # noqa: E402
from seg_zoo.modeling.pixel_decoder import (  # noqa: E402
    BasePixelDecoder,
    MSDeformAttnPixelDecoder,
    TransformerEncoderPixelDecoder,
    build_pixel_decoder,
)

REFERENCE = Path("/work/shared/reference/mask2former")
R50_REFERENCE = REFERENCE / "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml.txt"
SWIN_L_REFERENCE = (
    REFERENCE
    / "coco/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml.txt"
)
PREFIX = "sem_seg_head.pixel_decoder."

R50_SHAPES = {f"res{i + 2}": ShapeSpec(channels=256 * 2**i, stride=4 * 2**i) for i in range(4)}
SWIN_L_SHAPES = {f"res{i + 2}": ShapeSpec(channels=192 * 2**i, stride=4 * 2**i) for i in range(4)}
# Backbone feature sizes of a 67x93 image (ResNet/Swin strides 4..32, rounding up).
ODD_SIZES = {"res2": (17, 24), "res3": (9, 12), "res4": (5, 6), "res5": (3, 3)}

# The official add_maskformer2_config (Mask2Former 9b0651c, mask2former/config.py): every key
# it declares with its default, as data.
OFFICIAL_MASKFORMER2_DEFAULTS = {
    "INPUT.DATASET_MAPPER_NAME": "mask_former_semantic",
    "INPUT.COLOR_AUG_SSD": False,
    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 1.0,
    "INPUT.SIZE_DIVISIBILITY": -1,
    "SOLVER.WEIGHT_DECAY_EMBED": 0.0,
    "SOLVER.OPTIMIZER": "ADAMW",
    "SOLVER.BACKBONE_MULTIPLIER": 0.1,
    "MODEL.MASK_FORMER.DEEP_SUPERVISION": True,
    "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT": 0.1,
    "MODEL.MASK_FORMER.CLASS_WEIGHT": 1.0,
    "MODEL.MASK_FORMER.DICE_WEIGHT": 1.0,
    "MODEL.MASK_FORMER.MASK_WEIGHT": 20.0,
    "MODEL.MASK_FORMER.NHEADS": 8,
    "MODEL.MASK_FORMER.DROPOUT": 0.1,
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD": 2048,
    "MODEL.MASK_FORMER.ENC_LAYERS": 0,
    "MODEL.MASK_FORMER.DEC_LAYERS": 6,
    "MODEL.MASK_FORMER.PRE_NORM": False,
    "MODEL.MASK_FORMER.HIDDEN_DIM": 256,
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 100,
    "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": "res5",
    "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ": False,
    "MODEL.MASK_FORMER.TEST.SEMANTIC_ON": True,
    "MODEL.MASK_FORMER.TEST.INSTANCE_ON": False,
    "MODEL.MASK_FORMER.TEST.PANOPTIC_ON": False,
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD": 0.0,
    "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD": 0.0,
    "MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE": False,
    "MODEL.MASK_FORMER.SIZE_DIVISIBILITY": 32,
    "MODEL.SEM_SEG_HEAD.MASK_DIM": 256,
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": 0,
    "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": "BasePixelDecoder",
    "MODEL.SWIN.PRETRAIN_IMG_SIZE": 224,
    "MODEL.SWIN.PATCH_SIZE": 4,
    "MODEL.SWIN.EMBED_DIM": 96,
    "MODEL.SWIN.DEPTHS": [2, 2, 6, 2],
    "MODEL.SWIN.NUM_HEADS": [3, 6, 12, 24],
    "MODEL.SWIN.WINDOW_SIZE": 7,
    "MODEL.SWIN.MLP_RATIO": 4.0,
    "MODEL.SWIN.QKV_BIAS": True,
    "MODEL.SWIN.QK_SCALE": None,
    "MODEL.SWIN.DROP_RATE": 0.0,
    "MODEL.SWIN.ATTN_DROP_RATE": 0.0,
    "MODEL.SWIN.DROP_PATH_RATE": 0.3,
    "MODEL.SWIN.APE": False,
    "MODEL.SWIN.PATCH_NORM": True,
    "MODEL.SWIN.OUT_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.SWIN.USE_CHECKPOINT": False,
    "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME": "MultiScaleMaskedTransformerDecoder",
    "INPUT.IMAGE_SIZE": 1024,
    "INPUT.MIN_SCALE": 0.1,
    "INPUT.MAX_SCALE": 2.0,
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES": ["res3", "res4", "res5"],
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS": 4,
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS": 8,
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": 112 * 112,
    "MODEL.MASK_FORMER.OVERSAMPLE_RATIO": 3.0,
    "MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO": 0.75,
}


def _lookup(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _reference_entries(path: Path) -> dict[str, list[int]]:
    entries = {}
    for line in path.read_text().splitlines():
        if line.startswith(PREFIX):
            name, shape = line.split("\t")
            entries[name[len(PREFIX) :]] = ast.literal_eval(shape)
    return entries


def _msdeform_decoder(shapes: dict[str, ShapeSpec], **overrides) -> MSDeformAttnPixelDecoder:
    """The decoder as the official Mask2Former YAMLs configure it."""
    kwargs = dict(
        transformer_dropout=0.0,
        transformer_nheads=8,
        transformer_dim_feedforward=1024,
        transformer_enc_layers=6,
        conv_dim=256,
        mask_dim=256,
        norm="GN",
        transformer_in_features=["res3", "res4", "res5"],
        common_stride=4,
    )
    kwargs.update(overrides)
    return MSDeformAttnPixelDecoder(shapes, **kwargs)


def _features(shapes: dict[str, ShapeSpec], batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(batch, v.channels, *ODD_SIZES[k], generator=g) for k, v in shapes.items()
    }


def _perturb(module: torch.nn.Module, seed: int = 0) -> None:
    """Move every parameter off its initial value (zero weights would hide wiring mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


# --------------------------------------------------------------------------------------------
# State-dict layout against the official models
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shapes, reference", [(R50_SHAPES, R50_REFERENCE), (SWIN_L_SHAPES, SWIN_L_REFERENCE)]
)
def test_state_dict_equals_official(shapes, reference):
    expected = _reference_entries(reference)
    assert expected, f"no {PREFIX} entries in {reference}"
    decoder = _msdeform_decoder(shapes)
    got = {k: list(v.shape) for k, v in decoder.state_dict().items()}
    assert got == expected


def _cfg(pixel_decoder: str = "MSDeformAttnPixelDecoder"):
    """The pixel-decoder keys of configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep."""
    cfg = get_cfg()
    add_seg_zoo_config(cfg)
    add_seg_zoo_config(cfg)  # twice is harmless
    cfg.merge_from_list(
        [
            "MODEL.SEM_SEG_HEAD.IN_FEATURES", ["res2", "res3", "res4", "res5"],
            "MODEL.SEM_SEG_HEAD.CONVS_DIM", 256,
            "MODEL.SEM_SEG_HEAD.MASK_DIM", 256,
            "MODEL.SEM_SEG_HEAD.NORM", "GN",
            "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", pixel_decoder,
            "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES",
            ["res3", "res4", "res5"],
            "MODEL.SEM_SEG_HEAD.COMMON_STRIDE", 4,
            "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", 6,
            "MODEL.MASK_FORMER.NHEADS", 8,
            "MODEL.MASK_FORMER.DROPOUT", 0.0,
        ]
    )  # fmt: skip
    return cfg


def test_build_from_config_matches_official_layout():
    decoder = build_pixel_decoder(_cfg(), R50_SHAPES)
    assert isinstance(decoder, MSDeformAttnPixelDecoder)
    got = {k: list(v.shape) for k, v in decoder.state_dict().items()}
    assert got == _reference_entries(R50_REFERENCE)
    layer = decoder.transformer.encoder.layers[0]
    assert layer.linear1.out_features == 1024  # fixed, not MASK_FORMER.DIM_FEEDFORWARD
    assert layer.dropout1.p == 0.0
    assert layer.self_attn.n_heads == 8 and layer.self_attn.n_points == 4
    assert decoder.transformer_in_features == ["res3", "res4", "res5"]
    assert decoder.num_fpn_levels == 1


def test_registered_in_sem_seg_heads_and_needs_forward_features():
    for name in ("BasePixelDecoder", "TransformerEncoderPixelDecoder", "MSDeformAttnPixelDecoder"):
        assert SEM_SEG_HEADS_REGISTRY.get(name) is not None
    cfg = _cfg("SemSegFPNHead")  # a detectron2 head without forward_features
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 3
    with pytest.raises(ValueError, match="forward_features"):
        build_pixel_decoder(cfg, R50_SHAPES)


# --------------------------------------------------------------------------------------------
# Forward against a slow re-derivation
# --------------------------------------------------------------------------------------------
def _sine_encoding(h: int, w: int, num_pos_feats: int) -> torch.Tensor:
    """Normalised sine encoding (1, 2*num_pos_feats, h, w), written out directly."""
    y = torch.arange(1, h + 1, dtype=torch.float64) / (h + 1e-6) * 2 * torch.pi
    x = torch.arange(1, w + 1, dtype=torch.float64) / (w + 1e-6) * 2 * torch.pi
    i = torch.arange(num_pos_feats, dtype=torch.float64)
    wavelength = 10000 ** (2 * (i // 2) / num_pos_feats)
    ang_y = y[:, None] / wavelength  # (h, F)
    ang_x = x[:, None] / wavelength  # (w, F)
    enc_y = torch.where(i % 2 == 0, ang_y.sin(), ang_y.cos())
    enc_x = torch.where(i % 2 == 0, ang_x.sin(), ang_x.cos())
    pos = torch.cat([enc_y[:, None, :].expand(h, w, -1), enc_x[None, :, :].expand(h, w, -1)], -1)
    return pos.permute(2, 0, 1)[None].float()


def _slow_deform_layer(layer, src, pos, shapes, starts):
    """One encoder layer, every step spelled out; queries sit at their own pixel centres."""
    attn = layer.self_attn
    n, s, c = src.shape
    m, lvls, p = attn.n_heads, attn.n_levels, attn.n_points
    centres = []
    for h, w in shapes:
        yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        centres.append(torch.stack([xx.flatten() / w, yy.flatten() / h], -1))
    reference = torch.cat(centres)  # (S, 2) as (x, y) in [0, 1]
    query = src + pos
    value = F.linear(src, attn.value_proj.weight, attn.value_proj.bias).view(n, s, m, c // m)
    offsets = F.linear(query, attn.sampling_offsets.weight, attn.sampling_offsets.bias)
    offsets = offsets.view(n, s, m, lvls, p, 2)
    normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float32)  # (L, 2)
    locations = reference[None, :, None, None, None, :] + offsets / normalizer[:, None, :]
    weights = F.linear(query, attn.attention_weights.weight, attn.attention_weights.bias)
    weights = weights.view(n, s, m, lvls * p).softmax(-1).view(n, s, m, lvls, p)
    sampled = ms_deform_attn_pytorch(
        value, torch.tensor(shapes), torch.tensor(starts), locations, weights
    )
    attended = F.linear(sampled, attn.output_proj.weight, attn.output_proj.bias)
    src = F.layer_norm(src + attended, (c,), layer.norm1.weight, layer.norm1.bias)
    hidden = F.relu(F.linear(src, layer.linear1.weight, layer.linear1.bias))
    ffn = F.linear(hidden, layer.linear2.weight, layer.linear2.bias)
    return F.layer_norm(src + ffn, (c,), layer.norm2.weight, layer.norm2.bias)


def _slow_forward(decoder: MSDeformAttnPixelDecoder, features):
    """mask_features, encoder output at res5 and the 3 multi-scale maps, written out."""
    sd = decoder.state_dict()
    names = ["res5", "res4", "res3"]  # the encoder's level order: coarse to fine
    srcs, pos = [], []
    for i, f in enumerate(names):
        x = F.conv2d(features[f], sd[f"input_proj.{i}.0.weight"], sd[f"input_proj.{i}.0.bias"])
        srcs.append(
            F.group_norm(x, 32, sd[f"input_proj.{i}.1.weight"], sd[f"input_proj.{i}.1.bias"])
        )
        level = sd["transformer.level_embed"][i][None, :, None, None]
        pos.append(_sine_encoding(*x.shape[-2:], 128) + level)
    shapes = [tuple(x.shape[-2:]) for x in srcs]
    starts = [
        0,
        shapes[0][0] * shapes[0][1],
        shapes[0][0] * shapes[0][1] + shapes[1][0] * shapes[1][1],
    ]
    tokens = torch.cat([x.flatten(2).transpose(1, 2) for x in srcs], 1)
    pos_tokens = torch.cat([x.flatten(2).transpose(1, 2) for x in pos], 1)
    for layer in decoder.transformer.encoder.layers:
        tokens = _slow_deform_layer(layer, tokens, pos_tokens, shapes, starts)
    n = tokens.shape[0]
    maps = []
    for (h, w), start in zip(shapes, starts):
        maps.append(tokens[:, start : start + h * w].transpose(1, 2).reshape(n, 256, h, w))
    # FPN on res2: lateral 1x1 conv + GN, add the upsampled res3 map, 3x3 conv + GN + ReLU.
    lateral = F.group_norm(
        F.conv2d(features["res2"], sd["adapter_1.weight"]),
        32,
        sd["adapter_1.norm.weight"],
        sd["adapter_1.norm.bias"],
    )
    merged = lateral + F.interpolate(maps[-1], size=lateral.shape[-2:], mode="bilinear")
    finest = F.relu(
        F.group_norm(
            F.conv2d(merged, sd["layer_1.weight"], padding=1),
            32,
            sd["layer_1.norm.weight"],
            sd["layer_1.norm.bias"],
        )
    )
    mask_features = F.conv2d(finest, sd["mask_features.weight"], sd["mask_features.bias"])
    return mask_features, maps[0], maps


def test_forward_shapes_on_odd_size():
    decoder = _msdeform_decoder(R50_SHAPES).eval()
    with torch.no_grad():
        mask_features, encoder_out, multi_scale = decoder.forward_features(_features(R50_SHAPES))
    assert mask_features.shape == (2, 256, *ODD_SIZES["res2"])
    assert encoder_out.shape == (2, 256, *ODD_SIZES["res5"])
    assert [tuple(x.shape) for x in multi_scale] == [
        (2, 256, *ODD_SIZES[f]) for f in ("res5", "res4", "res3")
    ]


def test_forward_matches_slow_reference():
    # Two layers and Swin-L widths keep it quick; the wiring is the same for six.
    decoder = _msdeform_decoder(SWIN_L_SHAPES, transformer_enc_layers=2).eval()
    _perturb(decoder)
    features = _features(SWIN_L_SHAPES, seed=1)
    with torch.no_grad():
        got = decoder.forward_features(features)
        expected = _slow_forward(decoder, features)
    torch.testing.assert_close(got[0], expected[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got[1], expected[1], atol=1e-4, rtol=1e-4)
    for a, b in zip(got[2], expected[2]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_compiled_op_matches_pytorch_reference_in_the_decoder(monkeypatch):
    decoder = _msdeform_decoder(R50_SHAPES, transformer_enc_layers=2).eval()
    _perturb(decoder, seed=2)
    features = _features(R50_SHAPES, seed=3)
    with torch.no_grad():
        got = decoder.forward_features(features)
        module = importlib.import_module("seg_zoo.layers.ms_deform_attn")
        monkeypatch.setattr(module, "ms_deform_attn", ms_deform_attn_pytorch)
        expected = decoder.forward_features(features)
    for a, b in zip([got[0], got[1], *got[2]], [expected[0], expected[1], *expected[2]]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_op_gets_cpu_level_table_and_encoder_returns_device_tensors(monkeypatch):
    module = importlib.import_module("seg_zoo.layers.ms_deform_attn")
    seen = []

    def spy(value, spatial_shapes, level_start_index, *args):
        seen.append((spatial_shapes.device.type, spatial_shapes.dtype, level_start_index.tolist()))
        return ms_deform_attn_pytorch(value, spatial_shapes, level_start_index, *args)

    monkeypatch.setattr(module, "ms_deform_attn", spy)
    decoder = _msdeform_decoder(R50_SHAPES, transformer_enc_layers=1).eval()
    srcs = [torch.randn(1, 256, *ODD_SIZES[f]) for f in ("res5", "res4", "res3")]
    with torch.no_grad():
        memory, spatial_shapes, level_start_index = decoder.transformer(srcs, srcs)
    assert seen == [("cpu", torch.int64, [0, 9, 39])]
    assert memory.shape == (1, 9 + 30 + 108, 256)
    assert spatial_shapes.tolist() == [[3, 3], [5, 6], [9, 12]]
    assert level_start_index.tolist() == [0, 9, 39]


# --------------------------------------------------------------------------------------------
# MaskFormer's FPN pixel decoders
# --------------------------------------------------------------------------------------------
def test_base_pixel_decoder_layout_and_forward():
    decoder = BasePixelDecoder(R50_SHAPES, conv_dim=64, mask_dim=32, norm="GN").eval()
    # Official names: adapters for res2..res4, output convs for all four, 3x3 mask_features.
    shapes = {k: tuple(v.shape) for k, v in decoder.state_dict().items()}
    for k, c in (("1", 256), ("2", 512), ("3", 1024)):
        assert shapes[f"adapter_{k}.weight"] == (64, c, 1, 1)
        assert shapes[f"layer_{k}.weight"] == (64, 64, 3, 3)
    assert shapes["layer_4.weight"] == (64, 2048, 3, 3)
    assert "adapter_4.weight" not in shapes
    assert shapes["mask_features.weight"] == (32, 64, 3, 3)
    with torch.no_grad():
        mask_features, encoder_out, multi_scale = decoder.forward_features(_features(R50_SHAPES))
    assert encoder_out is None
    assert mask_features.shape == (2, 32, *ODD_SIZES["res2"])
    assert [tuple(x.shape[-2:]) for x in multi_scale] == [
        ODD_SIZES[f] for f in ("res5", "res4", "res3")
    ]


def test_transformer_encoder_pixel_decoder_from_config():
    cfg = _cfg("TransformerEncoderPixelDecoder")
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 64
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 2
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 128
    cfg.MODEL.MASK_FORMER.PRE_NORM = True
    decoder = build_pixel_decoder(cfg, R50_SHAPES).eval()
    assert isinstance(decoder, TransformerEncoderPixelDecoder)
    shapes = {k: tuple(v.shape) for k, v in decoder.state_dict().items()}
    # The coarsest output conv reads the encoder's 64 channels, not res5's 2048.
    assert shapes["layer_4.weight"] == (64, 64, 3, 3)
    assert shapes["input_proj.weight"] == (64, 2048, 1, 1)
    assert shapes["transformer.encoder.layers.1.self_attn.in_proj_weight"] == (192, 64)
    assert shapes["transformer.encoder.layers.1.linear1.weight"] == (128, 64)
    assert shapes["transformer.encoder.norm.weight"] == (64,)  # pre-norm adds a final norm
    with torch.no_grad():
        mask_features, encoder_out, multi_scale = decoder.forward_features(_features(R50_SHAPES))
    assert mask_features.shape == (2, 32, *ODD_SIZES["res2"])
    assert encoder_out.shape == (2, 64, *ODD_SIZES["res5"])
    assert len(multi_scale) == 3


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------
def test_every_official_maskformer2_key_has_its_default():
    cfg = get_cfg()
    add_seg_zoo_config(cfg)
    for key, default in OFFICIAL_MASKFORMER2_DEFAULTS.items():
        assert _lookup(cfg, key) == default, key
    # A second call neither fails nor resets values already set.
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 200
    add_seg_zoo_config(cfg)
    assert cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES == 200
