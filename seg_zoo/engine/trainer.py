"""The trainer behind ``train_net.py``: detectron2's ``DefaultTrainer`` with seg_zoo's parts.

What it changes from ``DefaultTrainer``:
- optimizer from :mod:`seg_zoo.engine.optimizer` (backbone multiplier, no-decay groups,
  full-model clipping), the poly/step schedules of ``detectron2.projects.deeplab`` and
  Pix2Seq-D's warm-up + linear decay (:mod:`seg_zoo.engine.lr_scheduler`);
- training data from the mapper named by ``INPUT.DATASET_MAPPER_NAME`` through a loader whose
  sample stream and augmentations are a function of ``(SEED, position)``, so ``--resume``
  continues exactly;
- with ``SEED >= 0``, the model's own randomness (point sampling, dropout, drop-path) is
  re-seeded from ``(SEED, iteration, rank)`` before every step, for the same reason;
- AMP only where it can run: it is switched off, with a log line, on CPU;
- DistributedDataParallel without ``device_ids`` on CPU, so ``--num-gpus 2 MODEL.DEVICE cpu``
  trains with 2 gloo processes;
- evaluators from the dataset's metadata (:func:`seg_zoo.engine.evaluators.build_evaluator`);
- a checkpointer that adds a NUM_CLASSES hint to detectron2's key/shape mismatch report;
- with ``MODEL_EMA.ENABLED``, an exponential moving average of the weights, updated after each
  step, saved in checkpoints (``ema_state``) and used by the periodic/final evaluation when
  ``MODEL_EMA.EVAL_WITH_EMA``.
"""

from __future__ import annotations

import logging
import os
import weakref

import torch
from detectron2.config import CfgNode
from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts
from detectron2.engine import DefaultTrainer, HookBase, TrainerBase, create_ddp_model
from detectron2.engine.hooks import EvalHook
from detectron2.engine.train_loop import AMPTrainer, SimpleTrainer
from detectron2.evaluation import SemSegEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from .checkpoint import Checkpointer
from .ema import EMAHook, ModelEMA, evaluates_with_ema
from .evaluators import build_evaluator
from .lr_scheduler import build_lr_scheduler
from .optimizer import build_optimizer
from .train_loader import ResumableTrainingSampler, SeededMapDataset, _mix

logger = logging.getLogger(__name__)


class ReseedModelRNG(HookBase):
    """Seed torch's RNGs from ``(seed, iteration, rank)`` before each training step."""

    def __init__(self, seed: int):
        self._seed = int(seed)

    def before_step(self):
        seed = _mix(self._seed, self.trainer.iter, comm.get_rank(), 0x5EED)
        torch.manual_seed(seed)  # CPU and every CUDA device


def amp_enabled(cfg: CfgNode) -> bool:
    """Whether training uses AMP: as configured, except never on CPU."""
    return bool(cfg.SOLVER.AMP.ENABLED) and torch.device(cfg.MODEL.DEVICE).type == "cuda"


def create_ddp(model: torch.nn.Module) -> torch.nn.Module:
    """detectron2's ``create_ddp_model``, without ``device_ids`` when the model is on CPU."""
    if comm.get_world_size() == 1:
        return model
    on_cpu = next(model.parameters()).device.type == "cpu"
    kwargs = {"device_ids": None} if on_cpu else {}
    return create_ddp_model(model, broadcast_buffers=False, **kwargs)


# Mappers whose targets index thing classes only (COCO instance json); the others index all
# classes, things and stuff, as Mask2Former's semantic and panoptic datasets do.
_THING_ONLY_MAPPERS = frozenset({"mask_former_instance", "coco_instance_lsj"})
# Meta-architectures whose class count is MODEL.ROI_HEADS.NUM_CLASSES.
_DETECTOR_META_ARCHS = frozenset({"GeneralizedRCNN"})


def check_num_classes(cfg: CfgNode) -> None:
    """Fail early when the training data has more classes than the model predicts.

    Without this, a label >= NUM_CLASSES surfaces as an index error deep inside the loss (or
    a CUDA device-side assert). Fewer classes than NUM_CLASSES is allowed (a head sized for a
    superset), with a warning.
    """
    from detectron2.data import MetadataCatalog

    if cfg.MODEL.META_ARCHITECTURE in _DETECTOR_META_ARCHS:
        # detectron2's R-CNNs size their box/mask heads by ROI_HEADS.NUM_CLASSES (things).
        config_key, num_classes = "MODEL.ROI_HEADS.NUM_CLASSES", cfg.MODEL.ROI_HEADS.NUM_CLASSES
        key = "thing_classes"
    else:
        config_key = "MODEL.SEM_SEG_HEAD.NUM_CLASSES"
        num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        thing_only = cfg.INPUT.DATASET_MAPPER_NAME in _THING_ONLY_MAPPERS
        key = "thing_classes" if thing_only else "stuff_classes"
    for name in cfg.DATASETS.TRAIN:
        classes = MetadataCatalog.get(name).get(key)
        if classes is None:
            continue
        if len(classes) > num_classes:
            raise ValueError(
                f"dataset {name!r} has {len(classes)} {key} but {config_key} "
                f"is {num_classes}; set {config_key} {len(classes)}"
            )
        if len(classes) < num_classes:
            logger.warning(
                "dataset %r has %d %s and %s is %d: the extra outputs are never trained",
                name,
                len(classes),
                key,
                config_key,
                num_classes,
            )


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` for every seg_zoo method (see the module docstring)."""

    def __init__(self, cfg: CfgNode):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        check_num_classes(cfg)

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        self._train_sampler = getattr(data_loader, "seg_zoo_sampler", None)

        model = create_ddp(model)
        use_amp = amp_enabled(cfg)
        if cfg.SOLVER.AMP.ENABLED and not use_amp:
            logger.info(
                "SOLVER.AMP.ENABLED is set but MODEL.DEVICE is %r: AMP is off (it needs CUDA); "
                "training in fp32",
                cfg.MODEL.DEVICE,
            )
        self._trainer = (AMPTrainer if use_amp else SimpleTrainer)(model, data_loader, optimizer)

        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = Checkpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.ema = ModelEMA(model, cfg.MODEL_EMA.DECAY) if cfg.MODEL_EMA.ENABLED else None
        if self.ema is not None:
            self.checkpointer.add_checkpointable("ema_state", self.ema)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        # seg_zoo's WarmupLinearDecayLR; deeplab's WarmupPolyLR; then detectron2's names.
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg):
        from ..data.dataset_mappers import build_dataset_mapper

        mapper = build_dataset_mapper(cfg, is_train=True)
        dicts = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=0,
            proposal_files=None,
        )
        seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
        sampler = ResumableTrainingSampler(
            len(dicts), seed=seed, rank=comm.get_rank(), world_size=comm.get_world_size()
        )
        loader = build_detection_train_loader(
            SeededMapDataset(dicts, mapper, seed),
            mapper=None,
            sampler=sampler,
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
            # The DataLoader's own generator: without one, creating its iterator (at the
            # first step, or the first step after a resume) draws from the global torch RNG
            # that the model's point sampling uses.
            seed=seed,
        )
        loader.seg_zoo_sampler = sampler  # resume_or_load moves its start
        return loader

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """detectron2's test loader; video datasets (``evaluator_type`` "davis") are read by
        the video mapper, one whole clip per item."""
        from detectron2.data import MetadataCatalog, build_detection_test_loader

        if MetadataCatalog.get(dataset_name).get("evaluator_type") == "davis":
            from ..data.dataset_mappers import VideoPanopticDatasetMapper

            mapper = VideoPanopticDatasetMapper(cfg, is_train=False)
            return build_detection_test_loader(cfg, dataset_name, mapper=mapper)
        return super().build_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    def build_hooks(self):
        hooks = super().build_hooks()
        if self.ema is not None:
            # First, so that the checkpointer and the evaluation see this step's average.
            hooks.insert(0, EMAHook(self.ema, self.model))
            if evaluates_with_ema(self.cfg):
                for hook in hooks:
                    if isinstance(hook, EvalHook):
                        hook._func = self._with_ema(hook._func)
        if self.cfg.SEED >= 0:
            hooks.insert(0, ReseedModelRNG(self.cfg.SEED))
        return hooks

    def _with_ema(self, func):
        def evaluate_with_ema():
            logger.info("evaluating with the EMA weights (MODEL_EMA.EVAL_WITH_EMA)")
            with self.ema.applied(self.model):
                return func()

        return evaluate_with_ema

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """mIoU with ``TEST.AUG`` (multi-scale + flip) semantic TTA; result keys get "_TTA"."""
        from collections import OrderedDict

        from ..modeling.test_time_augmentation import SemanticSegmentorWithTTA

        logger.info("evaluating with test-time augmentation (TEST.AUG)")
        tta_model = SemanticSegmentorWithTTA(cfg, model)
        # The TTA model produces sem_seg only: score it with mIoU whatever else the dataset has.
        evaluators = [
            SemSegEvaluator(
                name, distributed=True, output_dir=os.path.join(cfg.OUTPUT_DIR, "inference_TTA")
            )
            for name in cfg.DATASETS.TEST
        ]
        results = cls.test(cfg, tta_model, evaluators)
        if len(cfg.DATASETS.TEST) == 1:
            results = {cfg.DATASETS.TEST[0]: results}
        return OrderedDict((k + "_TTA", v) for k, v in results.items())

    # ---- resuming -----------------------------------------------------------------------
    def resume_or_load(self, resume: bool = True):
        super().resume_or_load(resume=resume)
        if self.ema is not None and not self.ema.loaded:
            # Initial weights (MODEL.WEIGHTS) or a checkpoint saved without EMA: the average
            # starts from what was just loaded, not from the random initialisation.
            self.ema.reset(self.model)
        if self._train_sampler is not None and self.start_iter > 0:
            position = self.start_iter * self.cfg.SOLVER.IMS_PER_BATCH
            self._train_sampler.set_start_position(position)
            logger.info(
                "resuming at iteration %d: the data stream continues at sample %d",
                self.start_iter,
                position,
            )
