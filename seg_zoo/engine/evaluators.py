"""Which detectron2 evaluators score a dataset, decided by its metadata's ``evaluator_type``.

The choices are Mask2Former's: semantic datasets get mIoU; panoptic datasets get PQ and, when
the model also produces them (``MODEL.MASK_FORMER.TEST.*_ON``, or the meta-architecture's
``output_types(cfg)`` where it has one, as Pix2SeqD), mask AP and mIoU; Cityscapes gets its own
scripts; DAVIS-layout videos get J&F. Each rule is one row of ``EVALUATOR_RULES`` below.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from detectron2.data import MetadataCatalog
from detectron2.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    LVISEvaluator,
    SemSegEvaluator,
)
from detectron2.utils import comm

from ..evaluation import DAVISEvaluator, InstanceSegEvaluator

_PANOPTIC_TYPES = frozenset(
    {
        "coco_panoptic_seg",
        "ade20k_panoptic_seg",
        "cityscapes_panoptic_seg",
        "mapillary_vistas_panoptic_seg",
    }
)


# The output each MODEL.MASK_FORMER.TEST.*_ON flag switches on.
_FLAG_OUTPUTS = {
    "PANOPTIC_ON": "panoptic_seg",
    "SEMANTIC_ON": "sem_seg",
    "INSTANCE_ON": "instances",
}


def _test_flag(name: str) -> Callable:
    def check(cfg) -> bool:
        from detectron2.modeling import META_ARCH_REGISTRY

        # A meta-architecture whose outputs do not follow the flags says what it produces
        # (``output_types(cfg)``, e.g. Pix2SeqD); the others read MODEL.MASK_FORMER.TEST.*_ON,
        # which add_seg_zoo_config declares for every config.
        arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
        if hasattr(arch, "output_types"):
            return _FLAG_OUTPUTS[name] in arch.output_types(cfg)
        return bool(cfg.MODEL.MASK_FORMER.TEST.get(name))

    return check


def _always(cfg) -> bool:
    return True


def _semseg(name: str, out: str) -> DatasetEvaluator:
    return SemSegEvaluator(name, distributed=True, output_dir=out)


def _single_machine(factory: Callable[[str], DatasetEvaluator]) -> Callable:
    """Cityscapes' evaluators gather files through the local disk: one machine only."""

    def build(name: str, out: str) -> DatasetEvaluator:
        if comm.get_world_size() != comm.get_local_size():
            raise RuntimeError(
                f"the Cityscapes evaluators for {name!r} write and read a local temporary "
                "folder and cannot run across several machines; evaluate on one machine "
                "(--eval-only with --num-machines 1)"
            )
        return factory(name)

    return build


@dataclass(frozen=True)
class EvaluatorRule:
    """Add ``factory(dataset_name, output_dir)`` when the type matches and ``when(cfg)``."""

    evaluator_types: frozenset[str]
    when: Callable
    factory: Callable[[str, str], DatasetEvaluator]


EVALUATOR_RULES: tuple[EvaluatorRule, ...] = (
    EvaluatorRule(frozenset({"sem_seg", "ade20k_panoptic_seg"}), _always, _semseg),
    EvaluatorRule(frozenset({"coco"}), _always, lambda n, out: COCOEvaluator(n, output_dir=out)),
    EvaluatorRule(
        _PANOPTIC_TYPES, _test_flag("PANOPTIC_ON"), lambda n, out: COCOPanopticEvaluator(n, out)
    ),
    EvaluatorRule(
        frozenset({"coco_panoptic_seg"}),
        _test_flag("INSTANCE_ON"),
        lambda n, out: COCOEvaluator(n, output_dir=out),
    ),
    EvaluatorRule(
        frozenset({"coco_panoptic_seg", "mapillary_vistas_panoptic_seg"}),
        _test_flag("SEMANTIC_ON"),
        _semseg,
    ),
    EvaluatorRule(
        frozenset({"mapillary_vistas_panoptic_seg", "ade20k_panoptic_seg"}),
        _test_flag("INSTANCE_ON"),
        lambda n, out: InstanceSegEvaluator(n, output_dir=out),
    ),
    EvaluatorRule(
        frozenset({"cityscapes_instance"}),
        _always,
        _single_machine(CityscapesInstanceEvaluator),
    ),
    EvaluatorRule(
        frozenset({"cityscapes_sem_seg"}), _always, _single_machine(CityscapesSemSegEvaluator)
    ),
    EvaluatorRule(
        frozenset({"cityscapes_panoptic_seg"}),
        _test_flag("SEMANTIC_ON"),
        _single_machine(CityscapesSemSegEvaluator),
    ),
    EvaluatorRule(
        frozenset({"cityscapes_panoptic_seg"}),
        _test_flag("INSTANCE_ON"),
        _single_machine(CityscapesInstanceEvaluator),
    ),
    EvaluatorRule(frozenset({"lvis"}), _always, lambda n, out: LVISEvaluator(n, output_dir=out)),
    # Video object segmentation (DAVIS layout): J&F and track consistency of "video_ids".
    EvaluatorRule(frozenset({"davis"}), _always, lambda n, out: DAVISEvaluator(n)),
)


def build_evaluator(cfg, dataset_name: str, output_folder: str | None = None) -> DatasetEvaluator:
    """The evaluator(s) for ``dataset_name``, from its metadata's ``evaluator_type``."""
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if evaluator_type is None:
        raise NotImplementedError(
            f"dataset {dataset_name!r} has no 'evaluator_type' in its metadata, so seg_zoo "
            "cannot choose an evaluator; set it with MetadataCatalog.get(name).set("
            "evaluator_type=...) or pass evaluators to Trainer.test"
        )
    evaluators = [
        rule.factory(dataset_name, output_folder)
        for rule in EVALUATOR_RULES
        if evaluator_type in rule.evaluator_types and rule.when(cfg)
    ]
    if not evaluators:
        known = sorted(set().union(*(r.evaluator_types for r in EVALUATOR_RULES)))
        raise NotImplementedError(
            f"no evaluator for dataset {dataset_name!r} of evaluator_type {evaluator_type!r} "
            f"with this config (types seg_zoo knows: {known}; panoptic types need "
            "MODEL.MASK_FORMER.TEST.PANOPTIC_ON/INSTANCE_ON/SEMANTIC_ON)"
        )
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)
