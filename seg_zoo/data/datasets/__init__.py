"""Dataset registrations: importing this package registers every dataset module in it.

Every ``register_*`` module here (and :mod:`.synthetic`, :mod:`.synthetic_video`) registers
its datasets at import, bound to ``$DETECTRON2_DATASETS``. Modules are discovered rather than
listed so that registration modules added later are picked up without edits here.
"""

import importlib
import pkgutil

from . import register_coco_panoptic_annos_semseg, synthetic, synthetic_video  # noqa: F401

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module.startswith("register_"):
        importlib.import_module(f"{__name__}.{_module}")
