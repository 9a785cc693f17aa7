"""Shared pytest configuration for seg_zoo's tests."""


def pytest_configure(config):
    # Tests that need a GPU carry this marker and skip themselves when CUDA is unavailable;
    # `pytest -m "not cuda"` leaves them out altogether.
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU")
