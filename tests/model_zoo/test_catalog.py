"""The model-zoo catalog agrees with MODEL_ZOO.md and with the config tree.

MODEL_ZOO.md is read here with its own small parser (the config link and the download link of
each table row), independently of the one-off script that generated the catalog.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from seg_zoo.model_zoo.catalog import (
    MODEL_ZOO,
    ModelZooEntry,
    UnknownModelError,
    find_by_config,
    get_entry,
    list_models,
)

REPO = Path(__file__).resolve().parents[2]
ROW_LINKS = re.compile(r"\]\((configs/[^)]+\.yaml)\).*\]\((https://[^)]+\.(?:pkl|pth))\)")


def model_zoo_md_rows() -> list[tuple[str, str]]:
    """(config, url) of every table row of MODEL_ZOO.md that has a download link."""
    rows = []
    for line in (REPO / "MODEL_ZOO.md").read_text().splitlines():
        if line.startswith("|"):
            match = ROW_LINKS.search(line)
            if match:
                rows.append((match.group(1), match.group(2)))
    return rows


def test_catalog_matches_model_zoo_md():
    rows = model_zoo_md_rows()
    # "47 models" says the Mask2Former section; the Segmenter section lists the 9 official
    # releases, the Swin + UperNet section the 3 ADE20K releases.
    assert len(rows) == 47 + 9 + 3
    assert sorted(rows) == sorted((e.config, e.url) for e in MODEL_ZOO.values())


def test_names_configs_and_checksums():
    for name, entry in MODEL_ZOO.items():
        assert entry.name == name
        assert entry.config_path.is_file(), entry.config
        # the naming scheme: the official URL minus host prefix and file name
        if name.startswith("upernet/"):
            assert entry.converter == "mmseg_upernet"
            assert entry.url == (
                "https://github.com/SwinTransformer/storage/releases/download/v1.0.1/"
                f"{name.rsplit('/', 1)[1]}.pth"
            )
            size = re.fullmatch(r"upernet/ade20k/upernet_swin_(\w+)_patch4_window7_512x512", name)
            assert entry.config == (
                f"configs/ade20k/semantic-segmentation/upernet/upernet_swin_{size[1]}_bs16_160k.yaml"
            )
        elif name.startswith("segmenter/"):
            assert entry.converter == "segmenter"
            assert entry.url == (
                "https://www.rocq.inria.fr/cluster-willow/rstrudel/segmenter/checkpoints/"
                f"{name[len('segmenter/') :]}/checkpoint.pth"
            )
            assert Path(entry.config).stem == name.rsplit("/", 1)[1]
        else:
            assert entry.converter is None
            assert entry.url == (
                f"https://dl.fbaipublicfiles.com/maskformer/{name}/{Path(entry.url).name}"
            )
        assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
        assert entry.uri == "seg_zoo://" + name
        assert entry.metrics
    assert list_models() == sorted(MODEL_ZOO)


def test_values_checked_by_hand():
    # From the official MODEL_ZOO.md (facebookresearch/Mask2Former), COCO panoptic R50 row and
    # the Mapillary Vistas semantic R50 row, whose URL folder differs from its config name.
    entry = get_entry("seg_zoo://mask2former/coco/panoptic/maskformer2_R50_bs16_50ep")
    assert entry.config == "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
    assert entry.url.endswith("model_final_94dc52.pkl")
    assert dict(entry.metrics) == {"PQ": 51.9, "AP": 41.7, "mIoU": 61.7}
    assert entry.model_id == "47430278_4"

    mvd = find_by_config("mapillary-vistas/semantic-segmentation/maskformer2_R50_bs16_300k.yaml")
    assert mvd.name == "mask2former/mapillary_vistas/semantic/maskformer_R50_bs16_300k"
    assert mvd.metrics["mIoU"] == 57.4
    assert find_by_config(REPO / mvd.config) is mvd

    # From the official Segmenter README (rstrudel/segmenter): Seg-B-Mask/16 on ADE20K.
    seg = get_entry("seg_zoo://segmenter/ade20k/seg_base_mask")
    assert seg.config == "configs/ade20k/semantic-segmentation/segmenter/seg_base_mask.yaml"
    assert seg.url == (
        "https://www.rocq.inria.fr/cluster-willow/rstrudel/segmenter/checkpoints/ade20k/"
        "seg_base_mask/checkpoint.pth"
    )
    assert dict(seg.metrics) == {"mIoU": 48.5, "mIoU (ms+flip)": 50.0}


def test_unknown_names():
    with pytest.raises(UnknownModelError) as info:
        get_entry("mask2former/ade20k/semantic/maskformer2_swin_tiny")
    message = str(info.value)
    assert "Closest names: mask2former/ade20k/semantic/maskformer2_swin_tiny_bs16_160k" in message
    for name in MODEL_ZOO:
        assert name in message
    with pytest.raises(KeyError, match="no seg_zoo model zoo entry"):
        find_by_config("configs/synthetic/nothing.yaml")


def test_entry_validation():
    with pytest.raises(ValueError, match="'bad'.*64 hex"):
        ModelZooEntry(name="bad", config="c.yaml", url="https://x/y.pkl", sha256="abc")
    entry = ModelZooEntry(name="ok", config="c.yaml", url="https://x/y.pkl", sha256="AB" * 32)
    assert entry.sha256 == "ab" * 32


def test_segmenter_entries_build_the_official_inference():
    """What the official variant.yml files of the releases say (rstrudel/segmenter config.yml:
    ADE20K window 512 stride 512, Cityscapes window 768 stride 512, Pascal Context window 480
    stride 320, image side im_size 512, 1024 and 520), plus the official ViT's LayerNorm eps and
    position-embedding resizing."""
    from seg_zoo.config import load_config

    expected = {
        "ade20k": (512, 512, 512),
        "cityscapes": (768, 512, 1024),
        "pascal_context": (480, 320, 520),
    }
    for name, entry in MODEL_ZOO.items():
        if entry.converter != "segmenter":
            continue
        cfg = load_config(str(entry.config_path))
        window, stride, im_size = expected[name.split("/")[1]]
        if name.endswith("_640"):
            window, stride, im_size = 640, 640, 640
        assert cfg.MODEL.SEGMENTER.WINDOW_SIZE == window, name
        assert cfg.MODEL.SEGMENTER.WINDOW_STRIDE == stride, name
        assert cfg.INPUT.MIN_SIZE_TEST == im_size, name
        assert (
            cfg.MODEL.VIT.NORM_EPS == 1e-5 and cfg.MODEL.VIT.POS_EMBED_INTERPOLATION == "bilinear"
        )
        assert cfg.MODEL.VIT.PRETRAIN_IMG_SIZE == window, name
