"""Which evaluators score a panoptic dataset: from MODEL.MASK_FORMER.TEST.*_ON, or from the
meta-architecture's own ``output_types`` (Pix2SeqD: panoptic and semantic, never instances)."""

from __future__ import annotations

import json

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)

from seg_zoo.config import load_config
from seg_zoo.engine.evaluators import build_evaluator

NAME = "seg_zoo_test_evaluator_choice_panoptic"


@pytest.fixture(scope="module", autouse=True)
def dataset(tmp_path_factory):
    # COCOEvaluator opens its instances json when built: an empty COCO file
    instances = tmp_path_factory.mktemp("coco") / "instances.json"
    instances.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    DatasetCatalog.register(NAME, lambda: [])
    MetadataCatalog.get(NAME).set(
        evaluator_type="coco_panoptic_seg",
        thing_classes=["a"],
        stuff_classes=["a", "b"],
        thing_dataset_id_to_contiguous_id={1: 0},
        stuff_dataset_id_to_contiguous_id={1: 0, 2: 1},
        panoptic_json="unused.json",
        panoptic_root="unused",
        json_file=str(instances),
        ignore_label=255,
    )
    yield
    DatasetCatalog.remove(NAME)
    MetadataCatalog.remove(NAME)


def kinds(cfg) -> list[type]:
    evaluator = build_evaluator(cfg, NAME, output_folder="unused")
    parts = evaluator._evaluators if isinstance(evaluator, DatasetEvaluators) else [evaluator]
    return sorted((type(e) for e in parts), key=lambda t: t.__name__)


def test_mask2former_follows_its_test_flags():
    cfg = load_config("configs/synthetic/maskformer2_R18_tiny_panoptic.yaml")
    assert kinds(cfg) == [COCOEvaluator, COCOPanopticEvaluator, SemSegEvaluator]
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = False
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = False
    assert kinds(cfg) == [COCOPanopticEvaluator]


def test_pix2seq_d_declares_its_outputs():
    cfg = load_config("configs/synthetic/pix2seq_d_R18_tiny_panoptic.yaml")
    # the MASK_FORMER flags mean nothing to Pix2SeqD, whatever they say
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = True
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
    assert kinds(cfg) == [COCOPanopticEvaluator, SemSegEvaluator]
