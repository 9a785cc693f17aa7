"""End to end on the synthetic dataset, on CPU: train_net.py, evaluators, resume, DDP, demo.

These are the slowest tests of the suite (a few minutes together on 2 cores): one panoptic
training long enough to learn, and short runs for everything else.
"""

from __future__ import annotations

import glob
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.engine import HookBase, launch
from train_net_args import datasets_root, train_net_args

import train_net
from seg_zoo.data.datasets.synthetic import generate_synthetic_dataset, register_all_synthetic
from seg_zoo.engine import Trainer

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
PANOPTIC = os.path.join(CONFIGS, "synthetic", "maskformer2_R18_tiny_panoptic.yaml")
SEMANTIC = os.path.join(CONFIGS, "synthetic", "maskformer2_R18_tiny_semantic.yaml")
INSTANCE = os.path.join(CONFIGS, "synthetic", "maskformer2_R18_tiny_instance.yaml")

# Iterations of the one training that has to learn; see test_panoptic_training_learns.
LEARN_ITERS = 200

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("datasets"))
    generate_synthetic_dataset(root)
    with datasets_root(root, register_all_synthetic):
        yield root


@pytest.fixture(scope="module")
def trained_panoptic(data_root, tmp_path_factory):
    """Train the tiny panoptic model once; its evaluation scores PQ, mask AP and mIoU."""
    out = tmp_path_factory.mktemp("panoptic")
    results = train_net.main(train_net_args(PANOPTIC, out, "SOLVER.MAX_ITER", LEARN_ITERS))
    return out, results


def test_panoptic_training_learns(trained_panoptic):
    """PQ, mask AP and mIoU from detectron2's evaluators are far above chance.

    Chance: a model that has not learned predicts nothing matching (PQ 0, AP 0) and,
    guessing one of 7 classes per pixel, about 14 mIoU. Measured after these 200 iterations:
    PQ 76.9, mask AP 38.3, mIoU 98.0; the bounds leave room for other CPUs' arithmetic.
    """
    _, results = trained_panoptic
    assert results["panoptic_seg"]["PQ"] > 40.0
    assert results["segm"]["AP"] > 15.0
    assert results["sem_seg"]["mIoU"] > 70.0


def test_eval_only_reproduces_the_final_evaluation(trained_panoptic):
    out, results = trained_panoptic
    weights = os.path.join(out, "model_final.pth")
    again = train_net.main(
        train_net_args(
            PANOPTIC, os.path.join(out, "eval"), "MODEL.WEIGHTS", weights, eval_only=True
        )
    )
    for task in ("panoptic_seg", "segm", "sem_seg"):
        for key, value in results[task].items():
            assert again[task][key] == pytest.approx(value, abs=1e-6, nan_ok=True), (task, key)

    # TEST.AUG with the test resize as its only view and no flip is the plain evaluation.
    tta = train_net.main(
        train_net_args(
            PANOPTIC, os.path.join(out, "tta"), "MODEL.WEIGHTS", weights,
            "TEST.AUG.ENABLED", True, "TEST.AUG.MIN_SIZES", "(128,)",
            "TEST.AUG.MAX_SIZE", 256, "TEST.AUG.FLIP", False, eval_only=True,
        )
    )  # fmt: skip
    name = "synthetic_panoptic_val_with_sem_seg"
    assert tta[name + "_TTA"]["sem_seg"]["mIoU"] == pytest.approx(results["sem_seg"]["mIoU"])
    assert tta[name]["panoptic_seg"]["PQ"] == pytest.approx(results["panoptic_seg"]["PQ"])


def test_predictor_and_demo_write_overlays(trained_panoptic, data_root, tmp_path):
    import demo.demo as demo

    out, _ = trained_panoptic
    images = sorted(glob.glob(os.path.join(data_root, "seg_zoo_synthetic", "images", "val", "*")))
    written = demo.main(
        [
            "--config-file", PANOPTIC,
            "--input", images[0], images[1],
            "--output", str(tmp_path),
            "--opts", "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"),
        ]
    )  # fmt: skip
    assert len(written) == 6  # 2 images x (panoptic, instance, semantic)
    for path in written:
        overlay = cv2.imread(path)
        source = cv2.imread(images[written.index(path) // 3])
        assert overlay is not None and overlay.shape == source.shape
        assert np.abs(overlay.astype(int) - source.astype(int)).mean() > 1.0  # something drawn


class _RecordLosses(HookBase):
    def __init__(self):
        self.losses: dict[int, float] = {}

    def after_step(self):
        self.losses[self.trainer.iter] = self.trainer.storage.history("total_loss").latest()


def _train_recording(config, out, resume=False, *opts):
    cfg = train_net.setup(train_net_args(config, out, *opts))
    trainer = Trainer(cfg)
    recorder = _RecordLosses()
    trainer.register_hooks([recorder])
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return recorder.losses


def test_resume_continues_exactly(data_root, tmp_path):
    """Stopping after a checkpoint and resuming gives the uninterrupted run's losses."""
    opts = ["SOLVER.MAX_ITER", 6, "SOLVER.CHECKPOINT_PERIOD", 3, "SOLVER.IMS_PER_BATCH", 4]
    opts += ["DATASETS.TEST", "()"]
    full = _train_recording(SEMANTIC, tmp_path / "full", False, *opts)

    # The same run, "interrupted" after its iteration-2 checkpoint.
    part = tmp_path / "part"
    _train_recording(SEMANTIC, part, False, *opts)
    os.remove(part / "model_final.pth")
    with open(part / "last_checkpoint", "w") as f:
        f.write("model_0000002.pth")  # detectron2 names it by the 0-based iteration
    resumed = _train_recording(SEMANTIC, part, True, *opts)

    assert sorted(resumed) == [3, 4, 5]
    for it in (3, 4, 5):
        assert resumed[it] == full[it], (it, resumed[it], full[it])
    assert len(set(full.values())) == 6  # the losses do change from step to step


def _ddp_worker(config, out, opts):
    args = train_net_args(config, out, *opts, num_gpus=2)
    cfg = train_net.setup(args)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    rank = torch.distributed.get_rank()
    torch.save(model.state_dict(), os.path.join(out, f"rank{rank}.pth"))


def test_two_cpu_processes_with_gloo_stay_in_sync(data_root, tmp_path):
    opts = ["SOLVER.MAX_ITER", 3, "SOLVER.IMS_PER_BATCH", 4, "DATASETS.TEST", "()"]
    launch(_ddp_worker, 2, dist_url="auto", args=(INSTANCE, str(tmp_path), opts))
    a = torch.load(tmp_path / "rank0.pth", weights_only=True)
    b = torch.load(tmp_path / "rank1.pth", weights_only=True)
    init = Trainer.build_model(train_net.setup(train_net_args(INSTANCE, tmp_path / "x", *opts)))
    moved = 0
    for key, value in a.items():
        torch.testing.assert_close(value, b[key], rtol=0, atol=0, msg=key)
        moved += int(not torch.equal(value, init.state_dict()[key]))
    assert moved > 0  # training did update the parameters


@pytest.mark.parametrize(
    "config, metric",
    [(SEMANTIC, ("sem_seg", "mIoU")), (INSTANCE, ("segm", "AP"))],
    ids=["semantic", "instance"],
)
def test_short_training_runs_and_evaluates(data_root, tmp_path, config, metric):
    results = train_net.main(train_net_args(config, tmp_path, "SOLVER.MAX_ITER", 8))
    task, key = metric
    assert np.isfinite(results[task][key])


def test_amp_is_switched_off_on_cpu(data_root, tmp_path, caplog):
    import logging

    cfg = train_net.setup(train_net_args(SEMANTIC, tmp_path, "SOLVER.MAX_ITER", 1))
    assert cfg.SOLVER.AMP.ENABLED
    with caplog.at_level(logging.INFO, logger="seg_zoo.engine.trainer"):
        trainer = Trainer(cfg)
    assert type(trainer._trainer).__name__ == "SimpleTrainer"
    assert "AMP is off" in caplog.text


def test_class_count_mismatch_is_reported_before_training(data_root, tmp_path):
    with pytest.raises(ValueError, match="MODEL.SEM_SEG_HEAD.NUM_CLASSES 7"):
        Trainer(
            train_net.setup(train_net_args(SEMANTIC, tmp_path, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 5))
        )


def test_demo_on_a_video(trained_panoptic, data_root, tmp_path):
    import demo.demo as demo

    out, _ = trained_panoptic
    images = sorted(glob.glob(os.path.join(data_root, "seg_zoo_synthetic", "images", "val", "*")))
    video = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 5, (128, 96))
    for path in images[:3]:
        writer.write(cv2.resize(cv2.imread(path), (128, 96)))
    writer.release()
    (written,) = demo.main(
        [
            "--config-file", PANOPTIC,
            "--video-input", video,
            "--output", str(tmp_path / "out"),
            "--opts", "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"),
        ]
    )  # fmt: skip
    assert written.endswith("clip_panoptic.mp4")
    capture = cv2.VideoCapture(written)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 3 and frames[0].shape == (96, 128, 3)


def test_demo_reports_bad_inputs(data_root, tmp_path):
    import demo.demo as demo

    with pytest.raises(FileNotFoundError, match="no such file"):
        demo.main(["--config-file", PANOPTIC, "--input", str(tmp_path / "nope*.jpg"),
                   "--output", str(tmp_path)])  # fmt: skip
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(OSError, match="broken.mp4"):
        demo.main(["--config-file", PANOPTIC, "--video-input", str(broken),
                   "--output", str(tmp_path)])  # fmt: skip
