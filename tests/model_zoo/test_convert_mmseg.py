"""mmseg Swin + UperNet checkpoints -> seg_zoo's UperNet (seg_zoo.model_zoo.convert_mmseg).

The "official" checkpoints here are written from the official module definitions, spelled out
in this file: mmseg 0.11's ``UPerHead`` (PPM of ``nn.Sequential(AdaptiveAvgPool2d, ConvModule)``,
``bottleneck``, ``lateral_convs``, ``fpn_convs``, ``fpn_bottleneck``, ``conv_seg``) and ``FCNHead``
(``convs``, ``conv_seg``), every mmcv ``ConvModule`` being ``conv`` (no bias) + ``bn``; the Swin
backbone is the Microsoft listing under shared/reference/swin/ without the classifier, the final
norm and the ``attn_mask`` buffers, plus the segmentation backbone's ``norm0..3``. The heads'
forward is re-implemented below from mmseg's code with plain functional ops, as the reference
the converted seg_zoo heads must match.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from detectron2.layers import ShapeSpec
from zoo_helpers import REFERENCE, LocalServer, load_tool

from seg_zoo.model_zoo.convert_mmseg import (
    check_upernet_num_classes,
    convert_mmseg_upernet_state_dict,
)

REPO = Path(__file__).resolve().parents[2]
SWIN_T_CONFIG = (
    REPO / "configs/ade20k/semantic-segmentation/upernet/upernet_swin_tiny_bs16_160k.yaml"
)
POOL_SCALES = (1, 2, 3, 6)


# --------------------------------------------------------------------------------------------
# The official layout, written from the official module definitions
# --------------------------------------------------------------------------------------------
def _conv_module(sd: dict, prefix: str, cin: int, cout: int, k: int, gen) -> None:
    sd[f"{prefix}.conv.weight"] = (
        torch.randn(cout, cin, k, k, generator=gen) * (cin * k * k) ** -0.5
    )
    sd[f"{prefix}.bn.weight"] = 1 + 0.1 * torch.randn(cout, generator=gen)
    sd[f"{prefix}.bn.bias"] = 0.1 * torch.randn(cout, generator=gen)
    sd[f"{prefix}.bn.running_mean"] = 0.1 * torch.randn(cout, generator=gen)
    sd[f"{prefix}.bn.running_var"] = 0.5 + torch.rand(cout, generator=gen)
    sd[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(160000)


def mmseg_heads(in_channels, channels, aux_channels, num_classes, seed=0) -> dict:
    """decode_head.* (UPerHead) and auxiliary_head.* (FCNHead on stage 3, one conv)."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict = {}
    top = in_channels[-1]
    for i in range(len(POOL_SCALES)):
        _conv_module(sd, f"decode_head.psp_modules.{i}.1", top, channels, 1, gen)
    _conv_module(sd, "decode_head.bottleneck", top + len(POOL_SCALES) * channels, channels, 3, gen)
    for i, cin in enumerate(in_channels[:-1]):
        _conv_module(sd, f"decode_head.lateral_convs.{i}", cin, channels, 1, gen)
        _conv_module(sd, f"decode_head.fpn_convs.{i}", channels, channels, 3, gen)
    _conv_module(sd, "decode_head.fpn_bottleneck", len(in_channels) * channels, channels, 3, gen)
    sd["decode_head.conv_seg.weight"] = 0.05 * torch.randn(
        num_classes, channels, 1, 1, generator=gen
    )
    sd["decode_head.conv_seg.bias"] = 0.05 * torch.randn(num_classes, generator=gen)
    _conv_module(sd, "auxiliary_head.convs.0", in_channels[2], aux_channels, 3, gen)
    sd["auxiliary_head.conv_seg.weight"] = torch.randn(
        num_classes, aux_channels, 1, 1, generator=gen
    )
    sd["auxiliary_head.conv_seg.bias"] = torch.randn(num_classes, generator=gen)
    return sd


def official_swin_upernet_state_dict(size: str = "tiny", meta: bool = False) -> dict:
    """The state_dict of the released upernet_swin_<size>_patch4_window7_512x512.pth (150
    classes): names and shapes from the official definitions, seeded random values (or meta
    tensors: shapes only)."""
    listing = REFERENCE / "swin" / f"swin_{size}_patch4_window7_224.txt"
    if not listing.is_file():
        pytest.skip(f"no reference listing {listing}")
    gen = torch.Generator().manual_seed(1)

    def tensor(shape, integer=False):
        if meta:
            return torch.empty(shape, device="meta")
        if integer:
            return torch.randint(0, 169, shape, generator=gen)
        return 0.02 * torch.randn(shape, generator=gen)

    sd = {}
    for line in listing.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split("\t")
        # classification-only entries: the classifier, the final norm, the stored shift masks
        if key.startswith(("head.", "norm.")) or key.endswith("attn_mask"):
            continue
        sd["backbone." + key] = tensor(yaml.safe_load(shape), key.endswith("position_index"))
    embed = sd["backbone.patch_embed.proj.weight"].shape[0]
    dims = tuple(embed * 2**i for i in range(4))
    for i, dim in enumerate(dims):
        sd[f"backbone.norm{i}.weight"] = tensor((dim,))
        sd[f"backbone.norm{i}.bias"] = tensor((dim,))
    heads = mmseg_heads(dims, 512, 256, 150)
    sd.update({k: tensor(v.shape) if meta else v for k, v in heads.items()})
    return sd


def mmcv_checkpoint_bytes(state_dict: dict) -> bytes:
    """What mmcv's save_checkpoint writes (meta + state_dict), minus the optimizer."""
    buf = io.BytesIO()
    meta = {"mmcv_version": "1.3.0", "CLASSES": ("wall", "building"), "iter": 160000}
    torch.save({"meta": meta, "state_dict": state_dict}, buf)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# mmseg's forward, functional
# --------------------------------------------------------------------------------------------
def _cm(x, sd, prefix, padding):
    """ConvModule: conv, BatchNorm with running statistics (eval), ReLU."""
    x = F.conv2d(x, sd[f"{prefix}.conv.weight"], padding=padding)
    x = F.batch_norm(
        x,
        sd[f"{prefix}.bn.running_mean"],
        sd[f"{prefix}.bn.running_var"],
        sd[f"{prefix}.bn.weight"],
        sd[f"{prefix}.bn.bias"],
        training=False,
        eps=1e-5,
    )
    return F.relu(x)


def _up(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def mmseg_uperhead_forward(feats: list, sd: dict) -> torch.Tensor:
    x = feats[-1]
    psp = [x] + [
        _up(_cm(F.adaptive_avg_pool2d(x, s), sd, f"decode_head.psp_modules.{i}.1", 0), x.shape[2:])
        for i, s in enumerate(POOL_SCALES)
    ]
    laterals = [_cm(f, sd, f"decode_head.lateral_convs.{i}", 0) for i, f in enumerate(feats[:-1])]
    laterals.append(_cm(torch.cat(psp, 1), sd, "decode_head.bottleneck", 1))
    for i in range(len(laterals) - 1, 0, -1):  # top-down, each level after its update
        laterals[i - 1] = laterals[i - 1] + _up(laterals[i], laterals[i - 1].shape[2:])
    outs = [_cm(laterals[i], sd, f"decode_head.fpn_convs.{i}", 1) for i in range(len(feats) - 1)]
    outs.append(laterals[-1])
    outs = [outs[0]] + [_up(o, outs[0].shape[2:]) for o in outs[1:]]
    y = _cm(torch.cat(outs, 1), sd, "decode_head.fpn_bottleneck", 1)
    return F.conv2d(y, sd["decode_head.conv_seg.weight"], sd["decode_head.conv_seg.bias"])


def mmseg_fcnhead_forward(x: torch.Tensor, sd: dict) -> torch.Tensor:
    y = _cm(x, sd, "auxiliary_head.convs.0", 1)
    return F.conv2d(y, sd["auxiliary_head.conv_seg.weight"], sd["auxiliary_head.conv_seg.bias"])


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------
def test_converted_heads_compute_what_mmseg_computes():
    from seg_zoo.modeling.heads.upernet import FCNAuxHead, UperNetHead

    in_channels, channels, aux_channels, num_classes = (8, 16, 24, 32), 12, 10, 5
    official = mmseg_heads(in_channels, channels, aux_channels, num_classes, seed=3)
    converted = convert_mmseg_upernet_state_dict(
        {"backbone.patch_embed.proj.weight": torch.zeros(1), **official}, source="heads"
    )
    shapes = {
        f"res{i + 2}": ShapeSpec(channels=c, stride=4 * 2**i) for i, c in enumerate(in_channels)
    }
    head = UperNetHead(shapes, num_classes=num_classes, channels=channels, norm="BN").eval()
    aux = FCNAuxHead(
        in_feature="res4",
        in_channels=in_channels[2],
        num_classes=num_classes,
        channels=aux_channels,
        norm="BN",
    ).eval()
    for module, prefix in ((head, "sem_seg_head."), (aux, "aux_head.")):
        own = {k[len(prefix) :]: v for k, v in converted.items() if k.startswith(prefix)}
        module.load_state_dict(own, strict=True)

    gen = torch.Generator().manual_seed(0)
    # odd sizes: every resize of the top-down path and of the PPM does something
    sizes = ((33, 45), (17, 23), (9, 12), (5, 6))
    feats = [torch.randn(2, c, *hw, generator=gen) for c, hw in zip(in_channels, sizes)]
    with torch.no_grad():
        ours = head.layers(dict(zip(shapes, feats)))
        ours_aux = aux(dict(zip(shapes, feats)))
        expected = mmseg_uperhead_forward(feats, official)
        expected_aux = mmseg_fcnhead_forward(feats[2], official)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours_aux, expected_aux, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_released_layouts_fill_the_config_models(size):
    """Names and shapes only (meta tensors): the release of each catalog row fills its config's
    model entry by entry."""
    from detectron2.modeling import META_ARCH_REGISTRY

    from seg_zoo.config import load_config

    converted = convert_mmseg_upernet_state_dict(official_swin_upernet_state_dict(size, meta=True))
    cfg = load_config(str(SWIN_T_CONFIG).replace("swin_tiny", f"swin_{size}"))
    with torch.device("meta"):
        model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    own = model.state_dict()
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        k: tuple(v.shape) for k, v in own.items()
    }


def test_released_swin_t_layout_loads_into_the_config_model(tmp_path):
    from detectron2.modeling import build_model

    from seg_zoo.config import load_config
    from seg_zoo.engine.checkpoint import Checkpointer
    from seg_zoo.model_zoo.convert import save_d2_checkpoint

    official = official_swin_upernet_state_dict("tiny")
    converted = convert_mmseg_upernet_state_dict(official, source="upernet_swin_tiny")
    model = build_model(load_config(str(SWIN_T_CONFIG), ["MODEL.DEVICE", "cpu"]))
    own = model.state_dict()
    # every model entry is filled, nothing is left over, shapes agree
    assert sorted(converted) == sorted(own)
    assert all(tuple(converted[k].shape) == tuple(own[k].shape) for k in own)
    # the README's "#params 60M" (aux head included)
    assert sum(p.numel() for p in model.parameters()) == 59_941_862
    # and through the checkpointer, names spelled by hand
    path = tmp_path / "upernet_swin_tiny.pkl"
    save_d2_checkpoint(converted, path, author="mmseg")
    Checkpointer(model).load(str(path))
    state = model.state_dict()
    for ours, theirs in [
        ("sem_seg_head.psp_modules.3.1.weight", "decode_head.psp_modules.3.1.conv.weight"),
        (
            "sem_seg_head.fpn_bottleneck.norm.running_var",
            "decode_head.fpn_bottleneck.bn.running_var",
        ),
        ("aux_head.convs.0.norm.bias", "auxiliary_head.convs.0.bn.bias"),
        ("backbone.norm2.weight", "backbone.norm2.weight"),
        (
            "backbone.layers.2.blocks.5.attn.qkv.weight",
            "backbone.layers.2.blocks.5.attn.qkv.weight",
        ),
    ]:
        torch.testing.assert_close(state[ours], official[theirs])


def test_other_mmseg_models_are_refused_by_name():
    heads = mmseg_heads((8, 16, 24, 32), 12, 10, 5)
    swin = {"backbone.patch_embed.proj.weight": torch.zeros(1)}
    resnet = {"backbone.stem.0.weight": torch.zeros(1), **heads}
    with pytest.raises(ValueError, match="r50.pth: .*not a Swin backbone.*ResNet-V1c"):
        convert_mmseg_upernet_state_dict(resnet, source="r50.pth")
    fcn = {**swin, **heads, "auxiliary_head.conv_cat.conv.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"x.pth: 1 entries .*auxiliary_head.conv_cat.conv.weight"):
        convert_mmseg_upernet_state_dict(fcn, source="x.pth")
    no_uper = {k: v for k, v in {**swin, **heads}.items() if "fpn_bottleneck" not in k}
    with pytest.raises(ValueError, match="not an UPerHead"):
        convert_mmseg_upernet_state_dict(no_uper, source="x.pth")
    odd_backbone = {**swin, **heads, "backbone.layers.0.blocks.0.gamma": torch.zeros(1)}
    with pytest.raises(ValueError, match="backbone.layers.0.blocks.0.gamma"):
        convert_mmseg_upernet_state_dict(odd_backbone, source="x.pth")
    # stored shift masks of other Swin versions are dropped, with a message
    messages = []
    stale = {**swin, **heads, "backbone.layers.0.blocks.1.attn_mask": torch.zeros(1)}
    out = convert_mmseg_upernet_state_dict(stale, source="x.pth", log=messages.append)
    assert not any("attn_mask" in k for k in out) and "attn_mask" in messages[0]
    # the auxiliary head is optional
    no_aux = {k: v for k, v in {**swin, **heads}.items() if not k.startswith("auxiliary_head.")}
    assert not any(k.startswith("aux_head.") for k in convert_mmseg_upernet_state_dict(no_aux))

    assert check_upernet_num_classes(heads, 5, "x.pth") == 5
    with pytest.raises(ValueError, match="x.pth: .* 5 classes .*NUM_CLASSES 150"):
        check_upernet_num_classes(heads, 150, "x.pth")


def test_command_line_tool(tmp_path, capsys):
    official = {"backbone.patch_embed.proj.weight": torch.zeros(2, 3, 4, 4)}
    official.update(mmseg_heads((8, 16, 24, 32), 12, 10, 5))
    src = tmp_path / "upernet.pth"
    src.write_bytes(mmcv_checkpoint_bytes(official))
    tool = load_tool("convert-mmseg-upernet-to-d2.py")

    out = tmp_path / "upernet.pkl"
    assert tool.main([str(src), str(out), "--num-classes", "150"]) == 1
    assert not out.exists()
    err = capsys.readouterr().err
    assert f"error: {src}: the checkpoint's UperNet classifier has 5 classes" in err

    assert tool.main([str(src), str(out), "--num-classes", "5"]) == 0
    from seg_zoo.model_zoo.safe_load import load_checkpoint_file

    written = load_checkpoint_file(out)
    assert written["__author__"] == "mmseg"
    assert sorted(written["model"]) == sorted(
        convert_mmseg_upernet_state_dict(official, source="x")
    )


def test_catalog_release_is_downloaded_and_converted(monkeypatch, tmp_path):
    """seg_zoo://upernet/ade20k/... end to end, on a narrow Swin UperNet (its own config)."""
    import dataclasses

    from detectron2.modeling import build_model
    from detectron2.utils.file_io import PathManager

    from seg_zoo.config import load_config
    from seg_zoo.engine.checkpoint import Checkpointer
    from seg_zoo.model_zoo import catalog

    config = tmp_path / "tiny_upernet.yaml"
    config.write_text(
        f"_BASE_: {SWIN_T_CONFIG}\n"
        "MODEL:\n  SWIN: {EMBED_DIM: 8, DEPTHS: [1, 1, 1, 1], NUM_HEADS: [1, 1, 1, 1]}\n"
        "  SEM_SEG_HEAD: {NUM_CLASSES: 5}\n"
        "  UPERNET: {CHANNELS: 12, AUX_CHANNELS: 10, NORM: BN}\n"
    )
    cfg = load_config(str(config), ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    # the narrow backbone's names are D2SwinTransformer's (= the official ones, tested above)
    official = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    official.update(mmseg_heads((8, 16, 32, 64), 12, 10, 5))
    blob = mmcv_checkpoint_bytes(official)
    name = "upernet/ade20k/upernet_swin_tiny_patch4_window7_512x512"
    real = catalog.get_entry(name)
    assert real.converter == "mmseg_upernet" and real.config == str(SWIN_T_CONFIG.relative_to(REPO))
    srv = LocalServer({"/u/upernet_swin_tiny_patch4_window7_512x512.pth": blob})
    try:
        entry = dataclasses.replace(
            real,
            url=srv.url("/u/upernet_swin_tiny_patch4_window7_512x512.pth"),
            config=str(config),
            sha256=hashlib.sha256(blob).hexdigest(),
        )
        monkeypatch.setitem(catalog.MODEL_ZOO, name, entry)
        local = PathManager.get_local_path(entry.uri)
        assert local.endswith("model_seg_zoo.pkl")
        fresh = build_model(cfg)
        Checkpointer(fresh).load(entry.uri)
        torch.testing.assert_close(
            fresh.state_dict()["sem_seg_head.bottleneck.norm.running_mean"],
            official["decode_head.bottleneck.bn.running_mean"],
        )
    finally:
        srv.close()
