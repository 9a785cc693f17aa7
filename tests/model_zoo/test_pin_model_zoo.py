"""tools/pin_model_zoo.py: download, check against the config's model, record the sha256.

Files are served by a local HTTP server (``zoo_helpers.LocalServer``) under catalog entries whose
URL is redirected to it; the pins file and MODEL_ZOO.md are temporary copies. Expected digests
come from ``hashlib`` on the served bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from zoo_helpers import LocalServer, load_tool, official_tiny_mask_bytes

from seg_zoo.model_zoo import catalog

REPO = Path(__file__).resolve().parents[2]
TINY = "segmenter/ade20k/seg_tiny_mask"
SMALL = "segmenter/ade20k/seg_small_mask"


tool = load_tool("pin_model_zoo.py")


@pytest.fixture
def docs(tmp_path):
    """Copies of the pins module and MODEL_ZOO.md, and the tool arguments that point at them."""
    pins = tmp_path / "pins.py"
    md = tmp_path / "MODEL_ZOO.md"
    shutil.copy(REPO / "seg_zoo" / "model_zoo" / "pins.py", pins)
    shutil.copy(REPO / "MODEL_ZOO.md", md)
    return pins, md, ["--pins-file", str(pins), "--model-zoo-md", str(md), "--no-progress"]


@pytest.fixture(scope="module")
def tiny_blob() -> bytes:
    return official_tiny_mask_bytes()[0]


@pytest.fixture
def served(tiny_blob, monkeypatch):
    """The Seg-T-Mask/16 file served for the Seg-T entry *and* for the Seg-S entry."""
    srv = LocalServer({"/tiny/checkpoint.pth": tiny_blob})
    for name in (TINY, SMALL):
        entry = dataclasses.replace(
            catalog.get_entry(name), url=srv.url("/tiny/checkpoint.pth"), sha256=None
        )
        monkeypatch.setitem(catalog.MODEL_ZOO, name, entry)
    yield srv
    srv.close()


def _pins(path: Path) -> dict:
    namespace = {}
    exec(path.read_text(), namespace)  # the file is Python the catalog imports
    return namespace["SHA256"]


def _md_row(md: Path, name: str) -> str:
    rows = [line for line in md.read_text().splitlines() if f"`seg_zoo://{name}`" in line]
    assert len(rows) == 1
    return rows[0]


def test_pins_a_download_that_builds_its_model(served, tiny_blob, docs, capsys):
    pins, md, args = docs
    digest = hashlib.sha256(tiny_blob).hexdigest()
    assert tool.main([TINY, *args]) == 0
    assert _pins(pins) == {TINY: digest}
    assert _md_row(md, TINY) == f"| `seg_zoo://{TINY}` | `{digest}` |"
    assert _md_row(md, SMALL) == f"| `seg_zoo://{SMALL}` | not pinned yet |"
    assert f"pinned: {digest}" in capsys.readouterr().out

    # again: the cached file is verified against the pin, nothing downloaded, nothing rewritten
    before = (pins.read_text(), md.read_text())
    assert tool.main([TINY, *args]) == 0
    assert f"verified: {digest}" in capsys.readouterr().out
    assert len(served.requests) == 1
    assert (pins.read_text(), md.read_text()) == before


def test_wrong_architecture_is_not_pinned(served, docs, capsys):
    # Seg-T's file (192 wide) under the Seg-S entry (384 wide): converted, then refused
    pins, md, args = docs
    before = (pins.read_text(), md.read_text())
    assert tool.main([SMALL, *args]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "checkpoint.pth is not the model of" in out
    assert "seg_small_mask.yaml" in out
    # 185 official tensors - the unused ImageNet head (2) - mask_norm (150 wide in both) = 181
    assert "181 key problem(s)" in out
    assert "shape of backbone.blocks.0.attn.qkv.weight: file (576, 192), model (1152, 384)" in out
    assert (pins.read_text(), md.read_text()) == before


def test_a_changed_file_keeps_the_old_pin_unless_repinned(served, tiny_blob, docs, capsys):
    pins, md, args = docs
    stale = "0" * 64
    pins.write_text(pins.read_text().replace("= {}", f'= {{\n    "{TINY}": "{stale}",\n}}'))
    assert _pins(pins) == {TINY: stale}
    assert tool.main([TINY, *args]) == 1
    out = capsys.readouterr().out
    assert "sha256 mismatch" in out and stale in out
    assert _pins(pins) == {TINY: stale}

    assert tool.main([TINY, "--repin", *args]) == 0
    assert "repinned" in capsys.readouterr().out
    assert _pins(pins) == {TINY: hashlib.sha256(tiny_blob).hexdigest()}


def test_stale_pins_strict_env_and_broken_docs(served, tiny_blob, docs, capsys, monkeypatch):
    pins, md, args = docs
    gone = "segmenter/ade20k/retired_model"
    pins.write_text(pins.read_text().replace("= {}", f'= {{\n    "{gone}": "{"1" * 64}",\n}}'))
    # SEG_ZOO_REQUIRE_SHA256 refuses unpinned downloads everywhere but in the pinning tool
    monkeypatch.setenv("SEG_ZOO_REQUIRE_SHA256", "1")
    assert tool.main([TINY, *args]) == 0
    out = capsys.readouterr().out
    assert f"dropping the pin of {gone!r} (no such catalog entry any more): {'1' * 64}" in out
    assert _pins(pins) == {TINY: hashlib.sha256(tiny_blob).hexdigest()}
    assert not list(pins.parent.glob("*.tmp"))  # written through a temporary file, renamed
    # a MODEL_ZOO.md without its table markers stops the run before anything is downloaded
    md.write_text("no table here\n")
    with pytest.raises(ValueError, match="expected exactly one sha256 table"):
        tool.main([SMALL, *args])
    assert len(served.requests) == 1


def test_an_unexpected_error_fails_one_entry_and_keeps_the_others(
    served, tiny_blob, docs, capsys, monkeypatch
):
    pins, _, args = docs

    def broken(entry, path):
        if entry.name == SMALL:
            raise RuntimeError("model failed to build")
        return original(entry, path)

    original = tool.check_weights
    monkeypatch.setattr(tool, "check_weights", broken)
    assert tool.main([SMALL, TINY, *args]) == 1
    out = capsys.readouterr().out
    assert "FAILED: RuntimeError: model failed to build" in out
    assert _pins(pins) == {TINY: hashlib.sha256(tiny_blob).hexdigest()}


def test_default_selection_is_the_unpinned_entries():
    names = list(catalog.MODEL_ZOO)
    assert tool.select(names, [], {}, False, {}) == names
    assert tool.select(names, [], {TINY: "a" * 64}, False, {}) == [n for n in names if n != TINY]
    assert tool.select(names, [], {TINY: "a" * 64}, True, {}) == names
    assert tool.select(names, [], {}, False, {SMALL: Path("x")}) == [SMALL]
    # --repin alone renews every pinned entry
    assert tool.select(names, [], {TINY: "a" * 64}, False, {}, repin=True) == [TINY]
    assert tool.select(names, ["seg_zoo://segmenter/cityscapes/*"], {}, False, {}) == [
        "segmenter/cityscapes/seg_large_mask"
    ]
    with pytest.raises(SystemExit, match="matches no catalog name"):
        tool.select(names, ["segmenter/nowhere/*"], {}, False, {})


def test_local_copies(tmp_path, tiny_blob, docs, capsys):
    pins, md, args = docs
    wrong_name = tmp_path / "seg_tiny_mask.pth"
    wrong_name.write_bytes(tiny_blob)
    assert tool.main(["--file", f"{TINY}={wrong_name}", *args]) == 1
    assert "named 'seg_tiny_mask.pth' but" in capsys.readouterr().out

    truncated = tmp_path / "cut" / "checkpoint.pth"
    truncated.parent.mkdir()
    truncated.write_bytes(tiny_blob[: len(tiny_blob) // 2])
    assert tool.main(["--file", f"{TINY}={truncated}", *args]) == 1
    out = capsys.readouterr().out
    assert f"{truncated}: converting it (segmenter) failed" in out
    assert _pins(pins) == {}

    good = tmp_path / "good" / "checkpoint.pth"
    good.parent.mkdir()
    good.write_bytes(tiny_blob)
    assert tool.main(["--file", f"seg_zoo://{TINY}={good}", *args]) == 0
    assert _pins(pins) == {TINY: hashlib.sha256(tiny_blob).hexdigest()}

    with pytest.raises(SystemExit, match="not a catalog name"):
        tool.main(["--file", f"segmenter/x={good}", *args])


def test_load_report_lists_every_key_problem(tmp_path):
    """A detectron2 .pkl of the Seg-T model with one key dropped, one added, one reshaped."""
    from detectron2.modeling import build_model

    from seg_zoo.config import load_config

    entry = catalog.get_entry(TINY)
    model = build_model(load_config(str(entry.config_path), ["MODEL.DEVICE", "cpu"]))
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    assert tool.load_report(entry, _write_pkl(tmp_path / "exact.pkl", state)) == []

    state.pop("sem_seg_head.cls_emb")
    state["sem_seg_head.extra"] = np.zeros(3, np.float32)
    state["backbone.pos_embed"] = np.zeros((1, 10, 192), np.float32)
    report = tool.load_report(entry, _write_pkl(tmp_path / "bad.pkl", state))
    assert sorted(report) == [
        "missing in the file: sem_seg_head.cls_emb",
        "not in the model: sem_seg_head.extra",
        "shape of backbone.pos_embed: file (1, 10, 192), model (1, 1025, 192)",
    ]


def _write_pkl(path: Path, state: dict) -> Path:
    with open(path, "wb") as f:
        pickle.dump({"model": state, "__author__": "seg_zoo tests"}, f)
    return path


def test_pins_file_round_trip_and_bad_input(tmp_path):
    names = list(catalog.MODEL_ZOO)
    pins, header = tool.read_pins(REPO / "seg_zoo" / "model_zoo" / "pins.py")
    text = tool.render_pins({SMALL: "b" * 64, TINY: "a" * 64}, names, header)
    path = tmp_path / "pins.py"
    path.write_text(text)
    assert tool.read_pins(path) == ({SMALL: "b" * 64, TINY: "a" * 64}, header)
    # catalog order, not insertion order
    assert text.index(TINY) < text.index(SMALL)
    with pytest.raises(ValueError, match="not in the catalog"):
        tool.render_pins({"no/such/model": "a" * 64}, names, header)

    for bad in ("{'a': 1}", "{'a': 'abc'}", "{'a': '" + "A" * 64 + "'}", "['a']"):
        path.write_text(f"SHA256 = {bad}\n")
        with pytest.raises(ValueError, match="pins.py: SHA256 must be a dict of name -> 64 lower"):
            tool.read_pins(path)
    path.write_text("X = 1\n")
    with pytest.raises(ValueError, match="pins.py: no SHA256"):
        tool.read_pins(path)
    md = "intro\n" + tool.MD_BEGIN + "\nold\n" + tool.MD_END + "\noutro\n"
    assert tool.replace_md_table(md, "NEW", "x.md") == "intro\nNEW\noutro\n"
    with pytest.raises(ValueError, match="x.md: expected exactly one sha256 table"):
        tool.replace_md_table("no markers", "NEW", "x.md")


def test_repository_pins_and_model_zoo_md_agree():
    """MODEL_ZOO.md's table and pins.py are what the tool writes from the catalog's pins."""
    names = list(catalog.MODEL_ZOO)
    pins_path = REPO / "seg_zoo" / "model_zoo" / "pins.py"
    pins, header = tool.read_pins(pins_path)
    assert pins == {n: e.sha256 for n, e in catalog.MODEL_ZOO.items() if e.sha256}
    assert tool.render_pins(pins, names, header) == pins_path.read_text()
    md = (REPO / "MODEL_ZOO.md").read_text()
    assert tool.render_md_table(names, pins) in md
