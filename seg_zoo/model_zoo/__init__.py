"""seg_zoo's model zoo: the catalog, ``seg_zoo://`` paths, downloads and safe loading.

``import seg_zoo`` registers the ``seg_zoo://`` handler with detectron2's PathManager, so
``MODEL.WEIGHTS seg_zoo://mask2former/coco/panoptic/maskformer2_R50_bs16_50ep`` works in configs
and on the command line. Weight conversion (``convert.py``) is imported on its own, not here.
"""

from .catalog import (
    MODEL_ZOO,
    URI_PREFIX,
    ModelZooEntry,
    UnknownModelError,
    find_by_config,
    get_entry,
    list_models,
)
from .download import (
    ChecksumError,
    MissingChecksumError,
    cache_dir,
    download_entry,
    download_file,
    sha256_of,
)
from .path_handler import SegZooHandler, register_handler
from .safe_load import (
    CheckpointLoadError,
    RestrictedUnpickler,
    UnsafeCheckpointError,
    load_checkpoint_file,
    load_pickle,
    load_torch_file,
)

register_handler()

__all__ = [
    "MODEL_ZOO",
    "URI_PREFIX",
    "CheckpointLoadError",
    "ChecksumError",
    "MissingChecksumError",
    "ModelZooEntry",
    "RestrictedUnpickler",
    "SegZooHandler",
    "UnknownModelError",
    "UnsafeCheckpointError",
    "cache_dir",
    "download_file",
    "download_entry",
    "find_by_config",
    "get_entry",
    "list_models",
    "load_checkpoint_file",
    "load_pickle",
    "load_torch_file",
    "register_handler",
    "sha256_of",
]
