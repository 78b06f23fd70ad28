"""A real HTTP server on 127.0.0.1 whose answers a test scripts: the seam for remote (OpenAI-compatible) backends."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Respond = Callable[[BaseHTTPRequestHandler, bytes], tuple[int, bytes]]
"""(request handler, raw body) → (status, payload); the handler gives the path and headers."""


def completion(text: str) -> tuple[int, bytes]:
    """A 200 answer of /v1/completions carrying `text`."""
    return 200, json.dumps({"choices": [{"text": text, "logprobs": None}]}).encode()


@contextmanager
def http_server(respond: Respond) -> Iterator[str]:
    """Serve POSTs with `respond` until the block ends; yields the base URL (`http://127.0.0.1:PORT/v1`)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            status, payload = respond(self, self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if status == 200 else "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
