"""Tests for the Pix2Seq-D TransUNet denoiser (seg_zoo.modeling.pix2seq_d.transunet)."""

import pytest
import torch

from seg_zoo.modeling.pix2seq_d.transunet import TransUNet, depth_to_space

TINY = dict(
    in_channels=5,
    out_channels=6,
    dim=8,
    ch_multipliers=(1, 2),
    n_res_blocks=(1, 1),
    transformer_dim=16,
    transformer_blocks=1,
    per_head_dim=8,
)


def tiny(**kwargs):
    torch.manual_seed(0)
    return TransUNet(**{**TINY, **kwargs}).eval()


def n_params(m):
    return sum(p.numel() for p in m.parameters())


# Parameter formulas of the Keras layers the official TransUNet is built from.
def dense(i, o):
    return i * o + o


def conv(k, i, o):
    return k * k * i * o + o


def norm(c):  # GroupNormalization / LayerNormalization with scale and center
    return 2 * c


def mha(d_q, d_kv, heads, key_dim):  # Keras MultiHeadAttention, value_dim = key_dim
    inner = heads * key_dim
    return dense(d_q, inner) + 2 * dense(d_kv, inner) + dense(inner, d_q)


def resnet_block(i, o, emb=32, k=3):
    shortcut = conv(1, i, o) if i != o else 0
    return shortcut + dense(emb, 2 * o) + conv(k, i, o) + conv(k, o, o) + norm(i) + norm(o)


def official_tiny_count(cond_dim):
    """Hand list of the official TransUNet layers for TINY (widths 8, 16; emb 4*8 = 32).

    Lateral maps kept on the way down: conv_in (8), dn0 block (8), dn0 conv_dn (8), dn1 block
    (16). Up unit 1 pops 16 then 8; up unit 0 pops 8 then 8.
    """
    time_emb = dense(8, 32) + dense(32, 32)
    stem = conv(1, 5, 8) + norm(8)
    dn0 = resnet_block(8, 8) + conv(3, 8, 8)
    dn1 = resnet_block(8, 16)
    layer = norm(16) + mha(16, 16, 2, 8) + norm(16) + dense(16, 64) + dense(64, 16)
    if cond_dim:
        layer += norm(16) + mha(16, cond_dim, 2, 8)
    transformer = norm(16) + conv(1, 16, 16) + dense(32, 16) + layer + norm(16) + conv(1, 16, 16)
    up1 = resnet_block(16 + 16, 16) + resnet_block(16 + 8, 16) + conv(3, 16, 16)
    up0 = resnet_block(16 + 8, 8) + resnet_block(8 + 8, 8)
    head = norm(8) + conv(1, 8, 6)
    return time_emb + stem + dn0 + dn1 + transformer + up1 + up0 + head


def test_output_shape_non_square():
    net = tiny(cond_dim=12)
    with torch.no_grad():
        out = net(torch.randn(2, 5, 8, 12), torch.rand(2), torch.randn(2, 7, 12))
    assert out.shape == (2, 6, 8, 12)
    assert net.size_divisibility == 2


def test_time_conditioning_changes_output():
    net = tiny()
    x = torch.randn(1, 5, 8, 8)
    with torch.no_grad():
        a = net(x, torch.tensor([0.1]))
        b = net(x, torch.tensor([0.9]))
        a2 = net(x, torch.tensor([0.1]))
    assert torch.equal(a, a2)
    assert (a - b).abs().max() > 1e-4


def test_cross_attention_uses_cond_tokens():
    net = tiny(cond_dim=12)
    x, g = torch.randn(1, 5, 8, 8), torch.tensor([0.5])
    c = torch.randn(1, 3, 12)
    with torch.no_grad():
        a = net(x, g, c)
        b = net(x, g, c + 1.0)
    assert (a - b).abs().max() > 1e-4


def test_no_cross_attention_when_cond_dim_none():
    net = tiny(cond_dim=None)
    assert not any("cross" in name for name, _ in net.named_parameters())
    x, g = torch.randn(1, 5, 8, 8), torch.tensor([0.5])
    with torch.no_grad():
        a = net(x, g)
        b = net(x, g, torch.randn(1, 3, 12))  # ignored, as without 'attn' conditioning
    assert torch.equal(a, b)


@pytest.mark.parametrize("cond_dim", [None, 12])
def test_parameter_count_matches_official_layer_list(cond_dim):
    assert n_params(tiny(cond_dim=cond_dim)) == official_tiny_count(cond_dim)


def test_bad_inputs_raise_clear_errors():
    net = tiny(cond_dim=12, transformer_strides=2)
    assert net.size_divisibility == 4
    g, c = torch.rand(1), torch.randn(1, 3, 12)
    with pytest.raises(ValueError, match=r"\(1, 5, 8, 10\).*multiples of 4"):
        net(torch.randn(1, 5, 8, 10), g, c)
    with pytest.raises(ValueError, match=r"\(N, 5, H, W\)"):
        net(torch.randn(1, 4, 8, 8), g, c)
    with pytest.raises(ValueError, match="cond_tokens"):
        net(torch.randn(1, 5, 8, 8), g, None)
    with pytest.raises(ValueError, match="gamma"):
        net(torch.randn(1, 5, 8, 8), torch.rand(3), c)


def test_transformer_strides_output_shape():
    net = tiny(cond_dim=12, transformer_strides=2)
    with torch.no_grad():
        out = net(torch.randn(1, 5, 8, 12), torch.rand(1), torch.randn(1, 3, 12))
    assert out.shape == (1, 6, 8, 12)


def test_depth_to_space_uses_tf_channel_order():
    # TF depth_to_space, block 2, 2 output channels: output[2h+i, 2w+j, c] = input[h, w,
    # (2i+j)*2 + c]. Input channel k holds the constant k.
    x = torch.arange(8.0).view(1, 8, 1, 1)
    out = depth_to_space(x, 2)
    assert out.shape == (1, 2, 2, 2)
    for i in range(2):
        for j in range(2):
            for c in range(2):
                assert out[0, c, i, j] == (2 * i + j) * 2 + c
