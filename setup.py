"""Builds seg_zoo and its extension seg_zoo._C (multi-scale deformable attention).

The C++ CPU kernel is always built. The CUDA kernel is built when a CUDA toolchain (nvcc) and a
CUDA build of torch are both present, or when FORCE_CUDA=1 (FORCE_CUDA=0 builds the CPU kernel
only). Build against the installed torch:
    pip install --no-build-isolation -e .
"""

import glob
import os
import site
import sys

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:  # pragma: no cover - a message is better than a traceback here
    sys.exit(
        "seg_zoo: torch must be installed before seg_zoo is built "
        "(pip install torch, then pip install --no-build-isolation -e .)"
    )

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("csrc", "ms_deform_attn")


def _cuda_toolkit_include_dirs():
    """Headers of the pip-installed CUDA toolkit pieces (cuSPARSE, cuBLAS...) that torch includes.

    torch's CUDA wheels take these from the nvidia-* packages rather than from CUDA_HOME, so an
    nvcc that is not the one torch was built with may lack them.
    """
    dirs = []
    for sp in site.getsitepackages() + [site.getusersitepackages()]:
        dirs += sorted(glob.glob(os.path.join(sp, "nvidia", "cu*", "include")))
        dirs += sorted(glob.glob(os.path.join(sp, "nvidia", "*", "include")))
    return [d for d in dirs if os.path.isdir(d)]


def _want_cuda():
    """(build CUDA?, reason) — decided once, printed so the user knows what was built."""
    force = os.environ.get("FORCE_CUDA", "")
    if force == "1":
        return True, "FORCE_CUDA=1"
    if force == "0":
        return False, "FORCE_CUDA=0"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is not a CUDA build"
    if cpp_extension.CUDA_HOME is None:
        return False, "no CUDA toolkit found (set CUDA_HOME or put nvcc on PATH)"
    return True, f"torch CUDA {torch.version.cuda}, toolkit at {cpp_extension.CUDA_HOME}"


def _extensions():
    sources = [os.path.join(CSRC, "ms_deform_attn.cpp")]
    sources += sorted(glob.glob(os.path.join(CSRC, "cpu", "*.cpp")))
    define_macros = []
    # No -std flag: torch.utils.cpp_extension picks the standard the installed torch needs
    # (C++20 for torch >= 2.14, C++17 before).
    # -fopenmp: at::parallel_for is inlined from ATen's headers and runs on OpenMP there; without
    # the flag it silently runs on one thread. The OpenMP runtime torch loaded is reused.
    cxx_flags = ["-O3", "-fopenmp"]
    with_cuda, reason = _want_cuda()
    extra = {"cxx": cxx_flags}
    ext_cls = cpp_extension.CppExtension
    include_dirs = [os.path.join(HERE, CSRC)]
    if with_cuda:
        ext_cls = cpp_extension.CUDAExtension
        sources += sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu")))
        define_macros.append(("SEG_ZOO_WITH_CUDA", None))
        include_dirs += _cuda_toolkit_include_dirs()
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            # Without a GPU torch cannot detect the architecture; build for Hopper by default and
            # say so, rather than for every architecture (which is slow on small machines).
            os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"
            reason += "; no GPU visible, TORCH_CUDA_ARCH_LIST defaulted to 9.0"
        extra["nvcc"] = [
            "-O3",
            "--expt-relaxed-constexpr",
            "-D__CUDA_NO_HALF_OPERATORS__",
            "-D__CUDA_NO_HALF_CONVERSIONS__",
            "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
            "-D__CUDA_NO_HALF2_OPERATORS__",
        ]
    kind = "CPU + CUDA" if with_cuda else "CPU only"
    print(f"seg_zoo: building seg_zoo._C ({kind}: {reason})", flush=True)
    return [
        ext_cls(
            name="seg_zoo._C",
            sources=sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args=extra,
            extra_link_args=["-fopenmp"],
        )
    ]


setup(
    name="seg_zoo",
    version="0.1.0",
    description="Transformer image segmentation (Mask2Former, Segmenter, Swin, Pix2Seq-D) "
    "as a Detectron2 plugin",
    packages=find_packages(exclude=("tests", "tests.*", "benchmarks", "configs", "tools")),
    python_requires=">=3.10",
    ext_modules=_extensions(),
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    zip_safe=False,
)
