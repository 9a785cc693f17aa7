"""Checkpoint files load without running code from them, and bad files are named.

The expected values are the objects the tests wrote themselves (or detectron2's own loader's
result for the same file), never the output of seg_zoo's loader compared with itself.
"""

from __future__ import annotations

import collections
import datetime
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer

from seg_zoo.model_zoo.safe_load import (
    CheckpointLoadError,
    UnsafeCheckpointError,
    load_checkpoint_file,
    load_pickle,
)


@pytest.fixture(autouse=True)
def _untrusted(monkeypatch):
    monkeypatch.delenv("SEG_ZOO_TRUST_PICKLES", raising=False)


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "sem_seg_head.predictor.class_embed.weight": rng.standard_normal((5, 8)).astype(np.float32),
        "sem_seg_head.predictor.class_embed.bias": rng.standard_normal(5).astype(np.float64),
        "backbone.res2.0.conv1.norm.num_batches_tracked": np.array(3, dtype=np.int64),
        "fortran": np.asfortranarray(rng.standard_normal((3, 4)).astype(np.float16)),
    }


class _RunsCommand:
    """Unpickling this calls os.system(command): what a malicious checkpoint does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _write(path: Path, obj, protocol: int) -> Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_model_zoo_pkl_loads(tmp_path, protocol):
    weights = _weights()
    data = {
        "model": collections.OrderedDict(weights),
        "__author__": "Mask2Former",
        "matching_heuristics": True,
        "extra": [1, 2.5, None, True, ("a", b"b"), np.float32(0.5)],
    }
    path = _write(tmp_path / "model_final.pkl", data, protocol)
    loaded = load_checkpoint_file(path)
    assert loaded["__author__"] == "Mask2Former" and loaded["matching_heuristics"] is True
    assert loaded["extra"] == data["extra"]
    assert list(loaded["model"]) == list(weights)
    for key, array in weights.items():
        assert loaded["model"][key].dtype == array.dtype
        np.testing.assert_array_equal(loaded["model"][key], array)


def test_python2_strings_are_read_as_latin1(tmp_path):
    # Detectron1/Caffe2 pickles were written by Python 2, whose str is bytes (SHORT_BINSTRING,
    # opcode "U"); detectron2 reads them with encoding="latin1". Hand-assembled protocol-2
    # pickle of {"model": {}, "__author__": "\xe9"} (0xe9 is "é" in latin1, invalid ASCII).
    blob = b"\x80\x02}(U\x05model}U\n__author__U\x01\xe9u."
    path = tmp_path / "py2.pkl"
    path.write_bytes(blob)
    assert load_checkpoint_file(path) == {"model": {}, "__author__": "\u00e9"}


def test_caffe2_pkl_layout_matches_detectron2(tmp_path):
    weights = {"conv1_w": np.ones((2, 2), np.float32), "conv1_w_momentum": np.zeros(2)}
    for name, obj in [("blobs.pkl", {"blobs": weights}), ("plain.pkl", weights)]:
        path = _write(tmp_path / name, obj, 2)
        ours = load_checkpoint_file(path)
        # detectron2's own (unrestricted) loader is the reference for the layout.
        theirs = DetectionCheckpointer(torch.nn.Linear(1, 1))._load_file(str(path))
        assert ours.keys() == theirs.keys() == {"model", "__author__", "matching_heuristics"}
        assert ours["__author__"] == theirs["__author__"] == "Caffe2"
        assert ours["model"].keys() == theirs["model"].keys() == {"conv1_w"}


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = _write(
        tmp_path / "evil.pkl", {"model": {"x": _RunsCommand(f"touch {marker}")}}, protocol=2
    )
    with pytest.raises(UnsafeCheckpointError) as info:
        load_checkpoint_file(path)
    message = str(info.value)
    assert f"{os.system.__module__}.system" in message  # posix.system on Linux
    assert str(path) in message
    assert "SEG_ZOO_TRUST_PICKLES" in message and "trusted=True" in message
    assert not marker.exists()


def test_codecs_encode_admits_only_latin1(tmp_path):
    import _codecs

    class _Encodes:
        def __reduce__(self):
            return (_codecs.encode, ("abc", "rot13"))

    path = _write(tmp_path / "codec.pkl", {"model": {}, "__author__": "x", "y": _Encodes()}, 2)
    with pytest.raises(CheckpointLoadError, match="latin1"):
        load_checkpoint_file(path)


def test_opt_out_for_trusted_files(tmp_path, monkeypatch):
    # A harmless global outside the admitted set stands in for "anything else".
    day = datetime.date(2022, 6, 1)
    path = _write(tmp_path / "trusted.pkl", {"model": {}, "__author__": "me", "day": day}, 2)
    with pytest.raises(UnsafeCheckpointError, match="datetime.date"):
        load_checkpoint_file(path)
    assert load_checkpoint_file(path, trusted=True)["day"] == day
    monkeypatch.setenv("SEG_ZOO_TRUST_PICKLES", "1")
    assert load_pickle(path)["day"] == day


def test_pth_loads_with_weights_only(tmp_path):
    state = {"weight": torch.randn(2, 3), "bias": torch.randn(2)}
    bare = tmp_path / "bare.pth"
    torch.save(state, bare)
    loaded = load_checkpoint_file(bare)
    assert loaded.keys() == {"model"}
    for key in state:
        torch.testing.assert_close(loaded["model"][key], state[key], rtol=0, atol=0)


def test_training_checkpoint_loads_with_weights_only(tmp_path):
    """What seg_zoo's trainer writes (model, optimizer, scheduler, iteration) is weights-only."""
    from detectron2.solver import WarmupParamScheduler
    from detectron2.solver.lr_scheduler import LRMultiplier
    from fvcore.common.param_scheduler import CosineParamScheduler

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    sched = WarmupParamScheduler(CosineParamScheduler(1, 0), 0.001, 0.1)
    scheduler = LRMultiplier(optimizer, multiplier=sched, max_iter=10)
    ckpt = DetectionCheckpointer(model, str(tmp_path), optimizer=optimizer, scheduler=scheduler)
    ckpt.save("model_0000009", iteration=9)
    loaded = load_checkpoint_file(tmp_path / "model_0000009.pth")
    assert loaded["iteration"] == 9
    assert loaded.keys() >= {"model", "optimizer", "scheduler"}
    torch.testing.assert_close(loaded["model"]["weight"], model.weight.detach(), rtol=0, atol=0)


def test_malicious_pth_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": _RunsCommand(f"touch {marker}")}}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_checkpoint_file(path)
    assert "system" in str(info.value) and str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_truncated_and_corrupt_files_are_named(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    if suffix == ".pkl":
        _write(path, {"model": _weights(), "__author__": "x"}, 2)
    else:
        torch.save({"model": {"w": torch.randn(64, 64)}}, path)
    full = path.read_bytes()

    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(full[: len(full) // 2])
    with pytest.raises(CheckpointLoadError, match=str(truncated)):
        load_checkpoint_file(truncated)

    corrupt = tmp_path / f"corrupt{suffix}"
    corrupt.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(CheckpointLoadError, match=str(corrupt)):
        load_checkpoint_file(corrupt)

    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointLoadError, match=str(empty)):
        load_checkpoint_file(empty)

    with pytest.raises(CheckpointLoadError, match="missing"):
        load_checkpoint_file(tmp_path / f"missing{suffix}")


def test_non_dict_pickle_is_named(tmp_path):
    path = _write(tmp_path / "list.pkl", [1, 2, 3], 2)
    with pytest.raises(CheckpointLoadError, match=r"list\.pkl.*got list"):
        load_checkpoint_file(path)


class _SafeCheckpointer(DetectionCheckpointer):
    """The override proposed for seg_zoo.engine.checkpoint.Checkpointer."""

    def _load_file(self, filename):
        if filename.endswith((".pkl", ".pyth")):
            return load_checkpoint_file(filename)
        return super()._load_file(filename)  # keeps detectron2's ?matching_heuristics query

    def _torch_load(self, f):
        return load_checkpoint_file(f)


def test_checkpointer_override_loads_and_refuses(tmp_path):
    weights = {"weight": np.full((2, 3), 0.25, np.float32), "bias": np.array([1, -1], np.float32)}
    good = _write(tmp_path / "good.pkl", {"model": weights, "__author__": "t"}, 2)
    model = torch.nn.Linear(3, 2)
    _SafeCheckpointer(model).load(str(good))
    np.testing.assert_array_equal(model.weight.detach().numpy(), weights["weight"])

    pth = tmp_path / "good.pth"
    torch.save({"weight": torch.zeros(2, 3), "bias": torch.zeros(2)}, pth)
    _SafeCheckpointer(model).load(str(pth) + "?matching_heuristics=True")
    assert model.weight.abs().sum() == 0

    marker = tmp_path / "pwned"
    evil = _write(tmp_path / "evil.pkl", {"model": _RunsCommand(f"touch {marker}")}, 2)
    with pytest.raises(UnsafeCheckpointError):
        _SafeCheckpointer(model).load(str(evil))
    assert not marker.exists()
