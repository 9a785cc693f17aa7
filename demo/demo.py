#!/usr/bin/env python
"""Run a seg_zoo model on images, a folder or a video and write detectron2 overlays.

    python demo/demo.py --config-file CONFIG --input img1.jpg img2.png --output out/ \
        --opts MODEL.WEIGHTS model.pkl
    python demo/demo.py --config-file CONFIG --input images/ --output out/ --opts ...
    python demo/demo.py --config-file CONFIG --video-input clip.mp4 --output out/ --opts ...

Images: one overlay per output the model produces (``<name>_panoptic.png``,
``<name>_instance.png``, ``<name>_semantic.png``), or only ``--task``'s. Video: one overlaid
video ``<name>_<task>.mp4`` (``--task auto`` picks panoptic, else instance, else semantic).
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
import time

import cv2
import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import ColorMode, Visualizer

import seg_zoo  # noqa: F401  (registers models and datasets)
from seg_zoo.config import load_config
from seg_zoo.engine import Checkpointer, evaluates_with_ema

TASKS = ("panoptic", "instance", "semantic")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
logger = logging.getLogger("seg_zoo.demo")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--input", nargs="+", help="image files, folders of images, or glob patterns"
    )
    parser.add_argument("--video-input", help="a video file")
    parser.add_argument("--output", required=True, help="folder for the overlays")
    parser.add_argument("--task", choices=("auto",) + TASKS, default="auto")
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.5,
        help="instances scoring below this are not drawn",
    )
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE pairs")
    return parser


def setup_cfg(args):
    cfg = load_config(args.config_file, args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.info("MODEL.DEVICE is %s but CUDA is unavailable: running on CPU", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def build_predictor(cfg) -> DefaultPredictor:
    """detectron2's ``DefaultPredictor``, with the weights read by seg_zoo's checkpointer.

    ``DefaultPredictor`` would unpickle a ``.pkl`` with the plain pickle module; seg_zoo's
    ``Checkpointer`` reads it through the restricted unpickler (and resolves ``seg_zoo://``).
    """
    unloaded = cfg.clone()
    unloaded.defrost()
    unloaded.MODEL.WEIGHTS = ""
    unloaded.freeze()
    predictor = DefaultPredictor(unloaded)
    if cfg.MODEL.WEIGHTS:
        use_ema = evaluates_with_ema(cfg)
        Checkpointer(predictor.model, use_ema=use_ema).load(cfg.MODEL.WEIGHTS)
    predictor.cfg = cfg
    return predictor


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files, folder contents (images only, sorted) and glob matches, in the order given."""
    paths: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(item, f)
                for f in os.listdir(item)
                if f.lower().endswith(IMAGE_EXTENSIONS)
            )
            if not found:
                raise FileNotFoundError(f"--input folder {item!r} holds no image files")
            paths += found
        elif os.path.isfile(item):
            paths.append(item)
        else:
            matches = sorted(glob.glob(os.path.expanduser(item)))
            if not matches:
                raise FileNotFoundError(f"--input {item!r}: no such file, folder or glob match")
            paths += matches
    return paths


def draw(rgb: np.ndarray, predictions: dict, task: str, metadata, threshold: float) -> np.ndarray:
    """The ``task`` overlay of ``predictions`` on an RGB image, as an RGB array."""
    vis = Visualizer(rgb, metadata, instance_mode=ColorMode.IMAGE)
    if task == "panoptic":
        panoptic_seg, segments_info = predictions["panoptic_seg"]
        out = vis.draw_panoptic_seg(panoptic_seg.to("cpu"), segments_info)
    elif task == "instance":
        instances = predictions["instances"].to("cpu")
        out = vis.draw_instance_predictions(instances[instances.scores >= threshold])
    else:
        out = vis.draw_sem_seg(predictions["sem_seg"].argmax(dim=0).to("cpu"))
    return out.get_image()


def available_tasks(predictions: dict) -> list[str]:
    keys = {"panoptic": "panoptic_seg", "instance": "instances", "semantic": "sem_seg"}
    return [t for t in TASKS if keys[t] in predictions]


def run_images(predictor, paths, args, metadata) -> list[str]:
    written = []
    for path in paths:
        image = read_image(path, format="BGR")  # DefaultPredictor takes BGR
        start = time.perf_counter()
        predictions = predictor(image)
        tasks = available_tasks(predictions)
        if args.task != "auto":
            if args.task not in tasks:
                raise ValueError(
                    f"--task {args.task}: the model produced only {tasks} for {path} "
                    "(see MODEL.MASK_FORMER.TEST.*_ON)"
                )
            tasks = [args.task]
        stem = os.path.splitext(os.path.basename(path))[0]
        for task in tasks:
            overlay = draw(
                image[:, :, ::-1], predictions, task, metadata, args.confidence_threshold
            )
            out_path = os.path.join(args.output, f"{stem}_{task}.png")
            cv2.imwrite(out_path, overlay[:, :, ::-1])
            written.append(out_path)
        logger.info("%s: %s in %.2fs", path, ", ".join(tasks), time.perf_counter() - start)
    return written


def run_video(predictor, video_path, args, metadata) -> list[str]:
    capture = cv2.VideoCapture(video_path)
    if not capture.isOpened():
        raise OSError(f"--video-input {video_path!r}: cannot open it as a video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    writer = None
    task = args.task
    stem = os.path.splitext(os.path.basename(video_path))[0]
    out_path = None
    frames = 0
    try:
        while True:
            ok, frame = capture.read()  # BGR
            if not ok:
                break
            predictions = predictor(frame)
            if task == "auto":
                task = available_tasks(predictions)[0]
            overlay = draw(
                frame[:, :, ::-1], predictions, task, metadata, args.confidence_threshold
            )
            if writer is None:
                out_path = os.path.join(args.output, f"{stem}_{task}.mp4")
                height, width = overlay.shape[:2]
                fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                writer = cv2.VideoWriter(out_path, fourcc, fps, (width, height))
            writer.write(np.ascontiguousarray(overlay[:, :, ::-1]))
            frames += 1
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if frames == 0:
        raise OSError(f"--video-input {video_path!r}: no frame could be decoded")
    logger.info("%s: %d frames -> %s", video_path, frames, out_path)
    return [out_path]


def main(argv: list[str] | None = None) -> list[str]:
    args = get_parser().parse_args(argv)
    setup_logger(name="seg_zoo")
    setup_logger(name="detectron2")
    if bool(args.input) == bool(args.video_input):
        raise SystemExit("give exactly one of --input and --video-input")
    cfg = setup_cfg(args)
    os.makedirs(args.output, exist_ok=True)
    predictor = build_predictor(cfg)
    name = cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__unused"
    metadata = MetadataCatalog.get(name)
    if args.video_input:
        return run_video(predictor, args.video_input, args, metadata)
    return run_images(predictor, expand_inputs(args.input), args, metadata)


if __name__ == "__main__":
    for path in main():
        print(path)
    sys.exit(0)
