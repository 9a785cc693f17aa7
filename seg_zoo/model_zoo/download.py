"""Cached, resumable, sha256-verified downloads of model-zoo weights.

Files land under ``$SEG_ZOO_CACHE`` (default ``~/.cache/seg_zoo``). A download is written to
``<file>.part`` and renamed into place only after its sha256 was checked, so a file at the final
path is always complete; an interrupted download leaves the ``.part`` behind and the next call
asks the server for the rest (HTTP ``Range``), starting over when the server does not honour it.

sha256 policy:
- known digest: verified after every download and on every cache hit; a mismatch deletes the
  file and raises ``ChecksumError`` naming the file and both digests;
- unknown digest (``None``): the file is used, with a warning that gives its digest so that it
  can be pinned; unless ``require_sha256=True`` (a catalog entry's ``require_sha256``) or, when
  the caller leaves ``require_sha256=None``, the environment sets ``SEG_ZOO_REQUIRE_SHA256=1``:
  then nothing is downloaded or used. ``require_sha256=False`` allows the download whatever the
  environment says (the pinning tool, whose job is to learn the digest).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from iopath.common.file_io import file_lock

from .catalog import ModelZooEntry

try:
    from tqdm import tqdm as _tqdm
except ImportError:  # tqdm is optional: fall back to a plain progress line
    _tqdm = None

logger = logging.getLogger(__name__)

ALLOWED_SCHEMES = ("http", "https", "file")
_CHUNK = 1 << 20


class ChecksumError(OSError):
    """A downloaded or cached file whose sha256 is not the expected one."""


class MissingChecksumError(OSError):
    """A download refused because its sha256 is required but not known."""


def cache_dir() -> Path:
    """Where downloads are kept: ``$SEG_ZOO_CACHE``, else ``~/.cache/seg_zoo``."""
    root = os.environ.get("SEG_ZOO_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "seg_zoo"


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _require_sha256_from_env() -> bool:
    return os.environ.get("SEG_ZOO_REQUIRE_SHA256", "").strip().lower() in ("1", "true", "yes")


def _check_url(url: str) -> str:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise ValueError(
            f"refusing to download {url!r}: only {', '.join(ALLOWED_SCHEMES)} URLs are allowed"
        )
    return scheme


class _PlainProgress:
    """A one-line progress report on stderr, for when tqdm is not installed."""

    def __init__(self, total: int | None, initial: int, desc: str):
        self.total, self.n, self.desc = total, initial, desc
        self._last = 0.0

    def update(self, n: int) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= 0.5:
            self._last = now
            self._write()

    def _write(self) -> None:
        done = f"{self.n / 2**20:.1f} MiB"
        if self.total:
            done += f" / {self.total / 2**20:.1f} MiB ({100 * self.n / self.total:.0f}%)"
        sys.stderr.write(f"\r{self.desc}: {done}")
        sys.stderr.flush()

    def close(self) -> None:
        self._write()
        sys.stderr.write("\n")
        sys.stderr.flush()


def _progress_bar(total: int | None, initial: int, desc: str, enabled: bool):
    if not enabled:
        return None
    if _tqdm is not None:
        return _tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
        )
    return _PlainProgress(total, initial, desc)


def _open_url(url: str, offset: int, timeout: float):
    headers = {"User-Agent": "seg_zoo"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _fetch_into_part(url: str, part: Path, progress: bool, timeout: float) -> None:
    """Fill ``part`` with the bytes of ``url``, continuing from what ``part`` already holds."""
    offset = part.stat().st_size if part.exists() else 0
    scheme = _check_url(url)
    if scheme == "file":
        offset = 0  # a local copy is cheap: no point in resuming one
    try:
        response = _open_url(url, offset, timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # The part is at least as long as the file (or stale): start over.
            logger.warning("server refused to resume %s (HTTP 416); downloading it again", url)
            offset = 0
            response = _open_url(url, 0, timeout)
        else:
            raise OSError(f"downloading {url} failed: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise OSError(f"downloading {url} failed: {e.reason}") from e

    with response:
        status = getattr(response, "status", None)
        if offset and status != 206:
            # The server ignored the Range header and sends the whole file.
            logger.info("server does not resume downloads; restarting %s", url)
            offset = 0
        elif offset:
            logger.info("resuming %s at byte %d", url, offset)
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        bar = _progress_bar(total, offset, part.name[: -len(".part")], progress)
        try:
            with open(part, "ab" if offset else "wb") as f:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    f.write(block)
                    if bar is not None:
                        bar.update(len(block))
        except (http.client.HTTPException, OSError) as e:
            raise OSError(
                f"downloading {url} was interrupted ({e!r}); {part.stat().st_size} bytes are "
                f"kept in {part} and the next call resumes from there"
            ) from e
        finally:
            if bar is not None:
                bar.close()
    size = part.stat().st_size
    if total is not None and size != total:
        raise OSError(
            f"downloading {url} stopped early: {size} of {total} bytes are in {part}; "
            "call again to resume"
        )


def download_file(
    url: str,
    dst: str | os.PathLike,
    *,
    sha256: str | None = None,
    require_sha256: bool | None = None,
    progress: bool = True,
    force: bool = False,
    timeout: float = 60.0,
) -> str:
    """Download ``url`` to ``dst`` (unless a verified copy is there already); returns ``dst``.

    See the module docstring for resuming and for the sha256 policy. ``force`` downloads again
    even when ``dst`` exists.
    """
    _check_url(url)
    dst = Path(dst)
    expected = sha256.lower() if sha256 else None
    if require_sha256 is None:
        require_sha256 = _require_sha256_from_env()
        why = "SEG_ZOO_REQUIRE_SHA256"
    else:
        why = "require_sha256=True (set by its catalog entry)"
    if expected is None and require_sha256:
        raise MissingChecksumError(
            f"refusing to use {url} (to {dst}): {why} requires a sha256, and none is known"
        )

    # Data-parallel workers all resolve MODEL.WEIGHTS at once: one downloads, the others wait
    # for it instead of appending to the same .part.
    with file_lock(str(dst)):
        if dst.exists() and not force:
            _verify(dst, expected, url, origin="cached file")
            return str(dst)

        part = dst.with_name(dst.name + ".part")
        if force and part.exists():
            part.unlink()
        _fetch_into_part(url, part, progress, timeout)
        _verify(part, expected, url, origin="download", final=dst)
        os.replace(part, dst)  # atomic: readers see nothing or the whole verified file
    return str(dst)


def _verify(
    path: Path, expected: str | None, url: str, *, origin: str, final: Path | None = None
) -> None:
    if expected is None:
        if final is None:
            # A cache hit: hashing it only to print the digest again would cost seconds.
            logger.warning("%s %s (from %s) has no pinned sha256: not verified", origin, path, url)
        else:
            logger.warning(
                "%s %s (from %s) has no pinned sha256, so it was not verified; its sha256 is %s",
                origin,
                final,
                url,
                sha256_of(path),
            )
        return
    actual = sha256_of(path)
    if actual != expected:
        path.unlink()
        raise ChecksumError(
            f"sha256 mismatch for {path} (from {url}): expected {expected}, got {actual}. "
            "The file was deleted; the next call downloads it again."
        )


def entry_cache_path(entry: ModelZooEntry) -> Path:
    """Where the weights of a catalog entry are cached: ``<cache>/<name>/<file name>``."""
    filename = Path(urllib.parse.urlsplit(entry.url).path).name or "model"
    return cache_dir() / entry.name / filename


def converted_cache_path(entry: ModelZooEntry) -> Path:
    """Where the converted checkpoint of an entry with a ``converter`` is kept."""
    return entry_cache_path(entry).parent / "model_seg_zoo.pkl"


def download_entry(entry: ModelZooEntry, *, progress: bool = True, force: bool = False) -> str:
    """The local path of a catalog entry's weights, downloaded and verified if needed.

    For an entry with a ``converter`` the downloaded file is verified first and then converted
    (once; again when the download is newer than the conversion), and the path of the converted
    ``.pkl`` is returned.
    """
    path = download_file(
        entry.url,
        entry_cache_path(entry),
        sha256=entry.sha256,
        # an entry that does not require a digest leaves the choice to the environment
        require_sha256=True if entry.require_sha256 else None,
        progress=progress,
        force=force,
    )
    if entry.converter is None:
        return path
    out = converted_cache_path(entry)
    with file_lock(str(out)):
        if force or not out.exists() or out.stat().st_mtime < Path(path).stat().st_mtime:
            convert_download(entry, path, out)
    return str(out)


def convert_download(entry: ModelZooEntry, src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Turn ``src``, the downloaded file of an entry with a ``converter``, into ``dst``."""
    if entry.converter is None:
        raise ValueError(f"seg_zoo://{entry.name} is used as downloaded; it has no converter")
    _CONVERTERS[entry.converter](entry, Path(src), Path(dst))


def _convert_checked(
    entry: ModelZooEntry, src: Path, dst: Path, check_num_classes, convert, author: str
) -> None:
    """Read ``src``, check its class count against the entry's config, convert, write ``dst``."""
    # Imported here: converting needs detectron2's config machinery, plain downloads do not.
    from seg_zoo.config import load_config

    from .convert import load_source_state_dict, save_d2_checkpoint

    state_dict = load_source_state_dict(src)
    num_classes = load_config(str(entry.config_path)).MODEL.SEM_SEG_HEAD.NUM_CLASSES
    check_num_classes(state_dict, num_classes, f"{src} (seg_zoo://{entry.name})")
    converted = convert(state_dict, source=str(src))
    save_d2_checkpoint(converted, dst, author=author)
    logger.info("converted %s into %s (%d tensors)", src, dst, len(converted))


def _convert_segmenter(entry: ModelZooEntry, src: Path, dst: Path) -> None:
    """Official Segmenter ``checkpoint.pth`` -> seg_zoo's names, checked against the config."""
    from .convert_segmenter import check_num_classes, convert_segmenter_state_dict

    _convert_checked(entry, src, dst, check_num_classes, convert_segmenter_state_dict, "segmenter")


def _convert_mmseg_upernet(entry: ModelZooEntry, src: Path, dst: Path) -> None:
    """mmseg Swin + UperNet checkpoint -> seg_zoo's names, checked against the config."""
    from .convert_mmseg import check_upernet_num_classes, convert_mmseg_upernet_state_dict

    _convert_checked(
        entry, src, dst, check_upernet_num_classes, convert_mmseg_upernet_state_dict, "mmseg"
    )


_CONVERTERS = {"segmenter": _convert_segmenter, "mmseg_upernet": _convert_mmseg_upernet}


def clear_entry(entry: ModelZooEntry) -> None:
    """Delete the cached weights of ``entry`` (and any partial download)."""
    folder = entry_cache_path(entry).parent
    if folder.is_dir():
        shutil.rmtree(folder)
