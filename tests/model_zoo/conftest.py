"""Every model-zoo test downloads into its own empty cache, with the default sha256 policy."""

import pytest


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """``$SEG_ZOO_CACHE`` of the test (returned); ``SEG_ZOO_REQUIRE_SHA256`` unset."""
    root = tmp_path / "cache"
    monkeypatch.setenv("SEG_ZOO_CACHE", str(root))
    monkeypatch.delenv("SEG_ZOO_REQUIRE_SHA256", raising=False)
    return root
