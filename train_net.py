#!/usr/bin/env python
"""Train or evaluate any seg_zoo model with detectron2.

    python train_net.py --num-gpus 8 \
        --config-file configs/ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml
    python train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model.pkl
    python train_net.py --config-file configs/synthetic/maskformer2_R18_tiny_panoptic.yaml \
        --num-gpus 2 MODEL.DEVICE cpu          # 2 CPU processes (gloo)

Options are detectron2's (``--resume``, ``--num-machines``, ``--machine-rank``,
``--dist-url``, trailing ``KEY VALUE`` overrides); see ``python train_net.py --help``.
"""

from __future__ import annotations

import logging

import torch
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import seg_zoo  # noqa: F401  (registers models, datasets, mappers)
from seg_zoo.config import load_config
from seg_zoo.engine import Checkpointer, Trainer, evaluates_with_ema


def setup(args):
    """The frozen config of this run; also sets up logging and seeds (detectron2's way)."""
    cfg = load_config(args.config_file, args.opts)
    if torch.device(cfg.MODEL.DEVICE).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r} but torch sees no CUDA device; "
            "add MODEL.DEVICE cpu to the command line to run on the CPU"
        )
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="seg_zoo")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        use_ema = evaluates_with_ema(cfg)
        Checkpointer(model, save_dir=cfg.OUTPUT_DIR, use_ema=use_ema).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            if len(cfg.DATASETS.TEST) == 1:
                results = {cfg.DATASETS.TEST[0]: results}
            results.update(Trainer.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, results)
        return results

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    # The final evaluation (detectron2's EvalHook runs one after the last iteration).
    return getattr(trainer, "_last_eval_results", None)


def cli(argv: list[str] | None = None):
    args = default_argument_parser().parse_args(argv)
    logging.getLogger(__name__).info("Command line arguments: %s", args)
    return launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    cli()
