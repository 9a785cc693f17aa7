"""Shared by the model-zoo tests: a local HTTP server and an official-layout Segmenter file.

The server is written here (a few lines on top of ``http.server``) so that the tests control
what it sends, honour ``Range`` requests and count every request; no other network is used.
"""

from __future__ import annotations

import http.server
import importlib.util
import io
import os
import threading
from pathlib import Path

import pytest
import torch
import yaml


class LocalServer:
    """Serves ``files`` (path -> bytes) with Range support; records each request."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.honour_range = True
        self.cut_after: int | None = None  # send only this many bytes once, then hang up
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and server.honour_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if server.cut_after is not None:
                    # Promise the whole length, send a part, then drop the connection.
                    self.wfile.write(body[start : start + server.cut_after])
                    server.cut_after = None
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

            def log_message(self, *args):  # keep test output quiet
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


REFERENCE = Path(os.environ.get("SEG_ZOO_REFERENCE", "/work/shared/reference"))
SEGMENTER_TINY_MASK = REFERENCE / "segmenter" / "seg_tiny_mask.txt"


def official_tiny_mask_bytes() -> tuple[bytes, dict]:
    """checkpoint.pth of the official Seg-T-Mask/16 layout (names and shapes from the reference
    listing) with seeded random values, as bytes, and its state dict."""
    if not SEGMENTER_TINY_MASK.is_file():
        pytest.skip(f"no reference listing {SEGMENTER_TINY_MASK}")
    gen = torch.Generator().manual_seed(0)
    sd = {}
    with open(SEGMENTER_TINY_MASK) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                key, shape = line.rstrip("\n").split("\t")
                sd[key] = torch.randn(yaml.safe_load(shape), generator=gen)
    buf = io.BytesIO()
    torch.save({"model": sd, "epoch": 63}, buf)
    return buf.getvalue(), sd


def load_tool(name: str):
    """Import a tools/ script (hyphenated file name) as a module."""
    path = Path(__file__).resolve().parents[2] / "tools" / name
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
