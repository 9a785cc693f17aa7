"""Tests of the ViT backbone and the timm weight converter against timm and the official listings.

The numerical reference is timm's own ``VisionTransformer`` (an independent implementation
built here with random weights); parameter totals come from the state_dict listings of the
official Segmenter models in /work/shared/reference/segmenter/.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("detectron2")
timm = pytest.importorskip("timm")

from detectron2.config import get_cfg  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling import build_backbone  # noqa: E402
from detectron2.structures import ImageList  # noqa: E402

from seg_zoo.config import add_seg_zoo_config  # noqa: E402
from seg_zoo.model_zoo.convert_vit import convert_timm_vit, convert_timm_vit_file  # noqa: E402
from seg_zoo.modeling.backbone.vit import (  # noqa: E402
    VisionTransformer,
    resize_pos_embed,
    vit_base,
    vit_large,
    vit_small,
    vit_tiny,
)

SEGMENTER_REF = Path("/work/shared/reference/segmenter")

# Small sizes keep every forward well under a second on CPU; the layer structure is the real one.
TINY = dict(embed_dim=192, num_heads=3, depth=2)


def _timm_vit(name: str, img_size: int, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, img_size=img_size, depth=2, **kwargs)
    # timm zero-initialises some biases; random values make the comparison meaningful.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def _timm_patch_tokens(model, x: torch.Tensor, patch: int) -> torch.Tensor:
    """timm's tokens after the final norm, prefix tokens removed, as (N, D, H/p, W/p)."""
    tokens = model.forward_features(x)[:, model.num_prefix_tokens :]
    n, _, h, w = x.shape
    return tokens.transpose(1, 2).reshape(n, -1, h // patch, w // patch)


# --------------------------------------------------------------------------------------------
# (1) same tokens as timm after loading its weights
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, distilled",
    [("vit_tiny_patch16_224", False), ("deit_tiny_distilled_patch16_224", True)],
)
def test_matches_timm_after_loading_its_state_dict(name, distilled):
    ref = _timm_vit(name, img_size=64)
    ours = VisionTransformer(**TINY, patch_size=16, pretrain_img_size=64, distilled=distilled)
    state = convert_timm_vit(ref.state_dict())
    assert not any(k.startswith(("head.", "head_dist.")) for k in state)
    ours.load_state_dict(state, strict=True)
    ours.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = _timm_patch_tokens(ref, x, 16)
        got = ours(x)["vit"]
    assert got.shape == (2, 192, 4, 4)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_matches_timm_at_another_input_size():
    # timm with dynamic_img_size resamples its (4, 4) grid to (6, 8) at run time, as ours does.
    ref = _timm_vit("vit_tiny_patch16_224", img_size=64, dynamic_img_size=True)
    ours = VisionTransformer(**TINY, patch_size=16, pretrain_img_size=64).eval()
    ours.load_state_dict(convert_timm_vit(ref.state_dict()), strict=True)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        expected = _timm_patch_tokens(ref, x, 16)
        got = ours(x)["vit"]
    assert got.shape == (1, 192, 6, 8)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_converted_pos_embed_resized_to_target_grid_matches_timm():
    # Converting 64 px (grid 4) weights for a model stored at 96 px (grid 6): the converter's
    # resize must equal timm's run-time resize of the original weights.
    ref = _timm_vit("deit_tiny_distilled_patch16_224", img_size=64, dynamic_img_size=True)
    messages = []
    state = convert_timm_vit(ref.state_dict(), pretrain_grid=6, log=messages.append)
    assert state["pos_embed"].shape == (1, 2 + 36, 192)
    assert any("head_dist" in m for m in messages)
    assert any("resized" in m for m in messages)
    ours = VisionTransformer(**TINY, patch_size=16, pretrain_img_size=96, distilled=True).eval()
    ours.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(
            ours(x)["vit"], _timm_patch_tokens(ref, x, 16), atol=1e-5, rtol=0
        )


def test_converter_reads_safetensors_and_keeps_head_on_request(tmp_path):
    from safetensors.torch import save_file

    ref = _timm_vit("vit_tiny_patch16_224", img_size=64)
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    path = tmp_path / "vit.safetensors"
    save_file(state, str(path))
    converted = convert_timm_vit_file(path)
    assert set(converted) == {k for k in state if not k.startswith("head.")}
    kept = convert_timm_vit(state, drop_head=False)
    assert "head.weight" in kept and "head.bias" in kept


def test_converter_rejects_foreign_entries():
    ref = _timm_vit("vit_tiny_patch16_224", img_size=64)
    state = dict(ref.state_dict())
    state["blocks.0.ls1.gamma"] = torch.ones(192)
    with pytest.raises(ValueError, match=r"blocks\.0\.ls1\.gamma"):
        convert_timm_vit(state)
    with pytest.raises(ValueError, match="not a timm ViT"):
        convert_timm_vit({"layers.0.weight": torch.ones(1)})
    bad = dict(ref.state_dict())
    bad["pos_embed"] = bad["pos_embed"][:, :-1]  # 15 grid positions: not a square
    with pytest.raises(ValueError, match="pos_embed.*not a square grid"):
        convert_timm_vit(bad, pretrain_grid=8)


# --------------------------------------------------------------------------------------------
# (2) position-embedding interpolation
# --------------------------------------------------------------------------------------------
def test_pos_embed_resize_is_identity_at_pretrain_grid():
    pos = torch.randn(1, 2 + 5 * 7, 8)
    out = resize_pos_embed(pos, (5, 7), 2, old_grid_size=(5, 7))
    assert torch.equal(out, pos)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_pos_embed_resize_keeps_constants_and_prefix(mode):
    dim = 4
    prefix = torch.randn(1, 1, dim)
    values = torch.arange(dim, dtype=torch.float32)
    grid = values.expand(1, 16, dim)  # every position holds the same vector
    out = resize_pos_embed(torch.cat([prefix, grid], 1), (7, 3), 1, mode=mode)
    assert out.shape == (1, 1 + 21, dim)
    assert torch.equal(out[:, :1], prefix)
    torch.testing.assert_close(out[0, 1:], values.expand(21, dim), atol=1e-6, rtol=0)


def test_pos_embed_resize_matches_hand_computed_bilinear_upsampling():
    # A 1x2 grid [0, 1] upsampled to 1x4 with align_corners=False samples source x at
    # (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 -> clamped to [0, 1]: 0, 0.25, 0.75, 1.
    pos = torch.tensor([[[9.0], [0.0], [1.0]]])  # prefix 9, then the grid
    out = resize_pos_embed(pos, (1, 4), 1, old_grid_size=(1, 2), mode="bilinear")
    assert out.flatten().tolist() == [9.0, 0.0, 0.25, 0.75, 1.0]


# --------------------------------------------------------------------------------------------
# (3) parameter totals of the official Segmenter encoders
# --------------------------------------------------------------------------------------------
def _encoder_total(listing: Path) -> tuple[int, int]:
    """(elements of every ``encoder.*`` entry, embed dim) from an official listing."""
    total, dim = 0, None
    for line in listing.read_text().splitlines():
        if line.startswith("#") or not line.startswith("encoder."):
            continue
        name, shape = line.split("\t")
        numbers = [int(s) for s in re.findall(r"\d+", shape)]
        total += math.prod(numbers)
        if name == "encoder.norm.weight":
            dim = numbers[0]
    return total, dim


# listing -> (factory, patch size, image size Segmenter builds it for, distilled)
SEGMENTER_ENCODERS = {
    "seg_tiny_mask.txt": (vit_tiny, 16, 512, False),
    "seg_tiny_linear.txt": (vit_tiny, 16, 512, False),
    "seg_small_mask.txt": (vit_small, 16, 512, False),
    "seg_small_linear.txt": (vit_small, 16, 512, False),
    "seg_base_mask.txt": (vit_base, 16, 512, False),
    "seg_base_linear.txt": (vit_base, 16, 512, False),
    "seg_base_patch8.txt": (vit_base, 8, 512, False),
    "seg_base_deit_mask.txt": (vit_base, 16, 512, True),
    "seg_base_deit_linear.txt": (vit_base, 16, 512, True),
    "seg_large_mask_640.txt": (vit_large, 16, 640, False),
    "seg_large_linear_640.txt": (vit_large, 16, 640, False),
}


@pytest.mark.parametrize("listing", sorted(SEGMENTER_ENCODERS))
def test_parameter_totals_match_official_segmenter_encoders(listing):
    path = SEGMENTER_REF / listing
    if not path.is_file():
        pytest.skip(f"{path} not present")
    expected, dim = _encoder_total(path)
    factory, patch, img_size, distilled = SEGMENTER_ENCODERS[listing]
    with torch.device("meta"):  # no memory and no init cost for Base/Large
        model = factory(patch_size=patch, pretrain_img_size=img_size, distilled=distilled)
    ours = sum(p.numel() for p in model.parameters())
    # The official encoder carries timm's unused 1000-class ImageNet head (and DeiT's second
    # head, head_dist); our backbone has no head, so their size is added to our count.
    num_heads_ = 2 if distilled else 1
    head = num_heads_ * (1000 * dim + 1000)
    assert model.embed_dim == dim
    assert ours + head == expected


# --------------------------------------------------------------------------------------------
# (4) bad input, (5) output shape and stride
# --------------------------------------------------------------------------------------------
def test_input_smaller_than_a_patch_raises_clear_error():
    model = VisionTransformer(**TINY, patch_size=16, pretrain_img_size=32)
    with pytest.raises(ValueError, match=r"8x48.*patch size 16"):
        model(torch.randn(1, 3, 8, 48))
    with pytest.raises(ValueError, match=r"40x48.*not a multiple of the patch size 16"):
        model(torch.randn(1, 3, 40, 48))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        model(torch.randn(3, 32, 32))


def test_output_shape_and_stride_for_sizes_padded_by_the_caller():
    cfg = get_cfg()
    add_seg_zoo_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "build_vit_backbone"
    cfg.MODEL.VIT.EMBED_DIM, cfg.MODEL.VIT.DEPTH, cfg.MODEL.VIT.NUM_HEADS = 64, 1, 2
    cfg.MODEL.VIT.PATCH_SIZE = 8
    cfg.MODEL.VIT.PRETRAIN_IMG_SIZE = 32
    model = build_backbone(cfg, ShapeSpec(channels=3)).eval()
    assert isinstance(model, VisionTransformer)
    assert model.output_shape() == {"vit": ShapeSpec(channels=64, stride=8)}
    assert model.size_divisibility == 8
    images = [torch.randn(3, 37, 50), torch.randn(3, 20, 9)]
    batch = ImageList.from_tensors(images, size_divisibility=model.size_divisibility)
    assert tuple(batch.tensor.shape[-2:]) == (40, 56)
    with torch.no_grad():
        out = model(batch.tensor)
    assert list(out) == ["vit"]
    assert out["vit"].shape == (2, 64, 40 // 8, 56 // 8)


def test_stochastic_depth_grows_linearly_over_blocks():
    model = VisionTransformer(embed_dim=32, depth=5, num_heads=2, drop_path_rate=0.2)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in model.blocks]
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])


def test_variant_factories_reject_unknown_patch_size():
    with pytest.raises(ValueError, match="patch_size must be one of"):
        with torch.device("meta"):
            vit_tiny(patch_size=14)
