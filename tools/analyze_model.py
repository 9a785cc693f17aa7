#!/usr/bin/env python
"""Count a seg_zoo model's FLOPs, parameters and activations, or print its structure.

FLOPs follow Mask2Former's published counting (fvcore, one multiply-add = one FLOP, through
detectron2's model I/O); see :mod:`seg_zoo.utils.flops` for the few ops whose rules had to be
set to match it. No dataset is read: inputs are synthetic images of a fixed size, so the tool runs
on a machine without ADE20K/COCO.

Examples::

    python tools/analyze_model.py --tasks flop --use-fixed-input-size \\
        --config-file configs/ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml
    python tools/analyze_model.py --tasks flop --backbone-only --input-size 224 224 \\
        --config-file configs/ade20k/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_160k.yaml
    python tools/analyze_model.py --tasks parameter activation --input-size 512 683 \\
        --config-file ... MODEL.MASK_FORMER.DEC_LAYERS 7
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.export import TracingAdapter
from detectron2.modeling import build_backbone, build_model
from detectron2.utils.analysis import _IGNORED_OPS as D2_IGNORED_OPS
from detectron2.utils.analysis import FlopCountAnalysis
from detectron2.utils.logger import setup_logger
from fvcore.nn import ActivationCountAnalysis, flop_count_table, parameter_count_table
from fvcore.nn import FlopCountAnalysis as FvcoreFlopCountAnalysis

import seg_zoo  # noqa: F401  (registers seg_zoo's models and ops)
from seg_zoo.config import load_config
from seg_zoo.utils.flops import MASK2FORMER_HANDLES

logger = logging.getLogger("seg_zoo.analyze_model")

TASKS = ("flop", "parameter", "activation", "structure")


def fixed_input_size(cfg) -> tuple[int, int]:
    """The training crop size, as the official tool's ``--use-fixed-input-size`` uses it.

    Mask2Former's tool replaces each image with a ``CROP.SIZE[0]`` square; configs trained with
    large-scale jitter (COCO) have no crop and use ``INPUT.IMAGE_SIZE`` instead.
    """
    if cfg.INPUT.CROP.ENABLED:
        if cfg.INPUT.CROP.TYPE not in ("absolute", "absolute_range"):
            raise ValueError(
                f"INPUT.CROP.TYPE={cfg.INPUT.CROP.TYPE!r} is relative to the image; pass "
                "--input-size H W instead of --use-fixed-input-size"
            )
        size = int(cfg.INPUT.CROP.SIZE[0])
        return size, size
    # INPUT.IMAGE_SIZE is declared (with a default) for every config; it is only the training
    # size when a large-scale-jitter mapper reads it.
    if "lsj" in cfg.INPUT.DATASET_MAPPER_NAME:
        size = int(cfg.INPUT.IMAGE_SIZE)
        return size, size
    raise ValueError(
        "--use-fixed-input-size needs INPUT.CROP.ENABLED with INPUT.CROP.SIZE, or an LSJ "
        f"INPUT.DATASET_MAPPER_NAME with INPUT.IMAGE_SIZE (got {cfg.INPUT.DATASET_MAPPER_NAME!r}); "
        "pass --input-size H W instead"
    )


def setup_cfg(config_file: str, opts: list[str] | tuple = ()):
    """The config to analyze: ``config_file`` plus ``opts``, on the CPU, without weights.

    Counts do not depend on the weights, and the tool must run where there is no GPU.
    """
    cfg = load_config(config_file, opts)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    ensure_metadata(cfg)
    return cfg


def ensure_metadata(cfg) -> None:
    """Give an unregistered training dataset the metadata the model reads at inference.

    Only panoptic inference reads metadata (``thing_dataset_id_to_contiguous_id``); counting
    FLOPs should not need the dataset, so an unknown dataset gets every class as a thing.
    """
    name = cfg.DATASETS.TRAIN[0] if len(cfg.DATASETS.TRAIN) else "__analyze_model__"
    if not len(cfg.DATASETS.TRAIN):
        cfg.DATASETS.TRAIN = (name,)
    metadata = MetadataCatalog.get(name)
    if name in DatasetCatalog.list() or hasattr(metadata, "thing_dataset_id_to_contiguous_id"):
        return
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    metadata.set(thing_dataset_id_to_contiguous_id={i: i for i in range(num_classes)})


def build_inputs(
    num_images: int,
    height: int,
    width: int,
    output_size: tuple[int, int] | None = None,
    seed: int = 0,
) -> list[list[dict]]:
    """``num_images`` batches of one random (3, height, width) 0-255 image in detectron2's format.

    ``output_size`` is the "height"/"width" the model resizes its prediction to (the original
    image size in a real data loader); by default the input size, i.e. no resize.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"input size must be positive, got {height}x{width}")
    out_h, out_w = output_size if output_size is not None else (height, width)
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(num_images):
        image = torch.rand((3, height, width), generator=generator) * 255.0
        batches.append([{"image": image, "height": out_h, "width": out_w}])
    return batches


def flop_analysis(model: torch.nn.Module, inputs) -> FvcoreFlopCountAnalysis:
    """An fvcore FLOP analysis with Mask2Former's counting rules.

    ``inputs`` is a detectron2 batch (``list[dict]``) for a full model, or an image tensor for a
    backbone alone.
    """
    if isinstance(inputs, torch.Tensor):
        # Skip the same ops detectron2's wrapper skips. Ops that fvcore has a handle for stay
        # counted even when listed (aten::batch_norm: fvcore looks up handles first), in the
        # official run as here.
        analysis = FvcoreFlopCountAnalysis(model, (inputs,))
        analysis.set_op_handle(**{k: None for k in D2_IGNORED_OPS})
    else:
        analysis = FlopCountAnalysis(model, inputs)
    analysis.set_op_handle(**MASK2FORMER_HANDLES)
    return analysis


def build(cfg, backbone_only: bool) -> torch.nn.Module:
    ensure_metadata(cfg)
    model = build_backbone(cfg) if backbone_only else build_model(cfg)
    return model.eval()


def do_flop(cfg, args) -> float:
    """Log the FLOP table and per-operator averages; return the mean GFLOPs per image."""
    model = build(cfg, args.backbone_only)
    height, width = args.input_size
    counts: Counter = Counter()
    totals = []
    analysis = None
    with torch.no_grad():
        for idx, batch in enumerate(build_inputs(args.num_inputs, height, width, args.output_size)):
            inputs = batch[0]["image"][None] if args.backbone_only else batch
            analysis = flop_analysis(model, inputs)
            if idx > 0:
                analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            counts += analysis.by_operator()
            totals.append(analysis.total())
    n = len(totals)
    logger.info("FLOP table from the first input:\n" + flop_count_table(analysis, max_depth=4))
    logger.info(
        "Average GFLOPs per operator: " + str({k: round(v / n / 1e9, 4) for k, v in counts.items()})
    )
    mean = float(np.mean(totals)) / 1e9
    logger.info(f"Total GFLOPs ({height}x{width}): {mean:.1f}±{np.std(totals) / 1e9:.1f}")
    return mean


def do_activation(cfg, args) -> float:
    """Log the activation counts; return the mean millions of activations per image."""
    model = build(cfg, args.backbone_only)
    height, width = args.input_size
    totals = []
    with torch.no_grad():
        for batch in build_inputs(args.num_inputs, height, width, args.output_size):
            if args.backbone_only:
                analysis = ActivationCountAnalysis(model, (batch[0]["image"][None],))
            else:
                # detectron2 has no activation counterpart of its FlopCountAnalysis; the same
                # adapter flattens list[dict] inputs and outputs into tensors for the tracer.
                wrapper = TracingAdapter(model, batch, allow_non_tensor=True)
                analysis = ActivationCountAnalysis(wrapper, wrapper.flattened_inputs)
            # fvcore counts activations of conv/linear/addmm outputs only, as the official run
            # did (its attention matmuls were not counted either); silence the rest.
            analysis.set_op_handle(**{k: None for k in MASK2FORMER_HANDLES})
            totals.append(analysis.total())
    mean = float(np.mean(totals)) / 1e6
    logger.info(f"Total activations (M): {mean:.1f}±{np.std(totals) / 1e6:.1f}")
    return mean


def do_parameter(cfg, args) -> str:
    table = parameter_count_table(build(cfg, args.backbone_only), max_depth=5)
    logger.info("Parameter count:\n" + table)
    return table


def do_structure(cfg, args) -> str:
    text = str(build(cfg, args.backbone_only))
    logger.info("Model structure:\n" + text)
    return text


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="FLOPs, parameters, activations or structure of a seg_zoo model."
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--tasks", choices=TASKS, required=True, nargs="+")
    parser.add_argument(
        "-n", "--num-inputs", type=int, default=1, help="number of random inputs to average over"
    )
    parser.add_argument(
        "--use-fixed-input-size",
        action="store_true",
        help="use the training crop size (INPUT.CROP.SIZE, else INPUT.IMAGE_SIZE), square",
    )
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"))
    parser.add_argument(
        "--output-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help='"height"/"width" the prediction is resized to (default: the input size)',
    )
    parser.add_argument(
        "--backbone-only", action="store_true", help="analyze MODEL.BACKBONE alone on a tensor"
    )
    parser.add_argument("opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    return parser


def resolve_input_size(cfg, args) -> tuple[int, int]:
    if args.use_fixed_input_size and args.input_size is not None:
        raise ValueError("give either --use-fixed-input-size or --input-size, not both")
    if args.use_fixed_input_size:
        return fixed_input_size(cfg)
    if args.input_size is not None:
        return tuple(args.input_size)
    size = int(min(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST))
    logger.info(f"No input size given; using INPUT.MIN_SIZE_TEST squared: {size}x{size}")
    return size, size


def main(argv: list[str] | None = None) -> dict:
    args = get_parser().parse_args(argv)
    if args.num_inputs < 1:
        raise ValueError(f"-n/--num-inputs must be at least 1, got {args.num_inputs}")
    setup_logger(name="seg_zoo")
    cfg = setup_cfg(args.config_file, args.opts)
    args.input_size = resolve_input_size(cfg, args)
    cfg.freeze()
    tasks = {"flop": do_flop, "parameter": do_parameter}
    tasks.update({"activation": do_activation, "structure": do_structure})
    return {task: tasks[task](cfg, args) for task in args.tasks}


if __name__ == "__main__":
    main()
