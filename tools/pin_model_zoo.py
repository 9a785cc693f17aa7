#!/usr/bin/env python
"""Pin the sha256 of model-zoo files: download, check that each builds its model, record.

For every selected catalog entry (default: those without a pinned sha256) the tool

1. downloads the file into ``$SEG_ZOO_CACHE`` (resumable, as ``seg_zoo://`` does), or takes a
   local copy given with ``--file NAME=PATH``;
2. converts it when the entry has a converter (Segmenter and Swin UperNet releases);
3. builds the model of the entry's config on CPU and loads the weights into it through seg_zoo's
   checkpointer: a missing, unexpected or mis-shaped key refuses the pin (the file is then not
   the model the row claims, or seg_zoo does not build that model as the official code does);
4. records the digest of the downloaded file in ``seg_zoo/model_zoo/pins.py`` and rewrites the
   sha256 table of MODEL_ZOO.md from those pins.

Downloads stay in the cache, so the first ``seg_zoo://`` use afterwards downloads nothing. An
entry that already has a pin is verified against it (a mismatch is an error and changes
nothing; ``--repin`` downloads it again and replaces the pin after the checks). Entries that fail
are reported and left unpinned; each successful pin is written at once (pins.py replaced
atomically), so an interrupted run keeps what it had done. Exit status 1 if any failed.
``SEG_ZOO_REQUIRE_SHA256`` is ignored here: pinning is how a digest becomes known.

Examples::

    python tools/pin_model_zoo.py                          # every unpinned entry
    python tools/pin_model_zoo.py 'mask2former/coco/*'     # glob patterns on catalog names
    python tools/pin_model_zoo.py --file \\
        mask2former/coco/panoptic/maskformer2_R50_bs16_50ep=~/Downloads/model_final_94dc52.pkl
    python tools/pin_model_zoo.py --repin 'segmenter/*'   # the files changed upstream: re-check
    python tools/pin_model_zoo.py --render-only           # only rewrite MODEL_ZOO.md's table
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import logging
import os
import re
import sys
import tempfile
import urllib.parse
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing seg_zoo

from seg_zoo.model_zoo import catalog, download  # noqa: E402
from seg_zoo.model_zoo.catalog import ModelZooEntry  # noqa: E402
from seg_zoo.model_zoo.safe_load import CheckpointLoadError  # noqa: E402

logger = logging.getLogger("seg_zoo.pin_model_zoo")

PINS_FILE = REPO / "seg_zoo" / "model_zoo" / "pins.py"
MODEL_ZOO_MD = REPO / "MODEL_ZOO.md"
MD_BEGIN = "<!-- sha256 table: written by tools/pin_model_zoo.py, do not edit by hand -->"
MD_END = "<!-- end of sha256 table -->"
NOT_PINNED = "not pinned yet"
HEX64 = re.compile(r"[0-9a-f]{64}")


class PinError(Exception):
    """An entry that cannot be pinned; the message says which file and why."""


# --------------------------------------------------------------------------------------------
# The pins file and the MODEL_ZOO.md table
# --------------------------------------------------------------------------------------------
def read_pins(path: Path) -> tuple[dict[str, str], str]:
    """The ``SHA256`` dict of a pins module, read without importing it, and the text before it
    (the module's docstring), which a rewrite keeps."""
    text = path.read_text()
    tree = ast.parse(text, filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Assign):
            targets = node.targets
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "SHA256" for t in targets) and node.value:
            try:
                pins = ast.literal_eval(node.value)
            except ValueError as e:
                raise ValueError(f"{path}: SHA256 must be a literal dict of strings ({e})") from e
            if not isinstance(pins, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and HEX64.fullmatch(v)
                for k, v in pins.items()
            ):
                raise ValueError(
                    f"{path}: SHA256 must be a dict of name -> 64 lowercase hex digits"
                )
            header = "".join(text.splitlines(keepends=True)[: node.lineno - 1])
            return pins, header
    raise ValueError(f"{path}: no SHA256 = {{...}} assignment found")


def render_pins(pins: dict[str, str], order: list[str], header: str) -> str:
    """The pins module's text: ``header``, then the entries in catalog order, one per line."""
    unknown = sorted(set(pins) - set(order))
    if unknown:
        raise ValueError(f"pins for names that are not in the catalog: {unknown}")
    lines = [header.rstrip("\n") + "\n", "SHA256: dict[str, str] = {"]
    lines += [f'    "{name}": "{pins[name]}",' for name in order if name in pins]
    lines.append("}")
    text = "\n".join(lines) + "\n"
    return text.replace("{\n}", "{}")


def render_md_table(names: list[str], pins: dict[str, str]) -> str:
    """MODEL_ZOO.md's sha256 table (between its markers) for ``names`` in that order."""
    rows = [MD_BEGIN, "", "| model | sha256 of the download |", "|---|---|"]
    for name in names:
        digest = f"`{pins[name]}`" if name in pins else NOT_PINNED
        rows.append(f"| `{catalog.URI_PREFIX}{name}` | {digest} |")
    rows += ["", MD_END]
    return "\n".join(rows)


def replace_md_table(text: str, table: str, where: str) -> str:
    begin, end = text.find(MD_BEGIN), text.find(MD_END)
    if begin < 0 or end < begin or text.count(MD_BEGIN) != 1 or text.count(MD_END) != 1:
        raise ValueError(
            f"{where}: expected exactly one sha256 table between the lines {MD_BEGIN!r} and "
            f"{MD_END!r}"
        )
    return text[:begin] + table + text[end + len(MD_END) :]


# --------------------------------------------------------------------------------------------
# Checking one file
# --------------------------------------------------------------------------------------------
def load_report(entry: ModelZooEntry, weights: Path) -> list[str]:
    """What is wrong when ``weights`` is loaded into the model of ``entry.config``: missing,
    unexpected and mis-shaped keys, one line each (empty when the file is that model)."""
    import torch
    from detectron2.modeling import build_model

    import seg_zoo  # noqa: F401  (registers seg_zoo's models)
    from seg_zoo.config import load_config
    from seg_zoo.engine.checkpoint import Checkpointer

    cfg = load_config(str(entry.config_path), ["MODEL.DEVICE", "cpu"])
    # The checkpointers log each mismatched key on its own; the report below says it once.
    quiet = [logging.getLogger(n) for n in ("detectron2.checkpoint", "fvcore.common.checkpoint")]
    levels = [q.level for q in quiet]
    try:
        for q in quiet:
            q.setLevel(logging.ERROR)
        with torch.no_grad():
            model = build_model(cfg)
            checkpointer = Checkpointer(model)
            incompatible = checkpointer._load_model(checkpointer._load_file(str(weights)))
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    problems = [
        f"shape of {k}: file {tuple(shape_file)}, model {tuple(shape_model)}"
        for k, shape_file, shape_model in incompatible.incorrect_shapes
    ]
    # fvcore drops mis-shaped tensors before loading, so they come back as "missing" too
    mis_shaped = {k for k, _, _ in incompatible.incorrect_shapes}
    problems += [
        f"missing in the file: {k}" for k in incompatible.missing_keys if k not in mis_shaped
    ]
    problems += [f"not in the model: {k}" for k in incompatible.unexpected_keys]
    return problems


def check_weights(entry: ModelZooEntry, path: Path) -> None:
    """Raise ``PinError`` unless ``path`` (converted first, if the entry says so) is exactly the
    model that ``entry.config`` builds."""
    with tempfile.TemporaryDirectory() as tmp:
        weights = path
        if entry.converter is not None:
            weights = Path(tmp) / "converted.pkl"
            try:
                download.convert_download(entry, path, weights)
            except (CheckpointLoadError, OSError, KeyError, ValueError) as e:
                raise PinError(f"{path}: converting it ({entry.converter}) failed: {e}") from e
        try:
            problems = load_report(entry, weights)
        except (CheckpointLoadError, OSError, ValueError, RuntimeError) as e:
            raise PinError(f"{path}: could not be loaded: {e}") from e
    if problems:
        shown = "\n    ".join(problems[:20])
        more = f"\n    ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise PinError(
            f"{path} is not the model of {entry.config}: {len(problems)} key problem(s)\n"
            f"    {shown}{more}"
        )


class Outcome(NamedTuple):
    name: str
    status: str  # "pinned", "verified", "repinned" or "FAILED"
    detail: str


def pin_entry(
    entry: ModelZooEntry,
    pinned: str | None,
    *,
    local: Path | None,
    repin: bool,
    progress: bool,
) -> tuple[str, str]:
    """(digest, status) for one entry; raises ``PinError``."""
    if local is not None:
        if not local.is_file():
            raise PinError(f"{local} (given for {entry.name}) is not a file")
        expected_name = Path(urllib.parse.urlsplit(entry.url).path).name
        if local.name != expected_name:
            raise PinError(
                f"{local} is named {local.name!r} but {entry.name}'s download is "
                f"{expected_name!r} ({entry.url}); rename it if it really is that file"
            )
        path = local
    else:
        try:
            path = Path(
                download.download_file(
                    entry.url,
                    download.entry_cache_path(entry),
                    sha256=None if repin else pinned,
                    # the digest is what this tool establishes: SEG_ZOO_REQUIRE_SHA256, which
                    # refuses unpinned files, does not apply here
                    require_sha256=False,
                    progress=progress,
                    force=repin,
                )
            )
        except OSError as e:  # ChecksumError included: the pinned digest no longer matches
            raise PinError(str(e)) from e
    # download_file has just verified a pinned file; anything else is hashed here
    verified = local is None and pinned is not None and not repin
    digest = pinned if verified else download.sha256_of(path)
    if pinned is not None and digest != pinned and not repin:
        raise PinError(
            f"{path}: sha256 {digest} differs from the pinned {pinned}; nothing changed "
            "(--repin replaces the pin after checking the file)"
        )
    check_weights(entry, path)
    if pinned is None:
        return digest, "pinned"
    return digest, "verified" if digest == pinned else "repinned"


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def select(
    names: list[str],
    patterns: list[str],
    pins: dict[str, str],
    every: bool,
    local: dict,
    repin: bool = False,
) -> list[str]:
    """Entries to process: ``patterns`` (globs on names); else the ``local`` files given; else
    every entry (``every``), the pinned ones (``repin``) or the unpinned ones."""
    if not patterns:
        if every:
            return list(names)
        if local:  # only the files given
            return [n for n in names if n in local]
        if repin:
            return [n for n in names if n in pins]
        return [n for n in names if n not in pins]
    chosen = []
    for pattern in patterns:
        pattern = pattern.removeprefix(catalog.URI_PREFIX)
        matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise SystemExit(
                f"error: {pattern!r} matches no catalog name; names look like "
                f"{names[0]!r} (python -c 'import seg_zoo.model_zoo as z; print(z.list_models())')"
            )
        chosen += [n for n in matched if n not in chosen]
    return [n for n in names if n in chosen]


def parse_local_files(items: list[str], names: list[str]) -> dict[str, Path]:
    local = {}
    for item in items:
        name, sep, path = item.partition("=")
        name = name.removeprefix(catalog.URI_PREFIX)
        if not sep or not path:
            raise SystemExit(f"error: --file expects NAME=PATH, got {item!r}")
        if name not in names:
            raise SystemExit(f"error: --file {item!r}: {name!r} is not a catalog name")
        local[name] = Path(path).expanduser()
    return local


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "names", nargs="*", help="catalog names or glob patterns (default: every unpinned entry)"
    )
    parser.add_argument("--all", action="store_true", help="every entry, pinned ones verified")
    parser.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="hash this local copy instead of downloading (its file name must be the URL's)",
    )
    parser.add_argument(
        "--repin",
        action="store_true",
        help="download again and replace the pin after the checks (default: every pinned entry)",
    )
    parser.add_argument(
        "--render-only", action="store_true", help="only rewrite MODEL_ZOO.md from the pins"
    )
    parser.add_argument("--dry-run", action="store_true", help="report; write nothing")
    parser.add_argument("--no-progress", action="store_true", help="no download progress bar")
    parser.add_argument("--pins-file", type=Path, default=PINS_FILE, help=argparse.SUPPRESS)
    parser.add_argument("--model-zoo-md", type=Path, default=MODEL_ZOO_MD, help=argparse.SUPPRESS)
    return parser


def _write_atomically(path: Path, text: str) -> bool:
    """Replace ``path`` by ``text`` (via a temporary file and a rename); False if unchanged."""
    if path.read_text() == text:
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def _write(args, pins: dict[str, str], names: list[str], header: str) -> None:
    """pins.py and MODEL_ZOO.md's table from ``pins``."""
    if args.dry_run:
        return
    md_path = args.model_zoo_md
    md_text = replace_md_table(md_path.read_text(), render_md_table(names, pins), str(md_path))
    if _write_atomically(args.pins_file, render_pins(pins, names, header)):
        print(f"  wrote {args.pins_file}", flush=True)
    if _write_atomically(md_path, md_text):
        print(f"  wrote {md_path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    names = list(catalog.MODEL_ZOO)
    pins, header = read_pins(args.pins_file)
    stale = {n: d for n, d in pins.items() if n not in catalog.MODEL_ZOO}
    for name, digest in stale.items():
        # printed so that the digest is not lost with the entry
        print(f"dropping the pin of {name!r} (no such catalog entry any more): {digest}")
        del pins[name]
    # Both files must be writable at the end: fail now, not after hours of downloads.
    replace_md_table(args.model_zoo_md.read_text(), "", str(args.model_zoo_md))
    local = parse_local_files(args.file, names)
    outcomes: list[Outcome] = []

    if not args.render_only:
        chosen = select(names, args.names, pins, args.all, local, args.repin)
        if not chosen:
            print("nothing to do: every entry is pinned (--all verifies them, --repin renews them)")
        for i, name in enumerate(chosen, 1):
            entry = catalog.MODEL_ZOO[name]
            print(f"[{i}/{len(chosen)}] {name}", flush=True)
            try:
                digest, status = pin_entry(
                    entry,
                    pins.get(name),
                    local=local.get(name),
                    repin=args.repin,
                    progress=not args.no_progress,
                )
            except PinError as e:
                outcomes.append(Outcome(name, "FAILED", str(e)))
                print(f"  FAILED: {e}", flush=True)
                continue
            except Exception as e:  # a model that fails to build, a converter bug: go on
                logger.exception("checking %s failed", name)
                outcomes.append(Outcome(name, "FAILED", f"{type(e).__name__}: {e}"))
                print(f"  FAILED: {type(e).__name__}: {e}", flush=True)
                continue
            pins[name] = digest
            outcomes.append(Outcome(name, status, digest))
            print(f"  {status}: {digest}", flush=True)
            _write(args, pins, names, header)  # each pin is kept as soon as it is known

    _write(args, pins, names, header)
    if args.dry_run:
        print("dry run: nothing written")

    failed = [o for o in outcomes if o.status == "FAILED"]
    if outcomes:
        done = len(outcomes) - len(failed)
        print(f"\n{done} of {len(outcomes)} entries pinned or verified; {len(failed)} failed")
        for o in failed:
            print(f"  {o.name}: {o.detail.splitlines()[0]}")
    unpinned = [n for n in names if n not in pins]
    print(f"{len(names) - len(unpinned)} of {len(names)} catalog entries have a pinned sha256")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
