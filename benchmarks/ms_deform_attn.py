"""Benchmark of multi-scale deformable attention: the compiled op against the PyTorch reference.

For each shape, dtype and device it measures, in one run, the median time of a forward
(under ``torch.no_grad``) and of a forward + backward (gradients of value, sampling locations
and attention weights), and the peak memory of both, for ``seg_zoo.layers.ms_deform_attn``
("ours") and ``ms_deform_attn_pytorch`` (the grid_sample reference), and prints a Markdown
table with the ratios reference / ours (> 1: ours is faster or smaller).

Inputs follow Deformable DETR's encoder: Lq = S queries (every pixel of every level), M=8
heads of D=32, P=4 points, locations uniform in [0, 1], attention weights a softmax over
levels and points. Ours receives value and weights in the dtype and fp32 locations, as
MSDeformAttn passes them. The reference runs in float32 (half inputs upcast before timing)
and, for half dtypes, also in the dtype itself (grid_sample supports fp16/bf16 on CPU and CUDA).

Peak memory is the memory allocated beyond the inputs:
  * CUDA: torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus the memory
    allocated before the call (the caching allocator's own reserve is not counted).
  * CPU: torch has no allocation counter there, so each (shape, dtype, implementation) runs in
    a fresh subprocess with glibc's mmap threshold fixed at 64 KiB (large blocks go back to the
    OS when freed, so resident memory follows live memory) and reports the Linux peak
    resident set size (VmHWM, reset through /proc/self/clear_refs just before the call)
    minus the resident size then. It counts every page the call touches (outputs, saved
    tensors, temporaries, thread-local buffers): an upper bound on tensor memory, good to a
    few MiB; "n/a" where /proc does not allow it.

Usage:
    python benchmarks/ms_deform_attn.py                       # CPU (and CUDA if present)
    python benchmarks/ms_deform_attn.py --device cuda --shapes S1,S2,S3,S4
    python benchmarks/ms_deform_attn.py --quick               # S1N1 and S1, fewer runs
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from functools import partial

import torch

# Runs from a checkout without installing seg_zoo (the extension built in place).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from seg_zoo.layers import (  # noqa: E402
    extension_available,
    ms_deform_attn,
    ms_deform_attn_pytorch,
)

# name -> (N, levels as (H, W)); all with M=8, D=32, P=4, Lq=S.
SHAPES = {
    "S1N1": (1, [(64, 64), (32, 32), (16, 16)]),
    "S1": (2, [(64, 64), (32, 32), (16, 16)]),
    "S2": (2, [(128, 128), (64, 64), (32, 32)]),
    "S3": (2, [(100, 167), (50, 84), (25, 42), (13, 21)]),
    "S4": (8, [(128, 128), (64, 64), (32, 32)]),
}
HEADS, HEAD_DIM, POINTS = 8, 32, 4
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# On the CPU the reference takes seconds per call on S2/S3 and ~7 GiB on S4: the default keeps
# the run to a few minutes on 2 cores (S2 and S4 on request).
DEFAULT_SHAPES = {"cpu": "S1N1,S1,S3", "cuda": "S1N1,S1,S2,S3,S4"}


def make_inputs(shape_name, dtype, device, seed=0):
    """(value, spatial_shapes, level_start_index, sampling_locations, attention_weights).

    value and weights in ``dtype``, locations in float32; level tables on the CPU (the op reads
    them on the host, so this spares a device-to-host copy).
    """
    n, levels = SHAPES[shape_name]
    g = torch.Generator(device=device).manual_seed(seed)
    spatial_shapes = torch.tensor(levels, dtype=torch.int64)
    sizes = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    num_keys, num_levels = int(sizes.sum()), len(levels)
    value = torch.randn(n, num_keys, HEADS, HEAD_DIM, generator=g, device=device, dtype=dtype)
    locations = torch.rand(n, num_keys, HEADS, num_levels, POINTS, 2, generator=g, device=device)
    logits = torch.randn(n, num_keys, HEADS, num_levels * POINTS, generator=g, device=device)
    weights = logits.softmax(-1).view(n, num_keys, HEADS, num_levels, POINTS).to(dtype)
    return value, spatial_shapes, level_start_index, locations, weights


def implementations(dtype):
    """name -> (function, dtype of value/weights it runs in)."""
    impls = {"ours": (ms_deform_attn, dtype), "ref fp32": (ms_deform_attn_pytorch, torch.float32)}
    if dtype != torch.float32:
        impls[f"ref {str(dtype).replace('torch.', '')}"] = (ms_deform_attn_pytorch, dtype)
    return impls


def _cast(inputs, dtype):
    value, spatial_shapes, level_start_index, locations, weights = inputs
    return value.to(dtype), spatial_shapes, level_start_index, locations, weights.to(dtype)


def _forward(fn, inputs):
    with torch.no_grad():
        return fn(*inputs)


def _forward_backward(fn, inputs, grad_output):
    value, spatial_shapes, level_start_index, locations, weights = inputs
    leaves = [t.detach().requires_grad_() for t in (value, locations, weights)]
    out = fn(leaves[0], spatial_shapes, level_start_index, leaves[1], leaves[2])
    out.backward(grad_output)
    return [t.grad for t in leaves]


def _time(call, device, repeat, warmup, budget_s):
    """Median seconds of ``call`` over ``repeat`` runs (at least 3; fewer than ``repeat`` once
    ``budget_s`` is spent), and the number of runs."""
    for _ in range(warmup):
        call()
    times = []
    spent = 0.0
    while len(times) < repeat and (len(times) < 3 or spent < budget_s):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            call()
            end.record()
            torch.cuda.synchronize()
            elapsed = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            call()
            elapsed = time.perf_counter() - t0
        times.append(elapsed)
        spent += elapsed
    return statistics.median(times), len(times)


def _cuda_peak(call):
    """Bytes allocated at the peak of ``call`` beyond what was allocated before it."""
    gc.collect()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = call()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del result
    return peak


def _proc_status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def _cpu_peak_of(call):
    """Peak resident bytes during ``call`` beyond the resident bytes before it."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size (Linux >= 4.0)
    before = _proc_status_bytes("VmRSS")
    result = call()
    peak = _proc_status_bytes("VmHWM") - before
    del result
    return peak


def _cpu_peak_child(shape_name, dtype_name, impl_name, threads):
    """Runs in a fresh process: peak memory of one forward and of one forward + backward."""
    torch.set_num_threads(threads)
    dtype = DTYPES[dtype_name]
    fn, run_dtype = implementations(dtype)[impl_name]
    # Load kernels and start the thread pool on a tiny problem first, so that one-off costs
    # are not counted as the call's memory.
    tiny = make_inputs("S1N1", run_dtype, "cpu")
    tiny = tuple(t[:, :64] if i in (3, 4) else t for i, t in enumerate(tiny))
    _forward_backward(fn, tiny, torch.ones(1, 64, HEADS * HEAD_DIM, dtype=run_dtype))
    del tiny
    inputs = make_inputs(shape_name, run_dtype, "cpu")
    n, num_keys = inputs[0].shape[:2]
    grad_output = torch.ones(n, num_keys, HEADS * HEAD_DIM, dtype=run_dtype)
    forward = _cpu_peak_of(lambda: _forward(fn, inputs))
    forward_backward = _cpu_peak_of(lambda: _forward_backward(fn, inputs, grad_output))
    print(json.dumps({"forward": forward, "forward_backward": forward_backward}))


def _cpu_peak(shape_name, dtype_name, impl_name, threads):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--_memory-child",
        shape_name,
        dtype_name,
        impl_name,
        str(threads),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return None
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["forward"], result["forward_backward"]


# The float32 reference does the same work whatever dtype it is compared with: measured once
# per shape and device.
_measured = {}


def _measure_impl(fn, inputs, grad_output, device, repeat, args, cpu_peak):
    """Times and peak memory of one implementation on prepared inputs."""
    forward = lambda: _forward(fn, inputs)
    forward_backward = lambda: _forward_backward(fn, inputs, grad_output)
    fwd, fwd_runs = _time(forward, device, repeat, args.warmup, args.budget)
    fwd_bwd, fwd_bwd_runs = _time(forward_backward, device, repeat, args.warmup, args.budget)
    peaks = (None, None)
    if args.memory:
        if device == "cuda":
            peaks = (_cuda_peak(forward), _cuda_peak(forward_backward))
        else:
            peaks = cpu_peak() or peaks
    return {
        "fwd": fwd,
        "fwd_bwd": fwd_bwd,
        "peak_fwd": peaks[0],
        "peak_fwd_bwd": peaks[1],
        "runs": (fwd_runs, fwd_bwd_runs),
    }


def measure(shape_name, dtype_name, device, args):
    """{impl name: dict of fwd / fwd_bwd seconds, peak bytes, runs}."""
    dtype = DTYPES[dtype_name]
    base_inputs = make_inputs(shape_name, dtype, device)
    n, num_keys = base_inputs[0].shape[:2]
    results = {}
    for impl_name, (fn, run_dtype) in implementations(dtype).items():
        key = (shape_name, device, fn, run_dtype)
        if key not in _measured:
            inputs = _cast(base_inputs, run_dtype)
            grad_output = torch.ones(n, num_keys, HEADS * HEAD_DIM, dtype=run_dtype, device=device)
            repeat = args.repeat if impl_name == "ours" else args.ref_repeat
            threads = torch.get_num_threads()
            _measured[key] = _measure_impl(
                fn,
                inputs,
                grad_output,
                device,
                repeat,
                args,
                cpu_peak=partial(_cpu_peak, shape_name, dtype_name, impl_name, threads),
            )
        results[impl_name] = _measured[key]
    return results


def _ms(seconds):
    return f"{seconds * 1e3:.2f}"


def _mib(size):
    return "n/a" if size is None else f"{size / 2**20:.1f}"


def _ratio(ref, ours):
    if ref is None or ours is None or ours <= 0:
        return "n/a"
    return f"{ref / ours:.1f}x"


def print_table(rows):
    print(
        "| shape | device | dtype | reference | ours fwd ms | ref fwd ms | fwd speed-up "
        "| ours fwd+bwd ms | ref fwd+bwd ms | fwd+bwd speed-up "
        "| ours peak MiB fwd / fwd+bwd | ref peak MiB fwd / fwd+bwd | memory ratio fwd+bwd |"
    )
    print("|" + "---|" * 13)
    for shape_name, device, dtype_name, results in rows:
        ours = results["ours"]
        for impl_name, ref in results.items():
            if impl_name == "ours":
                continue
            print(
                f"| {shape_name} | {device} | {dtype_name} | {impl_name} "
                f"| {_ms(ours['fwd'])} | {_ms(ref['fwd'])} | {_ratio(ref['fwd'], ours['fwd'])} "
                f"| {_ms(ours['fwd_bwd'])} | {_ms(ref['fwd_bwd'])} "
                f"| {_ratio(ref['fwd_bwd'], ours['fwd_bwd'])} "
                f"| {_mib(ours['peak_fwd'])} / {_mib(ours['peak_fwd_bwd'])} "
                f"| {_mib(ref['peak_fwd'])} / {_mib(ref['peak_fwd_bwd'])} "
                f"| {_ratio(ref['peak_fwd_bwd'], ours['peak_fwd_bwd'])} |",
                flush=True,
            )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda", "all"),
        default="all",
        help="'all': the CPU, and CUDA when available",
    )
    parser.add_argument(
        "--shapes",
        default=None,
        help=f"comma-separated, from {','.join(SHAPES)} "
        f"(default: {DEFAULT_SHAPES['cpu']} on CPU, all on CUDA)",
    )
    parser.add_argument("--dtypes", default="float32,float16,bfloat16")
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="timed runs of ours (default 10 on CPU, 50 on CUDA)",
    )
    parser.add_argument(
        "--ref-repeat",
        type=int,
        default=None,
        help="timed runs of the reference (default 3 on CPU, --repeat on CUDA)",
    )
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs (default 1 / 10)")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds per measurement after which no more runs start, at least "
        "3 runs (default 2 on CPU, 10 on CUDA)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)"
    )
    parser.add_argument(
        "--no-memory",
        dest="memory",
        action="store_false",
        help="skip peak memory (on the CPU it costs a subprocess per row)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="S1N1 and S1 only, 5 runs of ours, 3 of the reference, 1 warm-up",
    )
    parser.add_argument("--_memory-child", nargs=4, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args._memory_child:
        shape_name, dtype_name, impl_name, threads = args._memory_child
        _cpu_peak_child(shape_name, dtype_name, impl_name, int(threads))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            sys.exit("--device cuda: no CUDA device available")
        devices.remove("cuda")
    if not extension_available():
        print("WARNING: seg_zoo._C is not built; 'ours' is the reference fallback", file=sys.stderr)
    dtype_names = args.dtypes.split(",")
    for name in dtype_names:
        if name not in DTYPES:
            sys.exit(f"--dtypes: unknown dtype {name!r}; choose from {', '.join(DTYPES)}")

    rows = []
    settings = []
    for device in devices:
        on_cuda = device == "cuda"
        device_args = argparse.Namespace(**vars(args))
        device_args.repeat = args.repeat or (5 if args.quick else 50 if on_cuda else 10)
        device_args.ref_repeat = args.ref_repeat or (
            3 if args.quick or not on_cuda else device_args.repeat
        )
        device_args.warmup = (
            args.warmup if args.warmup is not None else (10 if on_cuda and not args.quick else 1)
        )
        device_args.budget = args.budget or (10.0 if on_cuda else 2.0)
        shapes = args.shapes or ("S1N1,S1" if args.quick else DEFAULT_SHAPES[device])
        for shape_name in shapes.split(","):
            if shape_name not in SHAPES:
                sys.exit(f"--shapes: unknown shape {shape_name!r}; choose from {', '.join(SHAPES)}")
            for dtype_name in dtype_names:
                rows.append(
                    (
                        shape_name,
                        device,
                        dtype_name,
                        measure(shape_name, dtype_name, device, device_args),
                    )
                )
                print(f"measured {shape_name} {device} {dtype_name}", file=sys.stderr, flush=True)
        settings.append(
            f"{device}: up to {device_args.repeat} timed runs of ours and "
            f"{device_args.ref_repeat} of the reference (at least 3, no new run after "
            f"{device_args.budget:g} s), {device_args.warmup} warm-up"
            + (
                f", {torch.get_num_threads()} threads"
                if not on_cuda
                else f", {torch.cuda.get_device_name()}"
            )
        )
    print()
    print_table(rows)
    print()
    print(f"torch {torch.__version__}; times are medians; " + "; ".join(settings) + ".")
    print("Peak memory: beyond the inputs (see the module docstring for how it is measured).")


if __name__ == "__main__":
    main()
