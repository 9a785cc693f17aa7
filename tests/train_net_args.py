"""Helpers of the end-to-end tests (tests/test_train_net*.py): ``train_net.py`` command lines
and the synthetic datasets' root."""

from __future__ import annotations

import contextlib
import os

import train_net


def train_net_args(config, out, *opts, eval_only=False, resume=False, num_gpus=1):
    """Parsed arguments of ``train_net.py --config-file CONFIG ... OUTPUT_DIR OUT *opts``."""
    argv = ["--config-file", config, "--num-gpus", str(num_gpus)]
    argv += ["--eval-only"] if eval_only else []
    argv += ["--resume"] if resume else []
    argv += ["OUTPUT_DIR", str(out), *map(str, opts)]
    return train_net.default_argument_parser().parse_args(argv)


@contextlib.contextmanager
def datasets_root(root: str, *registrations):
    """``$DETECTRON2_DATASETS`` (for spawned processes too) and the given dataset registrations
    pointed at ``root`` inside the block; both restored afterwards."""
    old = os.environ.get("DETECTRON2_DATASETS")
    os.environ["DETECTRON2_DATASETS"] = root
    for register in registrations:
        register(root)
    try:
        yield root
    finally:
        if old is None:
            os.environ.pop("DETECTRON2_DATASETS", None)
        else:
            os.environ["DETECTRON2_DATASETS"] = old
        for register in registrations:
            register()
