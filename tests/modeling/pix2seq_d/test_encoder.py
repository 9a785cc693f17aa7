"""Tests for the Pix2Seq-D image encoder and feature-pyramid merge (seg_zoo.modeling.pix2seq_d)."""

import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.resnet import build_resnet_backbone

from seg_zoo.modeling.pix2seq_d.encoder import (
    FeaturePyramidMerge,
    ResNetTransformerEncoder,
    position_codes_1d,
    position_codes_2d,
    sincos_encoding,
)

TWO_PI = 6.2831852  # the official normalization_max


def tiny_encoder(**kwargs):
    args = dict(num_layers=1, dim=32, mlp_dim=64, num_heads=4, drop_path=0.0, drop_units=0.0)
    args.update(kwargs)
    return ResNetTransformerEncoder(**args).eval()


def test_encoder_shapes_and_strides_non_square():
    torch.manual_seed(0)
    enc = tiny_encoder()
    assert enc.size_divisibility == 16
    with torch.no_grad():
        tokens, feats = enc(torch.randn(2, 3, 48, 80))
    # Stride 16 -> a 3x5 grid; res2 / res3 at strides 4 / 8 with R-50 widths 256 / 512.
    assert tokens.shape == (2, 15, 32)
    assert [tuple(f.shape) for f in feats] == [(2, 256, 12, 20), (2, 512, 6, 10), (2, 32, 3, 5)]
    # The last map is the tokens laid out row-major over the grid.
    assert torch.equal(feats[2][1, :, 2, 3], tokens[1, 2 * 5 + 3])
    # Tokens come after the output LayerNorm (no affine change at init): zero mean per token.
    assert tokens.mean(-1).abs().max() < 1e-5


def test_encoder_rejects_bad_sizes():
    enc = tiny_encoder()
    with pytest.raises(ValueError, match="multiple of 16"):
        enc(torch.randn(1, 3, 40, 48))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        enc(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match="sin_cos"):
        ResNetTransformerEncoder(pos_encoding="learned")


def test_sincos_encoding_matches_official_formula():
    # Official positional_encoding(x, 4): rates 10000**(-2k/4) = 1, 0.01; sines then cosines.
    v = 0.5
    expected = [math.sin(v), math.sin(0.01 * v), math.cos(v), math.cos(0.01 * v)]
    got = sincos_encoding(torch.tensor([v]), 4)[0]
    assert torch.allclose(got, torch.tensor(expected), atol=1e-6)


def test_position_codes_2d_hand_computed():
    # 2 rows x 3 cols, dim 8: rows get a 4-dim code of y/(2-1)*2pi in channels 0..3, columns a
    # 4-dim code of x/(3-1)*2pi in channels 4..7; each 4-dim code is [sin a, sin a/100, cos a,
    # cos a/100].
    codes = position_codes_2d(2, 3, 8)
    assert codes.shape == (6, 8)

    def code4(a):
        return [math.sin(a), math.sin(a / 100), math.cos(a), math.cos(a / 100)]

    for r in range(2):
        for c in range(3):
            y, x = r / 1 * TWO_PI, c / 2 * TWO_PI
            expected = torch.tensor(code4(y) + code4(x))
            assert torch.allclose(codes[r * 3 + c], expected, atol=1e-5), (r, c)


def test_position_codes_single_row_uses_1d_code():
    # Official add_vis_pos_emb: a 1-row grid gets get_1d_position_codes(n, dim).
    codes = position_codes_2d(1, 4, 8)
    # dim 8: rates 10000**(-2k/8) = 10**-k for k = 0..3.
    a = 2 / 3 * TWO_PI  # third of four positions
    expected = [math.sin(a * 10**-k) for k in range(4)] + [math.cos(a * 10**-k) for k in range(4)]
    assert torch.allclose(codes[2], torch.tensor(expected), atol=1e-5)
    assert torch.allclose(codes, position_codes_1d(4, 8))


def _gn(x, channels):
    # Official group count for a width: min(width // 4, 32).
    return F.group_norm(x, min(channels // 4, 32), eps=1e-5)


def _set_conv(conv, weight_value, bias_value):
    with torch.no_grad():
        conv.weight.fill_(weight_value)
        conv.bias.fill_(bias_value)


def test_feature_pyramid_merge_matches_hand_composition():
    torch.manual_seed(0)
    f0, f1, f2 = torch.randn(1, 4, 8, 8), torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)
    fpm = FeaturePyramidMerge([4, 8, 8], out_dim=4)
    # Set convs to constants so the reference can be written with plain arithmetic:
    # a 1x1 conv with weight w and bias b maps x to w * sum_c x_c + b in every output channel.
    for blk, (w1, b1, w2, b2) in zip(
        list(fpm.upsample_blocks) + [fpm.final_block],
        [(0.1, 0.2, 0.05, -0.1), (0.3, -0.2, 0.02, 0.1), (0.2, 0.0, 0.03, 0.05)],
    ):
        _set_conv(blk.conv1, w1, b1)
        _set_conv(blk.conv2, w2, b2)

    def conv1x1_const(x, out_ch, w, b):
        return (w * x.sum(1, keepdim=True) + b).expand(-1, out_ch, -1, -1)

    def conv3x3_const(x, out_ch, w, b):
        # Sum over channels and a zero-padded 3x3 window, times w, plus b.
        s = F.avg_pool2d(x.sum(1, keepdim=True), 3, stride=1, padding=1, count_include_pad=True)
        return (w * 9 * s + b).expand(-1, out_ch, -1, -1)

    def up(x, factor):
        return x.repeat_interleave(factor, -2).repeat_interleave(factor, -1)

    # Level 2 (2x2, 8 ch) into level 1 (4x4, 8 ch), with block weights (0.3, -0.2, 0.02, 0.1).
    lr = F.silu(_gn(conv1x1_const(f2, 8, 0.3, -0.2), 8))
    x = F.silu(_gn(conv3x3_const(f1 + up(lr, 2), 8, 0.02, 0.1), 8))
    # Into level 0 (8x8, 4 ch) with (0.1, 0.2, 0.05, -0.1).
    lr = F.silu(_gn(conv1x1_const(x, 4, 0.1, 0.2), 4))
    x = F.silu(_gn(conv3x3_const(f0 + up(lr, 2), 4, 0.05, -0.1), 4))
    # Final block to out_dim 4 at 16x16 with (0.2, 0.0, 0.03, 0.05), no high-res input.
    lr = F.silu(_gn(conv1x1_const(x, 4, 0.2, 0.0), 4))
    expected = F.silu(_gn(conv3x3_const(up(lr, 2), 4, 0.03, 0.05), 4))

    with torch.no_grad():
        got = fpm([f0, f1, f2], (16, 16))
    assert got.shape == (1, 4, 16, 16)
    assert torch.allclose(got, expected, atol=1e-5)

    # out_size equal to the highest-resolution map: the official code skips the final block.
    with torch.no_grad():
        same = fpm([f0, f1, f2], (8, 8))
    assert torch.allclose(same, x, atol=1e-5)


def test_feature_pyramid_merge_skips_levels_above_out_size():
    torch.manual_seed(0)
    fpm = FeaturePyramidMerge([4, 8], out_dim=6).eval()
    f0, f1 = torch.randn(1, 4, 8, 8), torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        got = fpm([f0, f1], (4, 4))
    # f0 (8x8) is larger than out_size (4x4): the official code keeps the low-res map as is.
    assert torch.equal(got, f1)
    with pytest.raises(ValueError, match=r"features\[1\] must be \(N, 8, h, w\)"):
        fpm([f0, torch.randn(1, 7, 4, 4)], (8, 8))


def _d2_resnet(out_features, stride_in_1x1=False):
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = stride_in_1x1
    cfg.MODEL.RESNETS.OUT_FEATURES = out_features
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    return build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()


def test_detectron2_resnet_weights_load_and_match_c4():
    torch.manual_seed(0)
    d2 = _d2_resnet(["res2", "res3", "res4", "res5"])
    # Give the frozen BN statistics non-trivial values so a misplaced key would show.
    sd = d2.state_dict()
    for k, v in sd.items():
        if k.endswith(("running_mean", "bias")):
            v.copy_(torch.randn_like(v) * 0.1)
        elif k.endswith("running_var"):
            v.copy_(torch.rand_like(v) + 0.5)
    d2.load_state_dict(sd)
    assert any(k.startswith("res2.0.conv1.") for k in sd) and "stem.conv1.weight" in sd

    enc = tiny_encoder()
    c4_sd = {k: v for k, v in sd.items() if not k.startswith("res5.")}
    result = enc.backbone.load_state_dict(c4_sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    # 'c4' = detectron2's R-50 up to res4 with the stride on the 3x3 conv.
    img = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        ref = d2(img)
        got = enc.backbone(img)
    for name in ("res2", "res3", "res4"):
        assert torch.allclose(got[name], ref[name], atol=1e-5), name
