"""MODEL_ZOO.md and projects/Mask2Former/README.md agree with the repository.

The Mask2Former tables of MODEL_ZOO.md are checked against things that exist independently of
the document: the config tree under configs/ (every official model config has exactly one row,
and each row's backbone, queries, pretraining and schedule agree with what its YAML says), the
reference state_dict listings under /work/shared/reference/mask2former/ (the params column), the
URL layout of the official model zoo, and a few values checked by hand against the official
MODEL_ZOO.md (facebookresearch/Mask2Former, commit 9b0651c).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from detectron2.config import get_cfg

from seg_zoo import add_seg_zoo_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
MODEL_ZOO = REPO / "MODEL_ZOO.md"
PROJECT_README = REPO / "projects" / "Mask2Former" / "README.md"
REFERENCE = Path(os.environ.get("SEG_ZOO_REFERENCE", "/work/shared/reference")) / "mask2former"

# Official model configs: the same selection as tests/configs/test_official_configs.py
# (no Base-*, no synthetic/), since those are exactly the models of the official zoo.
# Folders of the same tree that hold seg_zoo's other systems (not the official Mask2Former zoo).
OTHER_SYSTEMS = {"upernet", "swin_rcnn", "segmenter", "pix2seq_d"}
OFFICIAL_MODELS = sorted(
    str(p.relative_to(CONFIGS))
    for p in CONFIGS.glob("*/*-segmentation/**/*.yaml")
    if not p.name.startswith("Base-") and not OTHER_SYSTEMS & set(p.relative_to(CONFIGS).parts)
)

# Rows whose config name and official download folder legitimately differ (footnoted in the
# document): the official table links a file that does not exist in the official repository.
URL_STEM_EXCEPTIONS = {
    "mapillary-vistas/semantic-segmentation/maskformer2_R50_bs16_300k.yaml": (
        "maskformer_R50_bs16_300k"
    ),
}
# The official URL folder of each dataset directory of configs/.
URL_DATASET = {
    "coco": "coco",
    "ade20k": "ade20k",
    "cityscapes": "cityscapes",
    "mapillary-vistas": "mapillary_vistas",
}
URL_RE = re.compile(
    r"^https://dl\.fbaipublicfiles\.com/maskformer/mask2former/"
    r"(?P<dataset>[a-z_0-9]+)/(?P<task>panoptic|instance|semantic)/(?P<stem>[A-Za-z0-9_]+)/"
    r"model_final_[0-9a-f]{6}\.pkl$"
)
LINK_RE = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")


def split_row(line: str) -> list[str]:
    if not (line.startswith("|") and line.rstrip().endswith("|")):
        raise ValueError(f"MODEL_ZOO.md: not a table row: {line!r}")
    return [c.strip() for c in line.strip()[1:-1].split("|")]


def parse_tables(text: str) -> list[list[dict[str, str]]]:
    """Every markdown table of ``text`` as a list of ``{header: cell}`` rows."""
    tables: list[list[dict[str, str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|--"):
            header = split_row(lines[i])
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = split_row(lines[i])
                if len(cells) != len(header):
                    raise ValueError(
                        f"MODEL_ZOO.md line {i + 1}: {len(cells)} cells under a header of "
                        f"{len(header)} columns: {lines[i]!r}"
                    )
                rows.append(dict(zip(header, cells)))
                i += 1
            tables.append(rows)
        else:
            i += 1
    return tables


def section(text: str, title: str) -> str:
    """The text of the ``## title`` section of MODEL_ZOO.md (up to the next ``## ``)."""
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def zoo_rows(title: str = "Mask2Former") -> list[dict[str, str]]:
    """Rows of one section of MODEL_ZOO.md whose first cell links a config, with the link."""
    rows = []
    for table in parse_tables(section(MODEL_ZOO.read_text(), title)):
        for row in table:
            links = LINK_RE.findall(row.get("config", ""))
            if links and links[0][1].startswith("configs/"):
                row = dict(row)
                row["_config"] = links[0][1][len("configs/") :]
                rows.append(row)
    return rows


def link_url(cell: str) -> str:
    links = LINK_RE.findall(cell)
    assert len(links) == 1, f"expected one link in {cell!r}"
    return links[0][1]


def load_cfg(rel: str):
    cfg = get_cfg()
    add_seg_zoo_config(cfg)
    cfg.merge_from_file(str(CONFIGS / rel), allow_unsafe=False)
    return cfg


def assert_params_column(row: dict, cfg) -> int:
    """The row's params cell is the parameter count of the model built (on the meta device)."""
    import torch
    from detectron2.modeling import META_ARCH_REGISTRY

    with torch.device("meta"):
        model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    params = sum(p.numel() for p in model.parameters())
    assert row["params"].replace(",", "") == str(params), f"{row['_config']}: {params:,}"
    return params


ROWS = zoo_rows()
ROW_IDS = [r["_config"] for r in ROWS]


def test_table_parses_and_covers_every_official_config():
    assert len(OFFICIAL_MODELS) == 47, "the official tree has 47 non-video model configs"
    listed = sorted(ROW_IDS)
    duplicates = sorted({c for c in listed if listed.count(c) > 1})
    assert not duplicates, f"configs listed twice in MODEL_ZOO.md: {duplicates}"
    assert listed == OFFICIAL_MODELS, (
        f"missing: {sorted(set(OFFICIAL_MODELS) - set(listed))}, "
        f"not under configs/: {sorted(set(listed) - set(OFFICIAL_MODELS))}"
    )


def test_required_columns_present():
    for row in ROWS:
        for col in ("config", "backbone", "pretrain", "params", "model id", "download", "note"):
            assert col in row, f"{row['_config']}: no {col!r} column"
        assert ("epochs" in row) != ("iterations" in row), f"{row['_config']}: schedule column"
        assert row["note"].startswith("official weights, loads unchanged"), row["_config"]


@pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"no reference listings at {REFERENCE}")
def test_params_match_reference_listing():
    for row in ROWS:
        listing = REFERENCE / f"{row['_config']}.txt"
        total = [ln for ln in listing.read_text().splitlines() if ln.startswith("# total")]
        assert len(total) == 1, f"{listing}: expected one '# total' line"
        params = int(re.search(r"params=(\d+)", total[0]).group(1))
        assert row["params"].replace(",", "") == str(params), (
            f"{row['_config']}: params column {row['params']!r}, reference {params:,}"
        )


def test_download_urls_follow_the_official_layout():
    urls = [link_url(r["download"]) for r in ROWS]
    assert len(set(urls)) == len(urls), "a download URL is listed twice"
    assert len({r["model id"] for r in ROWS}) == len(ROWS), "a model id is listed twice"
    for row, url in zip(ROWS, urls):
        rel = row["_config"]
        m = URL_RE.match(url)
        assert m, f"{rel}: download URL {url!r} is not an official Mask2Former model-zoo URL"
        dataset, task_dir = rel.split("/")[:2]
        assert m["dataset"] == URL_DATASET[dataset], f"{rel}: {url}"
        assert task_dir == f"{m['task']}-segmentation", f"{rel}: {url}"
        stem = URL_STEM_EXCEPTIONS.get(rel, Path(rel).stem)
        assert m["stem"] == stem, f"{rel}: URL folder {m['stem']!r}, expected {stem!r}"
        # The link text is the file name, so a reader sees which checkpoint it is.
        assert LINK_RE.findall(row["download"])[0][0] == url.rsplit("/", 1)[1], rel


SWIN_SIZES = {  # (EMBED_DIM, DEPTHS) of the Swin variants, Liu et al. 2021, Sec. 3.3
    "Swin-T": (96, [2, 2, 6, 2]),
    "Swin-S": (96, [2, 2, 18, 2]),
    "Swin-B": (128, [2, 2, 18, 2]),
    "Swin-L": (192, [2, 2, 18, 2]),
}


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_row_agrees_with_its_config(row):
    rel = row["_config"]
    cfg = load_cfg(rel)
    backbone = row["backbone"]
    if backbone.startswith("R"):
        assert cfg.MODEL.BACKBONE.NAME == "build_resnet_backbone", rel
        assert cfg.MODEL.RESNETS.DEPTH == int(backbone[1:]), rel
        assert row["pretrain"] == "IN-1k", rel
    else:
        variant = backbone.split()[0]
        assert cfg.MODEL.BACKBONE.NAME == "D2SwinTransformer", rel
        assert (cfg.MODEL.SWIN.EMBED_DIM, list(cfg.MODEL.SWIN.DEPTHS)) == SWIN_SIZES[variant], rel
        in21k = "_22k" in cfg.MODEL.WEIGHTS
        assert ("(IN21k)" in backbone) == in21k, f"{rel}: MODEL.WEIGHTS {cfg.MODEL.WEIGHTS}"
        size = re.search(r"_(224|384)", cfg.MODEL.WEIGHTS).group(1)
        assert row["pretrain"] == f"IN-{'21k' if in21k else '1k'} ({size})", rel
    queries = cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES
    assert ("(200 queries)" in row["config"]) == (queries == 200), f"{rel}: {queries} queries"
    if "iterations" in row:
        assert row["iterations"] == f"{cfg.SOLVER.MAX_ITER // 1000}k", (
            f"{rel}: iterations column {row['iterations']!r}, SOLVER.MAX_ITER {cfg.SOLVER.MAX_ITER}"
        )
    else:
        assert rel.endswith(f"_{row['epochs']}ep.yaml"), rel


def test_spot_values_from_the_official_table():
    """A few cells checked by hand against the official MODEL_ZOO.md (commit 9b0651c)."""
    by_cfg = {r["_config"]: r for r in ROWS}
    coco = by_cfg["coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"]
    assert (coco["PQ"], coco["AP"], coco["mIoU"], coco["model id"]) == (
        "51.9",
        "41.7",
        "61.7",
        "47430278_4",
    )
    assert link_url(coco["download"]).endswith("/model_final_94dc52.pkl")
    ade = by_cfg[
        "ade20k/semantic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_160k_res640.yaml"
    ]
    assert (ade["mIoU"], ade["mIoU (ms+flip)"]) == ("56.1", "57.3")
    city = by_cfg["cityscapes/instance-segmentation/maskformer2_R50_bs16_90k.yaml"]
    assert (city["AP"], city["AP50"]) == ("37.4", "61.9")
    mvd = by_cfg["mapillary-vistas/panoptic-segmentation/maskformer_R50_bs16_300k.yaml"]
    assert (mvd["PQ"], mvd["mIoU"]) == ("36.3", "50.7")


@pytest.mark.parametrize("doc", [MODEL_ZOO, PROJECT_README], ids=lambda p: p.name)
def test_relative_links_and_footnotes_resolve(doc):
    if not doc.is_file():
        pytest.fail(f"{doc} does not exist")
    text = doc.read_text()
    for _, target in LINK_RE.findall(text):
        if re.match(r"^[a-z]+://", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"{doc.relative_to(REPO)}: link target {target!r} does not exist"
    used = set(re.findall(r"\[\^([\w-]+)\](?!:)", text))
    defined = set(re.findall(r"^\[\^([\w-]+)\]:", text, flags=re.M))
    assert used == defined, f"{doc.name}: footnotes used {sorted(used)}, defined {sorted(defined)}"


# --------------------------------------------------------------------------------------------
# Segmenter section
# --------------------------------------------------------------------------------------------
SEGMENTER_ROWS = zoo_rows("Segmenter")
SEGMENTER_URL_RE = re.compile(
    r"^https://www\.rocq\.inria\.fr/cluster-willow/rstrudel/segmenter/checkpoints/"
    r"(?P<dataset>ade20k|cityscapes|pascal_context)/(?P<folder>[a-z0-9_]+)/checkpoint\.pth$"
)
SEGMENTER_REFERENCE = REFERENCE.parent / "segmenter"


def test_segmenter_rows_cover_the_official_releases():
    # The official README lists 7 ADE20K releases, 1 Pascal Context and 1 Cityscapes.
    urls = [link_url(r["download"]) for r in SEGMENTER_ROWS]
    datasets = [SEGMENTER_URL_RE.match(u)["dataset"] for u in urls]
    assert sorted(datasets) == ["ade20k"] * 7 + ["cityscapes", "pascal_context"]
    assert len(set(urls)) == len(urls)
    for row, url in zip(SEGMENTER_ROWS, urls):
        m = SEGMENTER_URL_RE.match(url)
        # the config sits in the release's dataset folder and carries the release folder's name
        assert row["_config"] == (
            f"{m['dataset']}/semantic-segmentation/segmenter/{m['folder']}.yaml"
        ), url
        assert (CONFIGS / row["_config"]).is_file()


@pytest.mark.parametrize("row", SEGMENTER_ROWS, ids=[r["_config"] for r in SEGMENTER_ROWS])
def test_segmenter_row_params_and_resolution(row):
    cfg = load_cfg(row["_config"])
    params = assert_params_column(row, cfg)
    side = cfg.MODEL.SEGMENTER.WINDOW_SIZE
    assert row["resolution"] == f"{side}x{side}"
    assert (cfg.MODEL.VIT.DISTILLED) == ("distilled" in row["backbone"])
    patch = int(re.search(r"/(\d+)", row["backbone"]).group(1))
    assert cfg.MODEL.VIT.PATCH_SIZE == patch
    mask = "Mask Transformer" in row["backbone"]
    assert cfg.MODEL.SEM_SEG_HEAD.NAME == (
        "SegmenterMaskTransformer" if mask else "SegmenterLinearDecoder"
    )
    listing = SEGMENTER_REFERENCE / f"{Path(row['_config']).stem}.txt"
    if row["_config"].startswith("ade20k/") and listing.is_file():
        # the official total carries the encoder's 1000-class classifier (two with DeiT)
        total = int(re.search(r"params=(\d+)", listing.read_text()).group(1))
        heads = 2 if cfg.MODEL.VIT.DISTILLED else 1
        assert params == total - heads * (cfg.MODEL.VIT.EMBED_DIM * 1000 + 1000)


def test_segmenter_metrics_by_hand():
    # Official README (rstrudel/segmenter): Seg-L-Mask/16 ADE20K 51.8 / 53.6, Cityscapes 79.1 / 81.3
    by_config = {r["_config"]: r for r in SEGMENTER_ROWS}
    ade = by_config["ade20k/semantic-segmentation/segmenter/seg_large_mask_640.yaml"]
    assert (ade["mIoU"], ade["mIoU (ms+flip)"]) == ("51.8", "53.6")
    cs = by_config["cityscapes/semantic-segmentation/segmenter/seg_large_mask.yaml"]
    assert (cs["mIoU"], cs["mIoU (ms+flip)"]) == ("79.1", "81.3")


UPERNET_ROWS = zoo_rows("Swin + UperNet")
UPERNET_URL_RE = re.compile(
    r"^https://github\.com/SwinTransformer/storage/releases/download/v1\.0\.1/"
    r"upernet_swin_(?P<size>tiny|small|base)_patch4_window7_512x512\.pth$"
)


def test_upernet_rows_are_the_official_releases_and_in_the_catalog():
    from seg_zoo.model_zoo.catalog import MODEL_ZOO

    # the official README's ADE20K table: Swin-T/S/B, ImageNet-1K, 512x512, 160k
    sizes = [UPERNET_URL_RE.match(link_url(r["download"]))["size"] for r in UPERNET_ROWS]
    assert sizes == ["tiny", "small", "base"]
    by_url = {e.url: e for e in MODEL_ZOO.values()}
    for row, size in zip(UPERNET_ROWS, sizes):
        entry = by_url[link_url(row["download"])]
        assert entry.config == "configs/" + row["_config"]
        assert (
            row["_config"]
            == f"ade20k/semantic-segmentation/upernet/upernet_swin_{size}_bs16_160k.yaml"
        )
        assert dict(entry.metrics) == {
            "mIoU": float(row["mIoU"]),
            "mIoU (ms+flip)": float(row["mIoU (ms+flip)"]),
        }
        assert (row["crop"], row["iterations"]) == ("512x512", "160k")
    # by hand, from the official README: Swin-T 44.51 / 45.81, Swin-B 48.13 / 49.72
    assert (UPERNET_ROWS[0]["mIoU"], UPERNET_ROWS[0]["mIoU (ms+flip)"]) == ("44.51", "45.81")
    assert (UPERNET_ROWS[2]["mIoU"], UPERNET_ROWS[2]["mIoU (ms+flip)"]) == ("48.13", "49.72")


@pytest.mark.parametrize("row", UPERNET_ROWS, ids=[r["_config"] for r in UPERNET_ROWS])
def test_upernet_row_params_and_config(row):
    cfg = load_cfg(row["_config"])
    assert_params_column(row, cfg)
    # the official model: window 7, ImageNet-1K 224 pre-training, whole-image inference unpadded
    assert cfg.MODEL.SWIN.WINDOW_SIZE == 7 and cfg.MODEL.SWIN.PRETRAIN_IMG_SIZE == 224
    assert row["pretrain"] + ".pkl" == cfg.MODEL.WEIGHTS
    assert cfg.MODEL.UPERNET.SIZE_DIVISIBILITY == 0
    assert (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) == (512, 2048)
