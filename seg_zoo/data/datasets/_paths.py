"""Helpers every seg_zoo dataset registration shares: dataset roots, catalog replacement, and the
lazy existence checks that turn a missing file into an error a user can act on.

Registrations bind their paths at import time from ``$DETECTRON2_DATASETS`` (default
``datasets``), exactly like detectron2's builtin datasets, so that importing seg_zoo never touches
the disk. Existence is checked only when a dataset function runs; the helpers here make those
failures say which dataset, which path and which root were involved, instead of a bare traceback
from deep inside a loader.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg

__all__ = [
    "DATASETS_ENV",
    "get_datasets_root",
    "describe_root",
    "require_path",
    "check_path",
    "unregister",
    "register_replacing",
    "load_sem_seg_checked",
    "register_sem_seg_splits",
]

DATASETS_ENV = "DETECTRON2_DATASETS"


def get_datasets_root(root: str | None = None) -> str:
    """Return ``root`` if given, else ``$DETECTRON2_DATASETS``, else ``"datasets"``."""
    if root is not None:
        return str(root)
    return os.getenv(DATASETS_ENV, "datasets")


def describe_root(root: str) -> str:
    """Describe where a root came from, for error messages (explicit roots are used by tests)."""
    env = os.getenv(DATASETS_ENV)
    if env is not None and os.path.normpath(env) == os.path.normpath(root):
        return f"looked under ${DATASETS_ENV}={env}"
    if env is None and os.path.normpath(root) == "datasets":
        return f"looked under ${DATASETS_ENV}=datasets (the default; the variable is unset)"
    return (
        f"looked under the root {root!r} given at registration "
        f"(${DATASETS_ENV}={env if env is not None else 'unset'})"
    )


def require_path(
    path: str,
    *,
    dataset_name: str,
    root: str,
    what: str,
    is_dir: bool,
    hint: str | None = None,
) -> None:
    """Raise FileNotFoundError naming ``path``, the dataset and the root when it does not exist.

    Args:
        path: the file or folder the dataset function needs.
        dataset_name: the registered name being loaded.
        root: the dataset root the registration was bound to.
        what: a few words saying what the path is ("panoptic json", "image folder").
        is_dir: whether ``path`` must be a folder (else a file).
        hint: how to create the missing data, appended to the message.
    """
    ok = os.path.isdir(path) if is_dir else os.path.isfile(path)
    if ok:
        return
    msg = f"Dataset '{dataset_name}': {what} not found: {path} ({describe_root(root)})."
    if not os.path.isdir(root):
        msg += f" The dataset root {root!r} itself does not exist."
    if hint:
        msg += " " + hint
    raise FileNotFoundError(msg)


def check_path(
    path: str, dataset_name: str, root: str, producer: str | None = None, is_dir: bool = True
) -> None:
    """:func:`require_path` for derived data: the hint names the script that writes ``path``."""
    hint = f"It is a derived file: create it with `python {producer}`." if producer else None
    require_path(
        path,
        dataset_name=dataset_name,
        root=root,
        what="folder" if is_dir else "file",
        is_dir=is_dir,
        hint=hint,
    )


def unregister(name: str) -> None:
    """Forget ``name`` in both catalogs (if present) so that it can be registered again."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


def register_replacing(name: str, loader: Callable[[], list[dict]], **metadata) -> None:
    """Register ``name``, dropping any earlier registration of it first.

    detectron2 refuses to register a name twice, and its own builtins (imported with
    detectron2.data) already claim e.g. ``ade20k_sem_seg_train``; removing first lets seg_zoo's
    version win and lets tests re-point a dataset at a temporary root.
    """
    unregister(name)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**metadata)


def load_sem_seg_checked(
    dataset_name: str,
    root: str,
    image_dir: str,
    gt_dir: str,
    gt_ext: str,
    image_ext: str,
    image_producer: str | None = None,
    gt_producer: str | None = None,
) -> list[dict]:
    """detectron2's ``load_sem_seg`` after checking both folders exist and hold labels."""
    check_path(image_dir, dataset_name, root, image_producer)
    check_path(gt_dir, dataset_name, root, gt_producer)
    if not any(f.endswith("." + gt_ext) for f in os.listdir(gt_dir)):
        hint = f" Create them with `python {gt_producer}`." if gt_producer else ""
        raise FileNotFoundError(
            f"Dataset '{dataset_name}': no *.{gt_ext} label files in {gt_dir}.{hint}"
        )
    return load_sem_seg(gt_dir, image_dir, gt_ext=gt_ext, image_ext=image_ext)


def register_sem_seg_splits(
    root: str,
    splits: Mapping[str, tuple[str, str]],
    *,
    gt_ext: str,
    ignore_label: int,
    image_producer: str | None = None,
    gt_producer: str | None = None,
    **metadata,
) -> None:
    """(Re-)register detectron2-style semantic splits (image folder + label-PNG/TIF folder).

    Args:
        root: the dataset root; ``splits`` paths are relative to it.
        splits: registered name -> (image folder, label folder).
        gt_ext: label file extension ("png", "tif"); images are always ``.jpg``.
        ignore_label: the label value the evaluator and the loss skip.
        image_producer, gt_producer: scripts that write derived folders (for error hints).
        metadata: class lists etc., the same for every split. Each split gets its own deep copy,
            so that code mutating one dataset's metadata cannot change another's.
    """
    for name, (image_rel, gt_rel) in splits.items():
        image_dir = os.path.join(root, image_rel)
        gt_dir = os.path.join(root, gt_rel)
        register_replacing(
            name,
            lambda n=name, i=image_dir, g=gt_dir: load_sem_seg_checked(
                n, root, i, g, gt_ext, "jpg", image_producer, gt_producer
            ),
            **copy.deepcopy(metadata),
            image_root=image_dir,
            sem_seg_root=gt_dir,
            evaluator_type="sem_seg",
            ignore_label=ignore_label,
        )
