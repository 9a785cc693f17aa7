"""seg_zoo: transformer image segmentation as a Detectron2 plugin.

Importing seg_zoo registers its ops, models and datasets with torch and detectron2.
"""

from . import (
    data,  # noqa: F401  (registers datasets and dataset mappers)
    layers,  # noqa: F401  (registers torch.ops.seg_zoo.*)
    model_zoo,  # noqa: F401  (registers the seg_zoo:// path handler)
    modeling,  # noqa: F401  (registers models)
)
from .config import add_seg_zoo_config

__all__ = ["add_seg_zoo_config"]
__version__ = "0.1.0"
