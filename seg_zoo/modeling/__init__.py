"""seg_zoo's models; importing this package registers them with detectron2."""

from . import backbone  # noqa: F401
