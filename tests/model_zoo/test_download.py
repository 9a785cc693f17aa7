"""Downloads and ``seg_zoo://`` paths against a local HTTP server on 127.0.0.1.

The server (``zoo_helpers.LocalServer``) honours ``Range`` requests and counts every request; no
other network is used. Expected digests come from ``hashlib`` on the served bytes, not from
seg_zoo.
"""

from __future__ import annotations

import hashlib
import logging
import pickle

import numpy as np
import pytest
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager
from zoo_helpers import LocalServer, official_tiny_mask_bytes

import seg_zoo  # noqa: F401  (registers the seg_zoo:// handler)
from seg_zoo.model_zoo import catalog, download
from seg_zoo.model_zoo.catalog import ModelZooEntry, UnknownModelError
from seg_zoo.model_zoo.download import ChecksumError, MissingChecksumError

FILE_NAME = "model_final_abcdef.pkl"


def make_checkpoint_bytes() -> bytes:
    """A small detectron2 model-zoo pkl: a Linear(3, 2)'s weights as numpy arrays."""
    rng = np.random.default_rng(0)
    model = {
        "weight": rng.standard_normal((2, 3)).astype(np.float32),
        "bias": rng.standard_normal(2).astype(np.float32),
    }
    return pickle.dumps({"model": model, "__author__": "seg_zoo tests"}, protocol=2)


@pytest.fixture
def payload() -> bytes:
    return make_checkpoint_bytes()


@pytest.fixture
def server(payload):
    srv = LocalServer({"/zoo/" + FILE_NAME: payload})
    yield srv
    srv.close()


def test_download_then_cache_hit(server, payload, cache, tmp_path):
    url = server.url("/zoo/" + FILE_NAME)
    dst = tmp_path / "cache" / "x" / FILE_NAME
    sha = hashlib.sha256(payload).hexdigest()
    assert download.download_file(url, dst, sha256=sha, progress=False) == str(dst)
    assert dst.read_bytes() == payload
    assert not dst.with_name(FILE_NAME + ".part").exists()
    assert len(server.requests) == 1

    # A verified file in the cache is used without asking the server again.
    assert download.download_file(url, dst, sha256=sha, progress=False) == str(dst)
    assert len(server.requests) == 1


def test_resume_from_partial_download(server, payload, tmp_path):
    url = server.url("/zoo/" + FILE_NAME)
    dst = tmp_path / "out" / FILE_NAME
    dst.parent.mkdir()
    cut = len(payload) // 3
    dst.with_name(FILE_NAME + ".part").write_bytes(payload[:cut])

    download.download_file(url, dst, sha256=hashlib.sha256(payload).hexdigest(), progress=False)
    assert dst.read_bytes() == payload
    assert server.requests == [("/zoo/" + FILE_NAME, f"bytes={cut}-")]


def test_interrupted_download_is_resumed(server, payload, tmp_path):
    url = server.url("/zoo/" + FILE_NAME)
    dst = tmp_path / "out" / FILE_NAME
    sha = hashlib.sha256(payload).hexdigest()
    server.cut_after = 100
    with pytest.raises(OSError, match="resume") as info:
        download.download_file(url, dst, sha256=sha, progress=False)
    assert FILE_NAME + ".part" in str(info.value)
    assert not dst.exists()
    assert dst.with_name(FILE_NAME + ".part").read_bytes() == payload[:100]

    download.download_file(url, dst, sha256=sha, progress=False)
    assert dst.read_bytes() == payload
    assert server.requests[-1] == ("/zoo/" + FILE_NAME, "bytes=100-")


def test_restart_when_server_ignores_range(server, payload, tmp_path):
    server.honour_range = False
    url = server.url("/zoo/" + FILE_NAME)
    dst = tmp_path / "out" / FILE_NAME
    dst.parent.mkdir()
    # A stale part with wrong bytes: must be replaced, not appended to.
    dst.with_name(FILE_NAME + ".part").write_bytes(b"garbage")
    download.download_file(url, dst, sha256=hashlib.sha256(payload).hexdigest(), progress=False)
    assert dst.read_bytes() == payload


def test_sha256_mismatch_discards_file(server, payload, tmp_path):
    url = server.url("/zoo/" + FILE_NAME)
    dst = tmp_path / "out" / FILE_NAME
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as info:
        download.download_file(url, dst, sha256=wrong, progress=False)
    message = str(info.value)
    assert wrong in message
    assert hashlib.sha256(payload).hexdigest() in message
    assert FILE_NAME in message
    assert not dst.exists() and not dst.with_name(FILE_NAME + ".part").exists()


def test_tampered_cache_is_discarded(server, payload, tmp_path):
    dst = tmp_path / "out" / FILE_NAME
    dst.parent.mkdir()
    dst.write_bytes(b"not the checkpoint")
    sha = hashlib.sha256(payload).hexdigest()
    with pytest.raises(ChecksumError, match=hashlib.sha256(b"not the checkpoint").hexdigest()):
        download.download_file(server.url("/zoo/" + FILE_NAME), dst, sha256=sha, progress=False)
    assert not dst.exists()
    assert server.requests == []


def test_unknown_sha256_warns_or_is_refused(server, payload, tmp_path, caplog, monkeypatch):
    url = server.url("/zoo/" + FILE_NAME)
    with caplog.at_level(logging.WARNING, logger="seg_zoo.model_zoo.download"):
        download.download_file(url, tmp_path / "a" / FILE_NAME, progress=False)
    # The warning gives the digest so that it can be pinned.
    assert hashlib.sha256(payload).hexdigest() in caplog.text

    with pytest.raises(MissingChecksumError, match="requires a sha256"):
        download.download_file(url, tmp_path / "b" / FILE_NAME, require_sha256=True, progress=False)
    monkeypatch.setenv("SEG_ZOO_REQUIRE_SHA256", "1")
    with pytest.raises(MissingChecksumError, match="SEG_ZOO_REQUIRE_SHA256"):
        download.download_file(url, tmp_path / "c" / FILE_NAME, progress=False)
    assert len(server.requests) == 1  # the refused ones asked nothing
    # an explicit require_sha256=False (the pinning tool) is not overridden by the environment
    download.download_file(url, tmp_path / "d" / FILE_NAME, require_sha256=False, progress=False)
    assert len(server.requests) == 2
    # a catalog entry that does not require a digest leaves the choice to the environment
    entry = ModelZooEntry(name="x/y", config="c.yaml", url=url)
    monkeypatch.setenv("SEG_ZOO_CACHE", str(tmp_path / "cache_e"))
    with pytest.raises(MissingChecksumError, match="SEG_ZOO_REQUIRE_SHA256"):
        download.download_entry(entry, progress=False)


def test_only_http_https_file_urls(tmp_path, payload):
    with pytest.raises(ValueError, match="ftp://example.org/x.pkl"):
        download.download_file("ftp://example.org/x.pkl", tmp_path / "x.pkl", progress=False)
    src = tmp_path / "src.pkl"
    src.write_bytes(payload)
    out = download.download_file(src.as_uri(), tmp_path / "copy" / "src.pkl", progress=False)
    assert open(out, "rb").read() == payload


@pytest.mark.parametrize("use_tqdm", [True, False])
def test_progress_output(server, tmp_path, capsys, monkeypatch, use_tqdm):
    if not use_tqdm:
        monkeypatch.setattr(download, "_tqdm", None)
    download.download_file(
        server.url("/zoo/" + FILE_NAME), tmp_path / "p" / FILE_NAME, progress=True
    )
    err = capsys.readouterr().err
    assert FILE_NAME in err
    assert "100%" in err


def _add_test_entry(monkeypatch, url: str, sha256: str | None) -> ModelZooEntry:
    entry = ModelZooEntry(
        name="tests/local/linear",
        config="configs/synthetic/does_not_matter.yaml",
        url=url,
        sha256=sha256,
    )
    monkeypatch.setitem(catalog.MODEL_ZOO, entry.name, entry)
    return entry


def test_path_manager_resolves_seg_zoo_uri(server, payload, cache, monkeypatch):
    url = server.url("/zoo/" + FILE_NAME)
    _add_test_entry(monkeypatch, url, hashlib.sha256(payload).hexdigest())

    local = PathManager.get_local_path("seg_zoo://tests/local/linear")
    assert local == str(cache / "tests/local/linear" / FILE_NAME)
    assert open(local, "rb").read() == payload
    assert PathManager.exists("seg_zoo://tests/local/linear")
    with PathManager.open("seg_zoo://tests/local/linear", "rb") as f:
        assert f.read() == payload
    assert len(server.requests) == 1


def test_detection_checkpointer_loads_seg_zoo_uri(server, payload, monkeypatch):
    """What ``MODEL.WEIGHTS seg_zoo://...`` does: DetectionCheckpointer through PathManager."""
    torch = pytest.importorskip("torch")
    _add_test_entry(
        monkeypatch, server.url("/zoo/" + FILE_NAME), hashlib.sha256(payload).hexdigest()
    )
    model = torch.nn.Linear(3, 2)
    DetectionCheckpointer(model).load("seg_zoo://tests/local/linear")
    expected = pickle.loads(payload)["model"]
    np.testing.assert_array_equal(model.weight.detach().numpy(), expected["weight"])
    np.testing.assert_array_equal(model.bias.detach().numpy(), expected["bias"])


def test_unknown_name_lists_known_names():
    with pytest.raises(UnknownModelError) as info:
        PathManager.get_local_path("seg_zoo://mask2former/coco/panoptic/maskformer2_R50")
    message = str(info.value)
    assert "mask2former/coco/panoptic/maskformer2_R50_bs16_50ep" in message
    # every name of MODEL_ZOO.md's first and last rows is listed
    assert "mask2former/mapillary_vistas/panoptic/maskformer2_swin_large_IN21k_384_bs16_300k" in (
        message
    )
    assert not PathManager.exists("seg_zoo://no/such/model")


# --------------------------------------------------------------------------------------------
# Segmenter releases: downloaded as the official checkpoint.pth, converted on first use
# --------------------------------------------------------------------------------------------
def test_segmenter_release_is_converted_on_first_use(cache, monkeypatch):
    import dataclasses

    import torch
    from detectron2.modeling import build_model

    from seg_zoo.config import load_config

    blob, official = official_tiny_mask_bytes()
    srv = LocalServer({"/ade20k/seg_tiny_mask/checkpoint.pth": blob})
    try:
        real = catalog.get_entry("seg_zoo://segmenter/ade20k/seg_tiny_mask")
        assert real.converter == "segmenter"
        entry = dataclasses.replace(
            real,
            url=srv.url("/ade20k/seg_tiny_mask/checkpoint.pth"),
            sha256=hashlib.sha256(blob).hexdigest(),
        )
        monkeypatch.setitem(catalog.MODEL_ZOO, entry.name, entry)

        local = PathManager.get_local_path("seg_zoo://segmenter/ade20k/seg_tiny_mask")
        assert local == str(cache / "segmenter/ade20k/seg_tiny_mask" / "model_seg_zoo.pkl")
        # the official file is kept beside it, verified
        pth = cache / "segmenter/ade20k/seg_tiny_mask" / "checkpoint.pth"
        assert hashlib.sha256(pth.read_bytes()).hexdigest() == entry.sha256
        stamp = (cache / "segmenter/ade20k/seg_tiny_mask" / "model_seg_zoo.pkl").stat().st_mtime_ns
        # a second use neither downloads nor converts again
        assert PathManager.get_local_path("seg_zoo://segmenter/ade20k/seg_tiny_mask") == local
        assert len(srv.requests) == 1
        assert os_stat_ns(local) == stamp

        cfg = load_config(str(entry.config_path), ["MODEL.DEVICE", "cpu"])
        model = build_model(cfg)
        reports = []
        checkpointer = DetectionCheckpointer(model)
        load_model = checkpointer._load_model
        checkpointer._load_model = lambda ckpt: reports.append(load_model(ckpt)) or reports[-1]
        checkpointer.load("seg_zoo://segmenter/ade20k/seg_tiny_mask")
        assert not reports[0].missing_keys and not reports[0].unexpected_keys
        state = model.state_dict()
        # names spelled out by hand: encoder.* -> backbone.*, decoder.* -> sem_seg_head.*
        torch.testing.assert_close(state["backbone.pos_embed"], official["encoder.pos_embed"])
        torch.testing.assert_close(
            state["backbone.blocks.11.mlp.fc2.weight"], official["encoder.blocks.11.mlp.fc2.weight"]
        )
        torch.testing.assert_close(state["sem_seg_head.cls_emb"], official["decoder.cls_emb"])
    finally:
        srv.close()


def os_stat_ns(path: str) -> int:
    import os

    return os.stat(path).st_mtime_ns


def test_segmenter_release_with_wrong_class_count_is_refused(cache, monkeypatch):
    import dataclasses

    blob, _ = official_tiny_mask_bytes()
    srv = LocalServer({"/x/checkpoint.pth": blob})
    try:
        # the 150-class ADE20K release under an entry whose config has Cityscapes' 19 classes
        entry = dataclasses.replace(
            catalog.get_entry("segmenter/cityscapes/seg_large_mask"),
            url=srv.url("/x/checkpoint.pth"),
            sha256=None,
        )
        monkeypatch.setitem(catalog.MODEL_ZOO, entry.name, entry)
        with pytest.raises(ValueError, match=r"150 classes.*NUM_CLASSES 19"):
            PathManager.get_local_path("seg_zoo://segmenter/cityscapes/seg_large_mask")
        assert not (cache / "segmenter/cityscapes/seg_large_mask" / "model_seg_zoo.pkl").exists()
    finally:
        srv.close()


def test_every_catalog_converter_has_an_implementation():
    # the catalog validates names (it cannot import download.py: download imports it)
    assert set(download._CONVERTERS) == {c for c in catalog.CONVERTERS if c is not None}


def test_unknown_converter_is_refused():
    with pytest.raises(ValueError, match="unknown converter 'zip'"):
        ModelZooEntry(name="x", config="c.yaml", url="https://x/y.pth", converter="zip")
