"""``train_net.py`` command lines for the end-to-end tests (tests/test_train_net*.py)."""

from __future__ import annotations

import train_net


def train_net_args(config, out, *opts, eval_only=False, resume=False, num_gpus=1):
    """Parsed arguments of ``train_net.py --config-file CONFIG ... OUTPUT_DIR OUT *opts``."""
    argv = ["--config-file", config, "--num-gpus", str(num_gpus)]
    argv += ["--eval-only"] if eval_only else []
    argv += ["--resume"] if resume else []
    argv += ["OUTPUT_DIR", str(out), *map(str, opts)]
    return train_net.default_argument_parser().parse_args(argv)
