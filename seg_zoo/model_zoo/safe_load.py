"""Loading checkpoint files without letting them run code.

A pickle names the functions that rebuild its objects, and unpickling calls them: a ``.pkl``
from the internet can therefore run any command. seg_zoo loads:

- ``.pkl`` (detectron2 / Detectron1 / Caffe2 model zoo) through ``RestrictedUnpickler``, which
  builds only dicts (``OrderedDict`` included), lists, tuples, strings, bytes, numbers, booleans,
  ``None`` and numpy arrays/scalars. Any other global is refused with ``UnsafeCheckpointError``
  naming it (e.g. ``posix.system``) before it is called.
- everything else (``.pth``, ``.pt``, ``.pyth``, ...) through ``torch.load(weights_only=True)``,
  torch's own restricted unpickler (tensors, containers, primitives).

Opt-out, for files you made or otherwise trust: ``trusted=True``, or the environment variable
``SEG_ZOO_TRUST_PICKLES=1`` (applies to every file loaded in the process, downloaded ones too).
A trusted file is unpickled with plain ``pickle`` / ``torch.load(weights_only=False)``.
"""

from __future__ import annotations

import codecs
import os
import pickle
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

TRUST_ENV = "SEG_ZOO_TRUST_PICKLES"


class CheckpointLoadError(RuntimeError):
    """A checkpoint file that cannot be read (missing, truncated, corrupt or of a bad layout)."""


class UnsafeCheckpointError(CheckpointLoadError):
    """A checkpoint that asks to call a function the restricted unpickler does not admit."""


def _latin1_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(str, "latin1"); numpy
    # arrays' raw data goes through it. Other codecs are not needed for that, so not admitted.
    if not isinstance(obj, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(
            f"_codecs.encode is admitted only as str -> latin1 bytes, got encoding {encoding!r}"
        )
    return obj.encode("latin1", errors)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The numpy functions and types that unpickling an array or a numpy scalar calls.

    Pickles name them by the module path of the numpy that wrote them: ``numpy.core`` before
    numpy 2, ``numpy._core`` since; both map onto the installed numpy's objects.
    """
    from numpy.core import multiarray, numeric

    allowed = {}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        if hasattr(numeric, "_frombuffer"):  # protocol 5 pickles of arrays
            allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    **_numpy_globals(),
    ("collections", "OrderedDict"): OrderedDict,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that admits only containers, primitives and numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"refused to load global '{module}.{name}': seg_zoo unpickles only dicts, "
                "lists, tuples, strings, numbers and numpy arrays from .pkl checkpoints"
            ) from None


def _trusted(trusted: bool) -> bool:
    return trusted or os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes")


def _opt_out_hint() -> str:
    return (
        f"if you trust this file, load it with trusted=True or set {TRUST_ENV}=1 "
        "(unpickling an untrusted file can run arbitrary code)"
    )


def load_pickle(path: str | os.PathLike, trusted: bool = False) -> Any:
    """Unpickle ``path`` (latin1 for Python 2 strings, as detectron2 does), restricted unless
    trusted."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            if _trusted(trusted):
                return pickle.load(f, encoding="latin1")
            return RestrictedUnpickler(f, encoding="latin1").load()
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{path}: {e}; {_opt_out_hint()}") from None
    except FileNotFoundError:
        raise CheckpointLoadError(f"checkpoint file not found: {path}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as e:
        # The usual faces of a truncated or corrupt pickle: EOFError ("Ran out of input"),
        # UnpicklingError (bad opcode, truncated), ValueError/TypeError (garbled arguments).
        raise CheckpointLoadError(
            f"{path}: not a readable pickle (truncated or corrupt?): {type(e).__name__}: {e}"
        ) from e


def load_torch_file(path: str | os.PathLike, trusted: bool = False) -> Any:
    """``torch.load`` on CPU with ``weights_only=True`` unless trusted; errors name the file."""
    path = os.fspath(path)
    weights_only = not _trusted(trusted)
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except FileNotFoundError:
        raise CheckpointLoadError(f"checkpoint file not found: {path}") from None
    except pickle.UnpicklingError as e:
        if weights_only and "Weights only load failed" in str(e):
            # torch's message names the refused global ("Unsupported global: GLOBAL ...").
            raise UnsafeCheckpointError(
                f"{path}: torch.load(weights_only=True) refused it; {_opt_out_hint()}.\n"
                f"torch said: {e}"
            ) from None
        raise CheckpointLoadError(
            f"{path}: not a readable torch checkpoint (truncated or corrupt?): {e}"
        ) from e
    except Exception as e:
        # A truncated zip-format file: OSError (EINVAL) or RuntimeError ("PytorchStreamReader
        # failed reading zip archive"), depending on where it was cut; a truncated legacy file:
        # EOFError; garbage: whatever the unpickler trips on first (IndexError, KeyError...).
        raise CheckpointLoadError(
            f"{path}: not a readable torch checkpoint (truncated or corrupt?): "
            f"{type(e).__name__}: {e}"
        ) from e


def _require_dict(data: Any, path: str, what: str) -> dict:
    if not isinstance(data, dict):
        raise CheckpointLoadError(
            f"{path}: expected {what} to be a dict, got {type(data).__name__}"
        )
    return data


def load_checkpoint_file(path: str | os.PathLike, trusted: bool = False) -> dict:
    """Read a local checkpoint into the dict detectron2's ``DetectionCheckpointer._load_file``
    returns, without running code from it (unless ``trusted``).

    - ``.pkl`` in detectron2 model-zoo format (has ``model`` and ``__author__``): returned as is.
    - other ``.pkl`` (Caffe2 / Detectron1; weights possibly under ``blobs``): ``{"model":
      weights without *_momentum entries, "__author__": "Caffe2", "matching_heuristics": True}``.
    - ``.pyth`` (pycls): ``{"model": model_state without num_batches_tracked, "__author__":
      "pycls", "matching_heuristics": True}``.
    - anything else: ``torch.load``; a bare state_dict is wrapped as ``{"model": ...}``.
      (detectron2's ``?matching_heuristics=True`` URL query is handled by its checkpointer.)
    """
    path = os.fspath(path)
    if path.endswith(".pkl"):
        data = _require_dict(load_pickle(path, trusted), path, "the unpickled object")
        if "model" in data and "__author__" in data:
            return data
        if "blobs" in data:  # Detectron1 detection models keep their weights under "blobs"
            data = _require_dict(data["blobs"], path, "'blobs'")
        weights = {k: v for k, v in data.items() if not k.endswith("_momentum")}
        return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}
    if path.endswith(".pyth"):
        data = _require_dict(load_torch_file(path, trusted), path, "the checkpoint")
        if "model_state" not in data:
            raise CheckpointLoadError(
                f"{path}: a pycls .pyth checkpoint must hold 'model_state'; found keys "
                f"{sorted(map(str, data))}"
            )
        state = {
            k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")
        }
        return {"model": state, "__author__": "pycls", "matching_heuristics": True}
    data = _require_dict(load_torch_file(path, trusted), path, "the checkpoint")
    if "model" not in data:
        data = {"model": data}
    return data
