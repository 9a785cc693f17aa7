"""Official model-zoo ``.pkl`` checkpoints load into seg_zoo's models through detectron2's
``DetectionCheckpointer``: every official entry lands, nothing is left out, and a checkpoint
for another number of classes is refused loudly, naming the entry and both shapes.

The checkpoints are written here in the model-zoo layout (a pickle of ``{"model": {name: numpy
array}, "__author__": ..., "matching_heuristics": True}``), with the entry names and shapes of
the OFFICIAL model taken from the reference listings under
/work/shared/reference/mask2former/ (see tests/configs/test_official_configs.py) and values
from ``make_weights`` (tests/modeling/test_official_parity.py).
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model

# tests/ is not a package: pytest puts this folder on sys.path (rootdir-relative "prepend" import).
from test_official_parity import make_weights

from seg_zoo import add_seg_zoo_config

REPO = Path(__file__).resolve().parents[2]
REFERENCE = Path(os.environ.get("SEG_ZOO_REFERENCE", "/work/shared/reference")) / "mask2former"
need_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason=f"reference state_dict listings not found at {REFERENCE}"
)

ADE_R50 = "ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml"
ADE_SWIN_T = "ade20k/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_160k.yaml"
COCO_PANOPTIC_R50 = "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
CLASS_EMBED = "sem_seg_head.predictor.class_embed.weight"


@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread():
    # These models are the slowest thing in the suite; on a machine whose cores are shared with
    # other processes, OpenMP threads spin-wait against them (5-10x slower here). One thread is
    # also how the official outputs were recorded.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def official_shapes(rel: str) -> dict[str, tuple[int, ...]]:
    """``name -> shape`` of every state_dict entry of the official model built from ``rel``."""
    entries = {}
    for line in (REFERENCE / f"{rel}.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, shape = line.split("\t")
            entries[name] = tuple(int(s) for s in shape.strip()[1:-1].split(",") if s.strip())
    return entries


def build(rel: str) -> torch.nn.Module:
    cfg = get_cfg()
    add_seg_zoo_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / rel))
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg).eval()


def write_model_zoo_pkl(path: Path, rel: str, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A model-zoo pkl with the official entries of ``rel``; returns the float entries written.

    Integer buffers (Swin's relative_position_index) are structure, identical in every
    checkpoint of a window size; they are copied from ``model`` so the file holds every
    official entry.
    """
    shapes = official_shapes(rel)
    weights = make_weights(shapes)
    own = model.state_dict()
    arrays = {}
    for name in shapes:
        value = weights[name] if name in weights else own[name]
        arrays[name] = value.numpy()
    with open(path, "wb") as f:
        pickle.dump(
            {"model": arrays, "__author__": "seg_zoo tests", "matching_heuristics": True}, f
        )
    return weights


def load_with_report(model: torch.nn.Module, path: Path):
    """``DetectionCheckpointer(model).load(path)``, also returning detectron2's own report of
    missing, unexpected and shape-mismatched keys."""
    checkpointer = DetectionCheckpointer(model)
    reports = []
    load_model = checkpointer._load_model

    def spy(checkpoint):
        reports.append(load_model(checkpoint))
        return reports[-1]

    checkpointer._load_model = spy
    checkpointer.load(str(path))
    assert len(reports) == 1
    return reports[0]


@need_reference
@pytest.mark.parametrize("rel", [ADE_R50, ADE_SWIN_T])
def test_model_zoo_pkl_loads_completely(rel, tmp_path):
    model = build(rel)
    path = tmp_path / "model_final.pkl"
    weights = write_model_zoo_pkl(path, rel, model)
    report = load_with_report(model, path)
    assert report.missing_keys == []
    assert report.unexpected_keys == []
    assert report.incorrect_shapes == []
    state = model.state_dict()
    assert set(weights) <= set(state)
    wrong = [k for k, v in weights.items() if not torch.equal(state[k], v)]
    assert not wrong, f"{len(wrong)} entries not loaded as written, e.g. {wrong[:5]}"


@need_reference
def test_class_count_mismatch_is_reported(tmp_path, caplog):
    # A COCO panoptic checkpoint (133 classes + no-object) into an ADE20K model (150 + 1).
    model = build(ADE_R50)
    before = model.state_dict()[CLASS_EMBED].clone()
    path = tmp_path / "coco_model_final.pkl"
    write_model_zoo_pkl(path, COCO_PANOPTIC_R50, model)
    with caplog.at_level(logging.WARNING):
        report = load_with_report(model, path)
    log = caplog.text
    # detectron2's name-matching loader skips the entry and says why, with both shapes...
    assert CLASS_EMBED in log
    assert "(134, 256)" in log and "(151, 256)" in log
    # ...and so does fvcore's loader under it; the entry is left as it was.
    assert (CLASS_EMBED, (134, 256), (151, 256)) in [
        (k, tuple(a), tuple(b)) for k, a, b in report.incorrect_shapes
    ]
    assert CLASS_EMBED in report.missing_keys
    assert torch.equal(model.state_dict()[CLASS_EMBED], before)
    # Everything else of the shared architecture loads.
    # (criterion.empty_weight, the loss weight per class, is in the state_dict too.)
    assert set(report.missing_keys) == {
        CLASS_EMBED,
        "sem_seg_head.predictor.class_embed.bias",
        "criterion.empty_weight",
    }
