"""Tests of the MaskFormer / Mask2Former transformer decoders.

State-dict names and shapes are compared with the lists recorded from the official code
(/work/shared/reference, see its README); the attention-mask rule with hand-worked tensors and a
slow per-query loop; layer order and feature-level schedule with hooks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg

from seg_zoo import add_seg_zoo_config
from seg_zoo.modeling.transformer_decoder import (
    TRANSFORMER_DECODER_REGISTRY,
    MultiScaleMaskedTransformerDecoder,
    StandardTransformerDecoder,
    build_transformer_decoder,
    compute_attention_mask,
)
from seg_zoo.modeling.transformer_decoder.mask2former_transformer_decoder import (
    CrossAttentionLayer,
)

REFERENCE = Path("/work/shared/reference/mask2former")
PREDICTOR = "sem_seg_head.predictor."


def official_predictor_entries(config: str) -> dict[str, list[int]]:
    """``{name: shape}`` of the official decoder (the ``sem_seg_head.predictor.`` entries)."""
    path = REFERENCE / f"{config}.txt"
    if not path.exists():
        pytest.skip(f"reference {path} is not available")
    entries = {}
    for line in path.read_text().splitlines():
        if line.startswith(PREDICTOR):
            name, shape = line.split("\t")
            entries[name[len(PREDICTOR) :]] = [int(s) for s in shape.strip("[]").split(",") if s]
    return entries


def shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def mask2former_cfg(num_classes: int, dec_layers: int = 10):
    cfg = get_cfg()
    add_seg_zoo_config(cfg)
    cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = num_classes
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = dec_layers  # official configs: 9 layers + 1
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 100
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = 256
    cfg.MODEL.MASK_FORMER.NHEADS = 8
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 2048
    cfg.MODEL.MASK_FORMER.PRE_NORM = False
    cfg.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ = False
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
    return cfg


def small_decoder(**overrides) -> MultiScaleMaskedTransformerDecoder:
    kwargs = dict(
        in_channels=16,
        num_classes=5,
        hidden_dim=32,
        num_queries=8,
        nheads=4,
        dim_feedforward=64,
        dec_layers=5,
        pre_norm=False,
        mask_dim=24,
        enforce_input_project=False,
    )
    kwargs.update(overrides)
    return MultiScaleMaskedTransformerDecoder(**kwargs).eval()


def multi_scale_inputs(batch=2, channels=16, mask_dim=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    # lowest resolution first (1/32, 1/16, 1/8), each with a distinct number of pixels
    x = [torch.randn(batch, channels, 2 * s, 3 * s, generator=g) for s in (1, 2, 4)]
    mask_features = torch.randn(batch, mask_dim, 16, 24, generator=g)
    return x, mask_features


# ---------------------------------------------------------------- (a) official state_dict


@pytest.mark.parametrize(
    "config, num_classes",
    [
        ("coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml", 133),
        ("ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml", 150),
    ],
)
def test_state_dict_matches_official(config, num_classes):
    expected = official_predictor_entries(config)
    # the R50 pixel decoder outputs 256 channels (= hidden_dim): no input projection
    decoder = build_transformer_decoder(mask2former_cfg(num_classes), 256, True)
    assert isinstance(decoder, MultiScaleMaskedTransformerDecoder)
    assert decoder.num_layers == 9
    assert shapes(decoder) == expected


def test_enforce_input_project_adds_1x1_convs():
    decoder = small_decoder(in_channels=32, enforce_input_project=True)
    assert shapes(decoder)["input_proj.2.weight"] == [32, 32, 1, 1]
    assert "input_proj.0.weight" not in small_decoder(in_channels=32).state_dict()


def test_loads_old_static_query_checkpoints():
    source = small_decoder()
    state = source.state_dict()
    state["static_query.weight"] = state.pop("query_feat.weight")
    del state._metadata  # checkpoints without version metadata are "version 1"
    target = small_decoder()
    target.load_state_dict(state)
    assert torch.equal(target.query_feat.weight, source.query_feat.weight)


# ---------------------------------------------------------------- (b) outputs


def test_output_shapes_and_deep_supervision():
    decoder = small_decoder(dec_layers=5)
    x, mask_features = multi_scale_inputs()
    with torch.no_grad():
        out = decoder(x, mask_features)
    assert out["pred_logits"].shape == (2, 8, 6)
    assert out["pred_masks"].shape == (2, 8, 16, 24)
    # one prediction from the learnable queries + one per layer; all but the last are aux
    assert len(out["aux_outputs"]) == 5
    for aux in out["aux_outputs"]:
        assert set(aux) == {"pred_logits", "pred_masks"}
        assert aux["pred_logits"].shape == (2, 8, 6)
        assert aux["pred_masks"].shape == (2, 8, 16, 24)


def test_from_config_counts_dec_layers_like_official():
    # DEC_LAYERS predictions in all: DEC_LAYERS - 1 layers, DEC_LAYERS - 1 aux outputs
    cfg = mask2former_cfg(num_classes=5, dec_layers=4)
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = 32
    cfg.MODEL.MASK_FORMER.NHEADS = 4
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 64
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 8
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 24
    decoder = build_transformer_decoder(cfg, 16).eval()
    assert decoder.num_layers == 3
    x, mask_features = multi_scale_inputs()
    with torch.no_grad():
        out = decoder(x, mask_features)
    assert len(out["aux_outputs"]) == 3


def test_pre_norm_runs_and_backpropagates():
    decoder = small_decoder(pre_norm=True, dec_layers=3).train()
    x, mask_features = multi_scale_inputs()
    out = decoder(x, mask_features)
    loss = out["pred_masks"].sum() + sum(a["pred_logits"].sum() for a in out["aux_outputs"])
    loss.backward()
    assert decoder.query_feat.weight.grad is not None
    assert torch.isfinite(decoder.transformer_cross_attention_layers[0].norm.weight.grad).all()


def test_registry_names_are_official():
    assert "MultiScaleMaskedTransformerDecoder" in TRANSFORMER_DECODER_REGISTRY
    assert "StandardTransformerDecoder" in TRANSFORMER_DECODER_REGISTRY


# ---------------------------------------------------------------- (c) attention mask rule


def test_compute_attention_mask_hand_worked():
    # query 0: logits with mixed signs; sigmoid(0) = 0.5 counts as foreground (not < 0.5)
    # query 1: empty everywhere -> may attend everywhere
    # query 2: foreground everywhere
    logits = torch.tensor(
        [
            [[1.0, -1.0], [0.0, -3.0]],
            [[-1.0, -2.0], [-0.5, -4.0]],
            [[2.0, 0.5], [1.0, 3.0]],
        ]
    )[None]  # (1, 3, 2, 2)
    got = compute_attention_mask(logits, (2, 2), num_heads=2)
    blocked = torch.tensor(
        [
            [False, True, False, True],
            [False, False, False, False],
            [False, False, False, False],
        ]
    )
    assert got.dtype == torch.bool
    assert got.shape == (2, 3, 4)
    assert torch.equal(got, torch.stack([blocked, blocked]))


def test_compute_attention_mask_resizes_bilinearly_and_orders_batch_major():
    # 4x4 -> 2x2 at scale 1/2 (align_corners=False) averages each 2x2 block
    block_means = torch.tensor([[1.0, -1.0], [-2.0, 0.5]])
    image0 = block_means.repeat_interleave(2, 0).repeat_interleave(2, 1)  # (4, 4)
    logits = torch.stack([image0[None], -image0[None]])  # (2 images, 1 query, 4, 4)
    got = compute_attention_mask(logits, (2, 2), num_heads=3)
    assert got.shape == (6, 1, 4)
    image0_blocked = torch.tensor([[False, True, True, False]])
    image1_blocked = torch.tensor([[True, False, False, True]])
    for head in range(3):  # rows b * num_heads + h, as nn.MultiheadAttention reads them
        assert torch.equal(got[head], image0_blocked)
        assert torch.equal(got[3 + head], image1_blocked)


def test_compute_attention_mask_is_detached():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    assert not compute_attention_mask(logits, (2, 2), 1).requires_grad


def test_masked_cross_attention_ignores_blocked_pixels():
    # True must mean "not allowed": changing memory where query 0 is blocked leaves it unchanged
    torch.manual_seed(0)
    layer = CrossAttentionLayer(d_model=8, nhead=2).eval()
    logits = torch.tensor([[[[2.0, -2.0], [-2.0, 2.0]], [[-1.0, -1.0], [-1.0, -1.0]]]])
    attn_mask = compute_attention_mask(logits, (2, 2), num_heads=2)
    tgt = torch.randn(2, 1, 8)
    memory = torch.randn(4, 1, 8)
    changed = memory.clone()
    changed[[1, 2]] += 10.0  # pixels blocked for query 0
    with torch.no_grad():
        before = layer(tgt, memory, memory_mask=attn_mask)
        after = layer(tgt, changed, memory_mask=attn_mask)
    torch.testing.assert_close(after[0], before[0])
    assert not torch.allclose(after[1], before[1])  # the empty query attends everywhere


def reference_attention_mask(pred_masks, size, num_heads):
    """Slow per-query version of the rule, independent of compute_attention_mask."""
    n, q = pred_masks.shape[:2]
    rows = []
    for b in range(n):
        per_query = []
        for i in range(q):
            m = F.interpolate(pred_masks[b : b + 1, i : i + 1], size=size, mode="bilinear")
            blocked = (torch.sigmoid(m) < 0.5).flatten()
            if bool(blocked.all()):
                blocked = torch.zeros_like(blocked)
            per_query.append(blocked)
        rows += [torch.stack(per_query)] * num_heads
    return torch.stack(rows)


def test_decoder_masks_each_layer_with_previous_prediction():
    decoder = small_decoder(dec_layers=4)
    x, mask_features = multi_scale_inputs()
    mask_features[1] = 1.0  # uniform masks in image 1: some queries are empty everywhere
    seen = []
    for layer in decoder.transformer_cross_attention_layers:
        layer.multihead_attn.register_forward_pre_hook(
            lambda mod, args, kwargs: seen.append(kwargs["attn_mask"]), with_kwargs=True
        )
    with torch.no_grad():
        out = decoder(x, mask_features)
    predictions = [a["pred_masks"] for a in out["aux_outputs"]]  # the input of layers 0..3
    assert len(seen) == 4
    any_empty = False
    for i, attn_mask in enumerate(seen):
        size = x[i % 3].shape[-2:]
        expected = reference_attention_mask(predictions[i], size, decoder.num_heads)
        assert torch.equal(attn_mask, expected)
        raw = F.interpolate(predictions[i], size=size, mode="bilinear").sigmoid() < 0.5
        any_empty |= bool(raw.flatten(2).all(-1).any())
    assert any_empty, "the all-empty-query case was not exercised"


# ---------------------------------------------------------------- (d) layer order, (e) levels


def test_cross_attention_comes_before_self_attention_and_ffn():
    decoder = small_decoder(dec_layers=3)
    calls = []
    stacks = {
        "cross": decoder.transformer_cross_attention_layers,
        "self": decoder.transformer_self_attention_layers,
        "ffn": decoder.transformer_ffn_layers,
    }
    for kind, layers in stacks.items():
        for i, layer in enumerate(layers):
            layer.register_forward_hook(lambda *_, k=kind, j=i: calls.append((k, j)))
    x, mask_features = multi_scale_inputs()
    with torch.no_grad():
        decoder(x, mask_features)
    assert calls == [(k, i) for i in range(3) for k in ("cross", "self", "ffn")]


def test_feature_levels_round_robin():
    decoder = small_decoder(dec_layers=7)
    x, mask_features = multi_scale_inputs()
    key_lengths, mask_lengths = [], []
    for layer in decoder.transformer_cross_attention_layers:

        def record(mod, args, kwargs):
            key_lengths.append(kwargs["key"].shape[0])
            mask_lengths.append(kwargs["attn_mask"].shape[-1])

        layer.multihead_attn.register_forward_pre_hook(record, with_kwargs=True)
    with torch.no_grad():
        decoder(x, mask_features)
    pixels = [f.shape[-2] * f.shape[-1] for f in x]  # 6, 24, 96
    assert key_lengths == [pixels[i % 3] for i in range(7)]
    assert mask_lengths == key_lengths


# ---------------------------------------------------------------- (f) MaskFormer v1 decoder


def maskformer_v1_expected(
    hidden, ffn, enc_layers, dec_layers, queries, classes, in_channels, mask_dim, pre_norm
):
    """Names and shapes of a MaskFormer (v1) checkpoint's predictor, written out by hand."""
    d = hidden
    attn = lambda p: {
        f"{p}.in_proj_weight": [3 * d, d],
        f"{p}.in_proj_bias": [3 * d],
        f"{p}.out_proj.weight": [d, d],
        f"{p}.out_proj.bias": [d],
    }
    ffn_norms = lambda p, norms: {
        f"{p}.linear1.weight": [ffn, d],
        f"{p}.linear1.bias": [ffn],
        f"{p}.linear2.weight": [d, ffn],
        f"{p}.linear2.bias": [d],
        **{f"{p}.{n}.{w}": [d] for n in norms for w in ("weight", "bias")},
    }
    expected = {}
    for i in range(enc_layers):
        p = f"transformer.encoder.layers.{i}"
        expected |= attn(f"{p}.self_attn") | ffn_norms(p, ("norm1", "norm2"))
    for i in range(dec_layers):
        p = f"transformer.decoder.layers.{i}"
        expected |= attn(f"{p}.self_attn") | attn(f"{p}.multihead_attn")
        expected |= ffn_norms(p, ("norm1", "norm2", "norm3"))
    norms = ["transformer.decoder.norm"] + (["transformer.encoder.norm"] if pre_norm else [])
    expected |= {f"{n}.{w}": [d] for n in norms for w in ("weight", "bias")}
    expected |= {
        "query_embed.weight": [queries, d],
        "input_proj.weight": [d, in_channels, 1, 1],
        "input_proj.bias": [d],
        "class_embed.weight": [classes + 1, d],
        "class_embed.bias": [classes + 1],
        "mask_embed.layers.0.weight": [d, d],
        "mask_embed.layers.0.bias": [d],
        "mask_embed.layers.1.weight": [d, d],
        "mask_embed.layers.1.bias": [d],
        "mask_embed.layers.2.weight": [mask_dim, d],
        "mask_embed.layers.2.bias": [mask_dim],
    }
    return expected


def maskformer_v1_cfg():
    cfg = get_cfg()
    add_seg_zoo_config(cfg)
    cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = "StandardTransformerDecoder"
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 150
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 100
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = 256
    cfg.MODEL.MASK_FORMER.NHEADS = 8
    cfg.MODEL.MASK_FORMER.DROPOUT = 0.1
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 2048
    cfg.MODEL.MASK_FORMER.ENC_LAYERS = 0
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 6
    cfg.MODEL.MASK_FORMER.PRE_NORM = False
    cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION = True
    cfg.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ = False
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
    return cfg


def test_standard_decoder_state_dict_maskformer_r50_ade20k():
    # MaskFormer R50 on ADE20K: the decoder reads res5 (2048 channels), no encoder, 6 layers
    decoder = build_transformer_decoder(maskformer_v1_cfg(), 2048, True)
    assert isinstance(decoder, StandardTransformerDecoder)
    assert shapes(decoder) == maskformer_v1_expected(256, 2048, 0, 6, 100, 150, 2048, 256, False)


@pytest.mark.parametrize("pre_norm", [False, True])
def test_standard_decoder_state_dict_with_encoder(pre_norm):
    decoder = StandardTransformerDecoder(
        in_channels=16,
        num_classes=5,
        hidden_dim=32,
        num_queries=8,
        nheads=4,
        dropout=0.0,
        dim_feedforward=64,
        enc_layers=2,
        dec_layers=3,
        pre_norm=pre_norm,
        deep_supervision=True,
        mask_dim=24,
        enforce_input_project=False,
    )
    assert shapes(decoder) == maskformer_v1_expected(32, 64, 2, 3, 8, 5, 16, 24, pre_norm)


@pytest.mark.parametrize("deep_supervision", [True, False])
def test_standard_decoder_outputs(deep_supervision):
    torch.manual_seed(0)
    decoder = StandardTransformerDecoder(
        in_channels=16,
        num_classes=5,
        hidden_dim=32,
        num_queries=8,
        nheads=4,
        dropout=0.0,
        dim_feedforward=64,
        enc_layers=1,
        dec_layers=3,
        pre_norm=False,
        deep_supervision=deep_supervision,
        mask_dim=24,
        enforce_input_project=False,
    ).eval()
    x = torch.randn(2, 16, 4, 6)
    mask_features = torch.randn(2, 24, 16, 24)
    padding = torch.zeros(2, 32, 48, dtype=torch.bool)
    padding[1, :, 40:] = True
    with torch.no_grad():
        out = decoder(x, mask_features, padding)
    assert out["pred_logits"].shape == (2, 8, 6)
    assert out["pred_masks"].shape == (2, 8, 16, 24)
    if deep_supervision:
        assert len(out["aux_outputs"]) == 2  # dec_layers - 1
        for aux in out["aux_outputs"]:
            assert aux["pred_logits"].shape == (2, 8, 6)
            assert aux["pred_masks"].shape == (2, 8, 16, 24)
    else:
        assert "aux_outputs" not in out


def test_standard_decoder_without_mask_classification():
    cfg = maskformer_v1_cfg()
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 2
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = 32
    cfg.MODEL.MASK_FORMER.NHEADS = 4
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 64
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 24
    decoder = build_transformer_decoder(cfg, 16, mask_classification=False).eval()
    assert "class_embed.weight" not in decoder.state_dict()
    with torch.no_grad():
        out = decoder(torch.randn(1, 16, 3, 3), torch.randn(1, 24, 12, 12))
    assert set(out) == {"pred_masks", "aux_outputs"}
    assert out["aux_outputs"] == [{"pred_masks": out["aux_outputs"][0]["pred_masks"]}]
