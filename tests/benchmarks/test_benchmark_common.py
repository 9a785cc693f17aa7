"""benchmarks/_common.py: interleaved timing, table cells and argument checks of the scripts."""

import argparse
import importlib

import pytest
import torch
from _benchmark_loader import load_benchmark

SCRIPTS = {name: load_benchmark(name) for name in ("mask2former", "pix2seq_d", "segmenter")}
# Each script puts its own folder on sys.path and imports the helpers as ``_common``.
common = importlib.import_module("_common")


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_scripts_use_the_shared_helpers(script):
    module = SCRIPTS[script]
    shared = [name for name in common.__all__ if hasattr(module, name)]
    assert "time_modes" in shared or "time_call" in shared
    for name in shared:
        assert getattr(module, name) is getattr(common, name), name


def test_time_modes_interleaves_the_timed_runs():
    order = []
    results = common.time_modes(
        {"a": lambda: order.append("a") or 1, "b": lambda: order.append("b") or 2},
        warmup=1,
        repeats=2,
        device="cpu",
    )
    # Warm-up per mode first, then one timed run of each mode per round.
    assert order == ["a", "b", "a", "b", "a", "b"]
    assert results["a"][1] == 1 and results["b"][1] == 2
    assert results["a"][0] >= 0 and results["b"][0] >= 0
    with pytest.raises(ValueError, match="dtype 'int8'"):
        common.time_modes({"a": lambda: 0}, 0, 1, "cpu", "int8")
    with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
        common.time_modes({"a": lambda: 0}, 0, 0, "cpu")


@pytest.mark.parametrize("dtype, autocast", [("fp32", None), ("bf16", torch.bfloat16)])
def test_calls_run_in_inference_mode_under_the_requested_autocast(dtype, autocast):
    def state():
        enabled = torch.is_autocast_enabled("cpu")
        return torch.is_inference_mode_enabled(), torch.get_autocast_dtype(
            "cpu"
        ) if enabled else None

    ms, seen = common.time_call(state, warmup=0, repeats=3, device="cpu", dtype=dtype)
    assert ms >= 0 and seen == (True, autocast)


def test_table_cells():
    assert (common.fmt_number(1.234), common.fmt_number(12.345, 1)) == ("1.23", "12.3")
    assert common.fmt_number(None) == "-"
    # 4 ms per image is 250 images per second.
    assert (common.fmt_rate(4.0), common.fmt_rate(4.0, 1)) == ("250.00", "250.0")
    assert common.fmt_rate(None) == common.fmt_rate(0.0) == "-"
    assert common.fmt_ratio(3.0, 2.0) == "1.50x"
    assert common.fmt_ratio(None, 2.0) == common.fmt_ratio(3.0, None) == "-"
    assert common.fmt_ratio(3.0, 0.0) == "-"  # nothing timed: no division by zero


def test_inputs_are_seeded():
    images = common.make_images(2, 16, seed=4)
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.float32
    assert torch.equal(images, common.make_images(2, 16, seed=4))
    assert not torch.equal(images, common.make_images(2, 16, seed=5))
    (item,) = common.make_inference_input(24, seed=1)
    assert item["image"].shape == (3, 24, 24) and item["image"].dtype == torch.uint8
    assert (item["height"], item["width"]) == (24, 24)
    assert torch.equal(item["image"], common.make_inference_input(24, seed=1)[0]["image"])


def _parser():
    parser = common.new_parser("First line.\n\nMore text that --help leaves out.")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    return parser


def test_new_parser_has_the_first_doc_line_and_device():
    parser = _parser()
    assert parser.description == "First line."
    assert isinstance(parser, argparse.ArgumentParser)
    assert parser.parse_args([]).device == "cpu"
    with pytest.raises(SystemExit):
        parser.parse_args(["--device", "tpu"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--repeats", "0"], "--repeats must be >= 1, got 0"),
        (["--warmup", "-1"], "--warmup must be >= 0, got -1"),
    ],
)
def test_check_args_names_the_flag(argv, message, capsys):
    parser = _parser()
    args = parser.parse_args(argv)
    with pytest.raises(SystemExit) as exit_info:
        common.check_args(parser, args, positive=("repeats",), non_negative=("warmup",))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_check_args_passes_unset_and_in_range_values():
    parser = _parser()
    for argv in ([], ["--repeats", "1", "--warmup", "0"]):
        common.check_args(parser, parser.parse_args(argv), ("repeats",), ("warmup",))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_check_args_refuses_cuda_without_a_gpu(capsys):
    parser = _parser()
    with pytest.raises(SystemExit):
        common.check_args(parser, parser.parse_args(["--device", "cuda"]))
    assert "--device cuda: torch sees no CUDA device" in capsys.readouterr().err


def test_run_settings_defaults_flags_and_threads():
    import argparse

    quick = {"cpu": (1, 1), "cuda": (3, 5)}
    full = {"cpu": (1, 3), "cuda": (5, 20)}

    def ns(**kw):
        base = dict(device="cpu", quick=False, warmup=None, repeats=None, threads=None)
        return argparse.Namespace(**{**base, **kw})

    assert common.run_settings(ns(), quick, full) == (1, 3)
    assert common.run_settings(ns(quick=True), quick, full) == (1, 1)
    assert common.run_settings(ns(device="cuda"), quick, full) == (5, 20)
    assert common.run_settings(ns(device="cuda", quick=True), quick, full) == (3, 5)
    # the flags win; --warmup 0 is a value, not "unset"
    assert common.run_settings(ns(warmup=0, repeats=7), quick, full) == (0, 7)
    before = torch.get_num_threads()
    try:
        common.run_settings(ns(threads=1), quick, full)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
