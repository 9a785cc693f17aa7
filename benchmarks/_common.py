"""Pieces shared by the benchmark scripts of this folder (mask2former, pix2seq_d, segmenter).

  * timing: :func:`time_modes` times several callables ("modes") in interleaved rounds and
    reports each one's median, so a change of load on a shared machine falls on every mode
    alike; :func:`time_call` is the one-mode case. :func:`sync` waits for CUDA around a timed
    call, and ``DTYPES`` maps the scripts' ``--dtype`` choices to autocast dtypes.
  * inputs: :func:`make_images` (a normalised tensor batch) and :func:`make_inference_input`
    (detectron2's ``batched_inputs`` of one uint8 image).
  * the Markdown tables' cells: :func:`fmt_number`, :func:`fmt_rate` (items per second from
    ms per item) and :func:`fmt_ratio` (reference / seg_zoo), each "-" where there is no value.
  * the command line: :func:`new_parser` (description and ``--device``, as every script starts),
    :func:`check_args` (CUDA present when asked for, counts in range), :func:`run_settings`
    (``--threads`` applied; warm-up and timed runs from the device's defaults and the flags),
    and :func:`describe_device` for the table's notes.

The scripts are run as ``python benchmarks/<name>.py`` and loaded by path in the tests, so
they put this folder on ``sys.path`` themselves before ``import _common``; this is a module of
helpers, not a script.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import torch

__all__ = [
    "DTYPES",
    "check_args",
    "describe_device",
    "fmt_number",
    "fmt_rate",
    "fmt_ratio",
    "make_images",
    "make_inference_input",
    "new_parser",
    "run_settings",
    "sync",
    "time_call",
    "time_modes",
]

# --dtype choice -> autocast dtype; fp32 means no autocast.
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


def sync(device: str) -> None:
    """Wait for the device's queued kernels (CUDA launches return before the work is done)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_modes(
    calls: dict[str, Callable[[], object]],
    warmup: int,
    repeats: int,
    device: str,
    dtype: str = "fp32",
) -> dict[str, tuple[float, object]]:
    """Per mode: (median ms of ``repeats`` timed calls after ``warmup`` calls, last output).

    The timed calls are interleaved, one of each mode per round, so that a change of load on a
    shared machine during the run falls on every mode alike rather than on whichever ran then.
    Every call runs under ``torch.inference_mode()`` and, for dtype "bf16"/"fp16", under
    ``torch.autocast`` of the device's type.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {sorted(DTYPES)}")
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    amp_dtype = DTYPES[dtype]

    def call(fn: Callable[[], object]) -> object:
        with (
            torch.inference_mode(),
            torch.autocast(
                device_type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None
            ),
        ):
            return fn()

    outputs: dict[str, object] = {}
    for mode, fn in calls.items():
        for _ in range(warmup):
            outputs[mode] = call(fn)
    times: dict[str, list[float]] = {mode: [] for mode in calls}
    for _ in range(repeats):
        for mode, fn in calls.items():
            outputs[mode] = None  # free the previous output before the next call
            sync(device)
            start = time.perf_counter()
            outputs[mode] = call(fn)
            sync(device)
            times[mode].append((time.perf_counter() - start) * 1e3)
    return {mode: (statistics.median(times[mode]), outputs[mode]) for mode in calls}


def time_call(
    fn: Callable[[], object], warmup: int, repeats: int, device: str, dtype: str = "fp32"
) -> tuple[float, object]:
    """(median ms of ``repeats`` timed calls after ``warmup`` calls, the last call's output)."""
    return time_modes({"call": fn}, warmup, repeats, device, dtype)["call"]


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def make_images(batch_size: int, size: int, device: str = "cpu", seed: int = 0) -> torch.Tensor:
    """A batch (N, 3, size, size) of normalised images (standard normal values)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, 3, size, size, generator=g).to(device)


def make_inference_input(size: int, seed: int = 0) -> list[dict]:
    """One random uint8 (3, size, size) image as detectron2's batched_inputs."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)
    return [{"image": image, "height": size, "width": size}]


# ---------------------------------------------------------------------------------------------
# Table cells
# ---------------------------------------------------------------------------------------------


def fmt_number(value: float | None, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals, "-" for None."""
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_rate(ms_per_item: float | None, digits: int = 2) -> str:
    """Items per second from ms per item; "-" for None or 0 (nothing was timed)."""
    return "-" if not ms_per_item else f"{1e3 / ms_per_item:.{digits}f}"


def fmt_ratio(ref: float | None, ours: float | None) -> str:
    """``ref / ours`` as "1.23x"; "-" when either is missing or ``ours`` is not positive."""
    if ref is None or ours is None or ours <= 0:
        return "-"
    return f"{ref / ours:.2f}x"


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def new_parser(doc: str) -> argparse.ArgumentParser:
    """A parser described by the first line of the script's ``doc``, with ``--device``.

    The whole docstring is not the description: ``--help`` stays short, and the raw formatter
    keeps the usage lines of a script's docstring readable where it prints them.
    """
    parser = argparse.ArgumentParser(
        description=doc.split("\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    return parser


def check_args(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    positive: Sequence[str] = (),
    non_negative: Sequence[str] = (),
) -> None:
    """``parser.error`` (exit 2, naming the flag) on a CUDA request without CUDA, or on a count
    out of range: the ``positive`` attributes must be >= 1, the ``non_negative`` ones >= 0
    (``None``, i.e. not given, passes)."""
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    for keys, minimum in ((positive, 1), (non_negative, 0)):
        for key in keys:
            value = getattr(args, key)
            if value is not None and value < minimum:
                parser.error(f"--{key.replace('_', '-')} must be >= {minimum}, got {value}")


def run_settings(
    args: argparse.Namespace,
    quick: dict[str, tuple[int, int]],
    full: dict[str, tuple[int, int]],
) -> tuple[int, int]:
    """Apply ``--threads`` and return (warm-up runs, timed runs).

    ``quick`` / ``full`` give the defaults per device ("cpu", "cuda") with and without
    ``--quick``; ``--warmup`` (0 allowed) and ``--repeats`` override them.
    """
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    warmup, repeats = (quick if args.quick else full)[args.device]
    if args.warmup is not None:
        warmup = args.warmup
    return warmup, args.repeats or repeats


def describe_device(device: str) -> str:
    """The GPU's name, or "CPU, <n> threads", for a table's notes."""
    if device == "cpu":
        return f"CPU, {torch.get_num_threads()} threads"
    return torch.cuda.get_device_name()
