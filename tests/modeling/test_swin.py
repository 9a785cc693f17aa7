"""Tests of the Swin Transformer backbone against the official state_dicts and slow references."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("detectron2")

from seg_zoo.modeling.backbone.swin import (  # noqa: E402
    SHIFT_MASK_VALUE,
    D2SwinTransformer,
    PatchMerging,
    SwinTransformer,
    SwinTransformerBlock,
    relative_position_index,
    shifted_window_mask,
)

REFERENCE = Path("/work/shared/reference")
M2F_SEM = REFERENCE / "mask2former/ade20k/semantic-segmentation/swin"

# One official Mask2Former config per Swin variant: (reference file, SwinTransformer kwargs).
VARIANTS = {
    "T": (
        M2F_SEM / "maskformer2_swin_tiny_bs16_160k.yaml.txt",
        dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7),
    ),
    "S": (
        M2F_SEM / "maskformer2_swin_small_bs16_160k.yaml.txt",
        dict(embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24], window_size=7),
    ),
    "B-384": (
        M2F_SEM / "maskformer2_swin_base_384_bs16_160k_res640.yaml.txt",
        dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12),
    ),
    "L-384": (
        M2F_SEM / "maskformer2_swin_large_IN21k_384_bs16_160k_res640.yaml.txt",
        dict(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12),
    ),
}

# Microsoft's ImageNet models with the same block layout (names under `layers.*`/`patch_embed.*`).
# Mask2Former has no Swin-B config at window 7, so B-224 is checked against Microsoft's only.
MICROSOFT = {
    "T": ("swin_tiny_patch4_window7_224.txt", VARIANTS["T"][1]),
    "S": ("swin_small_patch4_window7_224.txt", VARIANTS["S"][1]),
    "B-224": (
        "swin_base_patch4_window7_224.txt",
        dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=7),
    ),
    "B-384": ("swin_base_patch4_window12_384_finetune.txt", VARIANTS["B-384"][1]),
    "L-384": ("swin_large_patch4_window12_384_22kto1k_finetune.txt", VARIANTS["L-384"][1]),
}


def read_reference(path: Path, prefix: str = "") -> tuple[dict[str, tuple[int, ...]], dict]:
    """Parse a reference listing: ({name: shape} of entries under ``prefix``, stripped; totals)."""
    shapes, totals = {}, {}
    for line in path.read_text().splitlines():
        if line.startswith("# total"):
            totals = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
        elif line.startswith(prefix):
            name, shape = line.split("\t")
            shapes[name[len(prefix) :]] = tuple(int(s) for s in re.findall(r"\d+", shape))
    return shapes, totals


def state_dict_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def build_on_meta(**kwargs) -> SwinTransformer:
    # Only names and shapes are compared, so skip allocating and initializing real weights.
    with torch.device("meta"):
        return SwinTransformer(**kwargs)


# --------------------------------------------------------------------------------------------
# (a) state_dict names and shapes equal the official ones
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_state_dict_matches_official_mask2former(variant):
    path, kwargs = VARIANTS[variant]
    expected, _ = read_reference(path, prefix="backbone.")
    model = build_on_meta(**kwargs)

    assert state_dict_shapes(model) == expected
    # The only buffers are the relative position indices; every other entry is a parameter.
    buffers = {name for name, _ in model.named_buffers()}
    assert buffers == {n for n in expected if n.endswith("attn.relative_position_index")}
    expected_params = sum(math.prod(s) for n, s in expected.items() if n not in buffers)
    assert sum(p.numel() for p in model.parameters()) == expected_params


@pytest.mark.parametrize("variant", list(MICROSOFT))
def test_blocks_match_microsoft_swin(variant):
    """Same block names/shapes as Microsoft's ImageNet models (their checkpoints convert by a
    plain rename-free copy); parameter counts agree with its totals up to head/norm layers."""
    name, kwargs = MICROSOFT[variant]
    reference, totals = read_reference(REFERENCE / "swin" / name)
    model = build_on_meta(**kwargs)
    ours = state_dict_shapes(model)

    # Microsoft's model stores fixed-size shift masks; ours are rebuilt per input size.
    shared = {n: s for n, s in reference.items() if not n.endswith("attn_mask")}
    shared = {n: s for n, s in shared.items() if n.startswith(("layers.", "patch_embed."))}
    assert {n: s for n, s in ours.items() if not re.match(r"norm\d\.", n)} == shared

    # Parameters: Microsoft's total, less its classifier and final norm, plus norm0..norm3.
    ms_extra = sum(math.prod(reference[n]) for n in reference if n.startswith(("head.", "norm.")))
    ours_norms = sum(2 * c for c in model.num_features)
    assert sum(p.numel() for p in model.parameters()) == totals["params"] - ms_extra + ours_norms


def test_drop_path_grows_linearly():
    model = build_on_meta(**VARIANTS["T"][1], drop_path_rate=0.3)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for layer in model.layers for b in layer.blocks]
    assert rates == pytest.approx([0.3 * i / 11 for i in range(12)])


# --------------------------------------------------------------------------------------------
# (b) hand-checkable relative position index and shift mask
# --------------------------------------------------------------------------------------------
def test_relative_position_index_window_2():
    # Tokens (row, col): 0=(0,0) 1=(0,1) 2=(1,0) 3=(1,1); offset (dr, dc) in {-1,0,1}^2 goes to
    # table row (dr + 1) * 3 + (dc + 1), so e.g. token 0 seen from token 3 has (-1,-1) -> 0.
    expected = torch.tensor(
        [
            [4, 3, 1, 0],
            [5, 4, 2, 1],
            [7, 6, 4, 3],
            [8, 7, 5, 4],
        ]
    )
    assert torch.equal(relative_position_index((2, 2)), expected)


def test_relative_position_index_rectangular():
    # Window 1 x 3: offsets dc in {-2..2} map to 0..4 (one row since Wh = 1).
    expected = torch.tensor([[2, 1, 0], [3, 2, 1], [4, 3, 2]])
    assert torch.equal(relative_position_index((1, 3)), expected)


def test_shifted_window_mask_4x4_window_2_shift_1():
    # After rolling a 4x4 map by -1, rows/cols 3 hold wrapped-around tokens. Regions (row, col):
    #   rows 0-1 -> 0, row 2 -> 1, row 3 -> 2 (same for columns), id = 3 * row_region + col_region
    #   window (0,0): ids 0 0 / 0 0   window (0,1): ids 1 2 / 1 2
    #   window (1,0): ids 3 3 / 6 6   window (1,1): ids 4 5 / 7 8
    m = SHIFT_MASK_VALUE
    expected = torch.tensor(
        [
            [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
            [[0, m, 0, m], [m, 0, m, 0], [0, m, 0, m], [m, 0, m, 0]],
            [[0, 0, m, m], [0, 0, m, m], [m, m, 0, 0], [m, m, 0, 0]],
            [[0, m, m, m], [m, 0, m, m], [m, m, 0, m], [m, m, m, 0]],
        ]
    )
    assert torch.equal(shifted_window_mask(4, 4, window_size=2, shift_size=1), expected)


# --------------------------------------------------------------------------------------------
# (c) windowed attention equals a slow per-window implementation
# --------------------------------------------------------------------------------------------
def slow_block(block: SwinTransformerBlock, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Swin block written out window by window and token pair by token pair (official semantics:
    zero padding after norm1, cyclic shift, tokens wrapped around by the shift only see each
    other, bias of the relative offset, then the MLP)."""
    B, _, C = x.shape
    ws, s, attn = block.window_size, block.shift_size, block.attn
    nH, hd = attn.num_heads, C // attn.num_heads
    table = attn.relative_position_bias_table  # ((2ws-1)^2, nH)
    Hp, Wp = math.ceil(H / ws) * ws, math.ceil(W / ws) * ws

    y = block.norm1(x).view(B, H, W, C)
    y = torch.cat([y, y.new_zeros(B, Hp - H, W, C)], dim=1)
    y = torch.cat([y, y.new_zeros(B, Hp, Wp - W, C)], dim=2)
    # Position (r, c) of the shifted map holds token ((r + s) % Hp, (c + s) % Wp).
    rows, cols = (torch.arange(Hp) + s) % Hp, (torch.arange(Wp) + s) % Wp
    z = y[:, rows][:, :, cols]
    wrapped_r = [s > 0 and r >= Hp - s for r in range(Hp)]
    wrapped_c = [s > 0 and c >= Wp - s for c in range(Wp)]

    out = torch.zeros_like(z)
    for r0 in range(0, Hp, ws):
        for c0 in range(0, Wp, ws):
            pos = [(r0 + i, c0 + j) for i in range(ws) for j in range(ws)]
            t = torch.stack([z[:, r, c] for r, c in pos], dim=1)  # (B, N, C)
            q, k, v = F.linear(t, attn.qkv.weight, attn.qkv.bias).split(C, dim=-1)
            heads = []
            for h in range(nH):
                qh, kh, vh = (u[..., h * hd : (h + 1) * hd] for u in (q, k, v))
                logits = attn.scale * qh @ kh.transpose(1, 2)  # (B, N, N)
                extra = torch.zeros(len(pos), len(pos), dtype=x.dtype)
                for a, (ra, ca) in enumerate(pos):
                    for b, (rb, cb) in enumerate(pos):
                        offset = (ra - rb + ws - 1) * (2 * ws - 1) + (ca - cb + ws - 1)
                        extra[a, b] = table[offset, h]
                        if wrapped_r[ra] != wrapped_r[rb] or wrapped_c[ca] != wrapped_c[cb]:
                            extra[a, b] += SHIFT_MASK_VALUE
                heads.append(torch.softmax(logits + extra, dim=-1) @ vh)
            o = attn.proj(torch.cat(heads, dim=-1))  # (B, N, C)
            for n, (r, c) in enumerate(pos):
                out[:, r, c] = o[:, n]
    unshifted = torch.zeros_like(out)
    unshifted[:, rows[:, None], cols[None, :]] = out
    x = x + unshifted[:, :H, :W].reshape(B, H * W, C)
    return x + block.mlp(block.norm2(x))


@pytest.mark.parametrize("shift", [0, 1])
@pytest.mark.parametrize("size", [(6, 9), (7, 8)])  # (7, 8) needs padding to 9 x 9
def test_block_matches_slow_reference(shift, size):
    torch.manual_seed(0)
    H, W = size
    block = SwinTransformerBlock(dim=12, num_heads=3, window_size=3, shift_size=shift)
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_()  # make the bias matter
    block = block.double().eval()
    x = torch.randn(2, H * W, 12, dtype=torch.float64)
    ws = block.window_size
    mask = shifted_window_mask(math.ceil(H / ws) * ws, math.ceil(W / ws) * ws, ws, 1).double()

    with torch.no_grad():
        torch.testing.assert_close(block(x, H, W, mask), slow_block(block, x, H, W))


def test_patch_merging_gathers_2x2_neighbours():
    torch.manual_seed(0)
    H, W, C = 5, 3, 4  # odd sizes: zero-padded to 6 x 4
    merge = PatchMerging(C).double()
    x = torch.randn(1, H * W, C, dtype=torch.float64)
    grid = x.view(H, W, C)

    def at(r, c):
        return grid[r, c] if r < H and c < W else torch.zeros(C, dtype=torch.float64)

    # Order of the official weights: (2i, 2j), (2i+1, 2j), (2i, 2j+1), (2i+1, 2j+1).
    gathered = torch.stack(
        [
            torch.cat([at(r, c), at(r + 1, c), at(r, c + 1), at(r + 1, c + 1)])
            for r in range(0, H, 2)
            for c in range(0, W, 2)
        ]
    )
    with torch.no_grad():
        expected = merge.reduction(merge.norm(gathered))
        torch.testing.assert_close(merge(x, H, W)[0], expected)


# --------------------------------------------------------------------------------------------
# (d) output shapes, strides, padding, checkpointing, freezing
# --------------------------------------------------------------------------------------------
SMALL = dict(embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=5)


def test_output_shapes_for_odd_input_size():
    torch.manual_seed(0)
    backbone = D2SwinTransformer(**SMALL, drop_path_rate=0.0).eval()
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 67, 93))
    # 67 x 93 -> ceil(/4) = 17 x 24, then ceil-halving: 9 x 12, 5 x 6, 3 x 3.
    expected = {
        "res2": (2, 16, 17, 24),
        "res3": (2, 32, 9, 12),
        "res4": (2, 64, 5, 6),
        "res5": (2, 128, 3, 3),
    }
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert all(v.is_contiguous() and torch.isfinite(v).all() for v in out.values())

    shapes = backbone.output_shape()
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == {
        "res2": (16, 4),
        "res3": (32, 8),
        "res4": (64, 16),
        "res5": (128, 32),
    }
    assert backbone.size_divisibility == 32


def test_out_features_subset_keeps_all_norms():
    backbone = D2SwinTransformer(**SMALL, out_features=["res3", "res5"]).eval()
    assert list(backbone.output_shape()) == ["res3", "res5"]
    with torch.no_grad():
        assert list(backbone(torch.randn(1, 3, 32, 32))) == ["res3", "res5"]
    # Checkpoints of the official backbone always hold norm0..norm3.
    assert all(hasattr(backbone, f"norm{i}") for i in range(4))


def test_images_in_a_batch_do_not_interact():
    torch.manual_seed(0)
    backbone = SwinTransformer(**SMALL).eval()
    x = torch.randn(3, 3, 40, 44)
    with torch.no_grad():
        together = backbone(x)
        alone = backbone(x[1:2])
    for name in together:
        torch.testing.assert_close(together[name][1:2], alone[name], rtol=1e-4, atol=1e-5)


def test_gradient_checkpointing_gives_same_outputs_and_grads():
    torch.manual_seed(0)
    plain = SwinTransformer(**SMALL, drop_path_rate=0.0)
    ckpt = SwinTransformer(**SMALL, drop_path_rate=0.0, use_checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 36, 28)
    for model in (plain, ckpt):
        sum(o.square().mean() for o in model(x).values()).backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_frozen_stages():
    model = SwinTransformer(**SMALL, frozen_stages=2).train()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("patch_embed.", "layers.0.")) for n in frozen)
    assert not model.layers[0].training and model.layers[1].training


# --------------------------------------------------------------------------------------------
# (e) D2SwinTransformer from a detectron2 config
# --------------------------------------------------------------------------------------------
OFFICIAL_SWIN_DEFAULTS = {
    "PRETRAIN_IMG_SIZE": 224,
    "PATCH_SIZE": 4,
    "EMBED_DIM": 96,
    "DEPTHS": [2, 2, 6, 2],
    "NUM_HEADS": [3, 6, 12, 24],
    "WINDOW_SIZE": 7,
    "MLP_RATIO": 4.0,
    "QKV_BIAS": True,
    "QK_SCALE": None,
    "DROP_RATE": 0.0,
    "ATTN_DROP_RATE": 0.0,
    "DROP_PATH_RATE": 0.3,
    "APE": False,
    "PATCH_NORM": True,
    "OUT_FEATURES": ["res2", "res3", "res4", "res5"],
    "USE_CHECKPOINT": False,
}


def swin_cfg(**swin_values):
    from detectron2.config import get_cfg

    from seg_zoo import add_seg_zoo_config

    cfg = get_cfg()
    add_seg_zoo_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "D2SwinTransformer"
    for key, value in swin_values.items():
        cfg.MODEL.SWIN[key] = value
    return cfg


def test_config_defaults_are_official():
    from seg_zoo.config import add_swin_config

    cfg = swin_cfg()
    assert dict(cfg.MODEL.SWIN) == OFFICIAL_SWIN_DEFAULTS
    add_swin_config(cfg)  # a second call changes nothing
    assert dict(cfg.MODEL.SWIN) == OFFICIAL_SWIN_DEFAULTS


def test_build_backbone_from_swin_tiny_config():
    from detectron2.modeling import build_backbone

    # MODEL.SWIN of configs/ade20k/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_160k.yaml
    cfg = swin_cfg(
        EMBED_DIM=96,
        DEPTHS=[2, 2, 6, 2],
        NUM_HEADS=[3, 6, 12, 24],
        WINDOW_SIZE=7,
        APE=False,
        DROP_PATH_RATE=0.3,
        PATCH_NORM=True,
    )
    backbone = build_backbone(cfg)
    assert isinstance(backbone, D2SwinTransformer)
    expected, _ = read_reference(VARIANTS["T"][0], prefix="backbone.")
    assert state_dict_shapes(backbone) == expected
    assert {k: (s.channels, s.stride) for k, s in backbone.output_shape().items()} == {
        "res2": (96, 4),
        "res3": (192, 8),
        "res4": (384, 16),
        "res5": (768, 32),
    }
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 64, 96))
    assert {k: tuple(v.shape[-2:]) for k, v in out.items()} == {
        "res2": (16, 24),
        "res3": (8, 12),
        "res4": (4, 6),
        "res5": (2, 3),
    }


def test_build_backbone_from_swin_large_config():
    from detectron2.modeling import build_backbone

    # MODEL.SWIN of .../maskformer2_swin_large_IN21k_384_bs16_160k_res640.yaml
    cfg = swin_cfg(
        EMBED_DIM=192,
        DEPTHS=[2, 2, 18, 2],
        NUM_HEADS=[6, 12, 24, 48],
        WINDOW_SIZE=12,
        APE=False,
        DROP_PATH_RATE=0.3,
        PATCH_NORM=True,
        PRETRAIN_IMG_SIZE=384,
    )
    with torch.device("meta"):
        backbone = build_backbone(cfg)
    expected, _ = read_reference(VARIANTS["L-384"][0], prefix="backbone.")
    assert state_dict_shapes(backbone) == expected
