"""sha256 of the model-zoo files, by catalog name: the digests the catalog verifies.

Written by ``tools/pin_model_zoo.py``, which downloads each file, checks that it builds the model
of its config with no missing, unexpected or mis-shaped key, and only then records its digest
here (and in MODEL_ZOO.md). Edit it with that tool, not by hand: a hand-typed digest would make
the catalog refuse the genuine file.
"""

SHA256: dict[str, str] = {}
