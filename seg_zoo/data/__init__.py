"""Data: dataset registrations (``datasets``) and dataset mappers (``dataset_mappers``).

Importing this package registers every dataset with detectron2's catalogs.
"""

import importlib
import importlib.util

from . import datasets  # noqa: F401

# The mappers live in their own package, which may not exist yet in every checkout.
if importlib.util.find_spec(f"{__name__}.dataset_mappers") is not None:
    importlib.import_module(f"{__name__}.dataset_mappers")
