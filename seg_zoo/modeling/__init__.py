"""seg_zoo's models; importing this package registers them with detectron2."""

from . import (
    backbone,  # noqa: F401
    heads,  # noqa: F401
    meta_arch,  # noqa: F401
    pixel_decoder,  # noqa: F401
    transformer_decoder,  # noqa: F401
)
