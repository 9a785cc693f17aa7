"""``seg_zoo://<name>`` paths for detectron2's ``PathManager``.

Once registered (``import seg_zoo`` does it), ``MODEL.WEIGHTS seg_zoo://<name>`` works wherever
detectron2 resolves a path: ``DetectionCheckpointer.load`` calls
``PathManager.get_local_path``, which downloads, caches and verifies the catalog entry's weights
(``seg_zoo.model_zoo.download``) and returns the local file.
"""

from __future__ import annotations

from typing import Any

from detectron2.utils.file_io import PathHandler, PathManager

from . import catalog
from .download import download_entry


class SegZooHandler(PathHandler):
    """Resolves ``seg_zoo://<name>`` to the cached weights of catalog entry ``<name>``."""

    PREFIX = catalog.URI_PREFIX

    def _get_supported_prefixes(self) -> list[str]:
        return [self.PREFIX]

    def _get_local_path(self, path: str, force: bool = False, **kwargs: Any) -> str:
        self._check_kwargs(kwargs)
        entry = catalog.get_entry(path[len(self.PREFIX) :])
        return download_entry(entry, force=force)

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs: Any):
        self._check_kwargs(kwargs)
        if any(c in mode for c in "wax+"):
            raise ValueError(f"{path}: seg_zoo:// paths are read-only, got mode {mode!r}")
        return open(self._get_local_path(path), mode, buffering=buffering)

    def _exists(self, path: str, **kwargs: Any) -> bool:
        # A catalog name "exists" whether or not it was downloaded yet.
        self._check_kwargs(kwargs)
        return path[len(self.PREFIX) :].strip("/") in catalog.MODEL_ZOO

    def _isfile(self, path: str, **kwargs: Any) -> bool:
        return self._exists(path, **kwargs)


def register_handler() -> None:
    """Register ``SegZooHandler`` with detectron2's PathManager (idempotent)."""
    PathManager.register_handler(SegZooHandler(), allow_override=True)
