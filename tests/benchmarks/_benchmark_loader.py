"""Load a script of benchmarks/ as a module, for the tests of this folder.

benchmarks/ is a folder of scripts, not a package: each file is loaded by path, under the
module name ``seg_zoo_bench_<name>``.
"""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py as the module ``seg_zoo_bench_<name>`` (registered in sys.modules).

    A script already loaded is returned as it is, so that every test module sees one module
    object (and one set of its globals) per script.
    """
    module_name = f"seg_zoo_bench_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = BENCHMARKS_DIR / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no benchmark script {name!r}: {path} does not exist")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: dataclasses look their defining module up in sys.modules.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]  # no half-run module for the next caller to pick up
        raise
    return module
