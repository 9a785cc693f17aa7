"""Official Segmenter checkpoint -> seg_zoo: convert, build from the written config, load, compare.

The reference is the official release itself: the parameter names and shapes of the official
checkpoints recorded in /work/shared/reference/segmenter (filled with seeded random values and
saved as the official ``{"model": state_dict}`` file) and a variant.yml written by hand in the
official layout. The expected seg_zoo name of each entry is spelled out here (prefix swap), not
taken from the converter.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from zoo_helpers import load_tool

from seg_zoo.config import load_config
from seg_zoo.model_zoo.convert_segmenter import (
    check_num_classes,
    config_from_variant,
    convert_segmenter_state_dict,
)

REPO = Path(__file__).resolve().parents[2]
REFERENCE = Path("/work/shared/reference/segmenter")
need_reference = pytest.mark.skipif(not REFERENCE.is_dir(), reason="no reference names")

tool = load_tool("convert-segmenter-to-d2.py")


def official_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random tensors with the names and shapes of the official checkpoint ``name``."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for line in (REFERENCE / f"{name}.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split("\t")
        sd[key] = torch.randn(yaml.safe_load(shape), generator=gen)
    return sd


def tiny_variant(decoder: str, n_cls: int = 150) -> dict:
    """variant.yml of the official Seg-T (mask or linear) ADE20K runs, written by hand."""
    dec = {"name": decoder, "drop_path_rate": 0.0, "dropout": 0.1}
    if decoder == "mask_transformer":
        dec["n_layers"] = 2
    return {
        "algorithm_kwargs": {"batch_size": 8, "eval_freq": 2, "num_epochs": 64},
        "dataset_kwargs": {
            "batch_size": 8,
            "crop_size": 512,
            "dataset": "ade20k",
            "image_size": 512,
            "normalization": "vit",
            "split": "train",
        },
        "inference_kwargs": {"im_size": 512, "window_size": 512, "window_stride": 512},
        "net_kwargs": {
            "backbone": "vit_tiny_patch16_384",
            "d_model": 192,
            "decoder": dec,
            "distilled": False,
            "drop_path_rate": 0.1,
            "dropout": 0.0,
            "image_size": [512, 512],
            "n_cls": n_cls,
            "n_heads": 3,
            "n_layers": 12,
            "normalization": "vit",
            "patch_size": 16,
        },
    }


def write_release(tmp_path: Path, name: str, decoder: str, n_cls: int = 150) -> Path:
    release = tmp_path / name
    release.mkdir()
    torch.save({"model": official_state_dict(name), "epoch": 63}, release / "checkpoint.pth")
    (release / "variant.yml").write_text(yaml.safe_dump(tiny_variant(decoder, n_cls)))
    return release / "checkpoint.pth"


def expected_name(official: str) -> str | None:
    """seg_zoo name of an official entry; None for the encoder's ImageNet classifier."""
    if official.startswith("encoder.head"):
        return None
    if official.startswith("encoder."):
        return "backbone." + official[len("encoder.") :]
    assert official.startswith("decoder.")
    return "sem_seg_head." + official[len("decoder.") :]


def load_with_report(model, path):
    checkpointer = DetectionCheckpointer(model)
    reports = []
    load_model = checkpointer._load_model
    checkpointer._load_model = lambda ckpt: reports.append(load_model(ckpt)) or reports[-1]
    checkpointer.load(str(path))
    assert len(reports) == 1
    return reports[0]


@need_reference
@pytest.mark.parametrize(
    "name, decoder, head",
    [
        ("seg_tiny_mask", "mask_transformer", "SegmenterMaskTransformer"),
        ("seg_tiny_linear", "linear", "SegmenterLinearDecoder"),
    ],
)
def test_round_trip(tmp_path, name, decoder, head):
    ckpt = write_release(tmp_path, name, decoder)
    out = tmp_path / f"{name}.pkl"
    assert tool.main([str(ckpt), str(out)]) == 0
    cfg = load_config(str(out.with_suffix(".yaml")), ["MODEL.DEVICE", "cpu"])
    assert cfg.MODEL.META_ARCHITECTURE == "Segmenter"
    assert cfg.MODEL.SEM_SEG_HEAD.NAME == head
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 150
    assert (cfg.MODEL.VIT.EMBED_DIM, cfg.MODEL.VIT.DEPTH, cfg.MODEL.VIT.NUM_HEADS) == (192, 12, 3)
    assert cfg.MODEL.VIT.PRETRAIN_IMG_SIZE == 512
    assert cfg.MODEL.VIT.NORM_EPS == 1e-5
    assert cfg.MODEL.VIT.POS_EMBED_INTERPOLATION == "bilinear"
    assert list(cfg.MODEL.PIXEL_MEAN) == [127.5] * 3 and list(cfg.MODEL.PIXEL_STD) == [127.5] * 3
    assert (cfg.MODEL.SEGMENTER.WINDOW_SIZE, cfg.MODEL.SEGMENTER.WINDOW_STRIDE) == (512, 512)
    assert cfg.INPUT.MIN_SIZE_TEST == 512
    # inherited from the ADE20K Base
    assert cfg.SOLVER.MAX_ITER == 160000
    assert Path(cfg.MODEL.WEIGHTS) == out.resolve()

    model = build_model(cfg)
    report = load_with_report(model, out)
    assert report.missing_keys == []
    assert report.unexpected_keys == []
    assert report.incorrect_shapes == []

    official = official_state_dict(name)
    expected = {expected_name(k): v for k, v in official.items() if expected_name(k)}
    state = model.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


@need_reference
def test_encoder_classifier_dropped_with_message(caplog):
    sd = official_state_dict("seg_base_deit_linear")
    with caplog.at_level(logging.INFO):
        out = convert_segmenter_state_dict(sd, source="deit.pth")
    assert not any(k.startswith("backbone.head") for k in out)
    assert "backbone.dist_token" in out
    assert "encoder.head_dist.weight" in caplog.text


def test_unknown_decoder_entry_is_named():
    sd = {"decoder.head.weight": torch.zeros(3, 4), "decoder.extra": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"decoder\.extra"):
        convert_segmenter_state_dict(sd, source="x.pth")


@need_reference
@pytest.mark.parametrize(
    "name, key, shape",
    [
        ("seg_tiny_mask", "decoder.cls_emb", "(1, 150, 192)"),
        ("seg_tiny_linear", "decoder.head.weight", "(150, 192)"),
    ],
)
def test_class_count_mismatch(name, key, shape):
    sd = official_state_dict(name)
    assert check_num_classes(sd, 150, "ckpt.pth") == 150
    with pytest.raises(ValueError) as err:
        check_num_classes(sd, 19, "ckpt.pth")
    msg = str(err.value)
    for part in ("ckpt.pth", key, shape, "150", "19", "MODEL.SEM_SEG_HEAD.NUM_CLASSES 150"):
        assert part in msg


@need_reference
def test_tool_reports_class_mismatch_between_variant_and_checkpoint(tmp_path, capsys):
    ckpt = write_release(tmp_path, "seg_tiny_linear", "linear", n_cls=19)
    assert tool.main([str(ckpt), str(tmp_path / "out.pkl")]) == 1
    err = capsys.readouterr().err
    assert str(ckpt) in err and "MODEL.SEM_SEG_HEAD.NUM_CLASSES 150" in err
    assert not (tmp_path / "out.pkl").exists()


def test_missing_variant_names_where_it_looked(tmp_path, capsys):
    ckpt = tmp_path / "checkpoint.pth"
    torch.save({"model": {"decoder.head.weight": torch.zeros(2, 2)}}, ckpt)
    assert tool.main([str(ckpt), str(tmp_path / "out.pkl")]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "variant.yml") in err and "--variant" in err


def test_variant_to_config_deit_and_standalone():
    variant = tiny_variant("linear")
    net = variant["net_kwargs"]
    net.update(
        backbone="deit_base_distilled_patch16_384",
        d_model=768,
        n_heads=12,
        normalization="deit",
        image_size=[640, 640],
    )
    variant["inference_kwargs"] = {"im_size": 640, "window_size": 640, "window_stride": 320}
    cfg = config_from_variant(variant)
    assert "_BASE_" not in cfg
    vit = cfg["MODEL"]["VIT"]
    assert (vit["EMBED_DIM"], vit["NUM_HEADS"], vit["DISTILLED"]) == (768, 12, True)
    assert vit["PRETRAIN_IMG_SIZE"] == 640
    assert cfg["MODEL"]["PIXEL_MEAN"] == [123.675, 116.28, 103.53]
    assert cfg["MODEL"]["PIXEL_STD"] == [58.395, 57.12, 57.375]
    assert cfg["MODEL"]["SEGMENTER"]["WINDOW_STRIDE"] == 320
    assert cfg["INPUT"]["MIN_SIZE_TEST"] == 640


def test_variant_inconsistent_with_backbone_name():
    variant = tiny_variant("mask_transformer")
    variant["net_kwargs"]["d_model"] = 384
    with pytest.raises(ValueError, match=r"v\.yml: net_kwargs\.d_model 384"):
        config_from_variant(variant, source="v.yml")
    variant = tiny_variant("mask_transformer")
    variant["net_kwargs"]["backbone"] = "resnet50"
    with pytest.raises(ValueError, match="resnet50"):
        config_from_variant(variant)


@need_reference
def test_standalone_config_builds_and_loads(tmp_path):
    ckpt = write_release(tmp_path, "seg_tiny_linear", "linear")
    out = tmp_path / "out.pkl"
    assert tool.main([str(ckpt), str(out), "--standalone"]) == 0
    text = out.with_suffix(".yaml").read_text()
    assert "_BASE_" not in text
    cfg = load_config(str(out.with_suffix(".yaml")), ["MODEL.DEVICE", "cpu"])
    report = load_with_report(build_model(cfg), out)
    assert (report.missing_keys, report.unexpected_keys, report.incorrect_shapes) == ([], [], [])


@need_reference
def test_pascal_context_release_fits_the_60_class_config():
    """The official Pascal Context release (Seg-L-Mask/16 at 480, 60 classes): its layout is the
    ADE20K Seg-L-Mask/16 listing with, by hand, 30 x 30 + 1 position embeddings and 60 classes.
    It converts into exactly the entries of seg_large_mask.yaml's model (names and shapes, on
    the meta device); the 59-class variant refuses it naming both counts."""
    from detectron2.modeling import META_ARCH_REGISTRY

    resized = {
        "encoder.pos_embed": (1, 30 * 30 + 1, 1024),
        "decoder.cls_emb": (1, 60, 1024),
        "decoder.mask_norm.weight": (60,),
        "decoder.mask_norm.bias": (60,),
    }
    official = {}
    for line in (REFERENCE / "seg_large_mask_640.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split("\t")
            official[key] = torch.empty(resized.get(key, yaml.safe_load(shape)), device="meta")
    configs = REPO / "configs" / "pascal_context" / "semantic-segmentation" / "segmenter"
    cfg = load_config(str(configs / "seg_large_mask.yaml"))
    assert check_num_classes(official, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, "pc.pth") == 60
    converted = convert_segmenter_state_dict(official, source="pc.pth")
    with torch.device("meta"):
        model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    own = model.state_dict()
    assert sorted(converted) == sorted(own)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        k: tuple(v.shape) for k, v in own.items()
    }
    cfg_59 = load_config(str(configs / "seg_large_mask_59.yaml"))
    with pytest.raises(ValueError, match="pc.pth: the checkpoint has 60 classes .* 59"):
        check_num_classes(official, cfg_59.MODEL.SEM_SEG_HEAD.NUM_CLASSES, "pc.pth")
