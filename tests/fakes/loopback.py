"""A test's HTTP server on 127.0.0.1 (any free port), served from a thread of its own."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(handler: type[BaseHTTPRequestHandler],
          server_class: type[ThreadingHTTPServer] = ThreadingHTTPServer,
          ) -> tuple[ThreadingHTTPServer, threading.Thread, str]:
    """Start serving: the server, its thread and its base URL (http://127.0.0.1:PORT)."""
    server = server_class(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    return server, thread, f"http://{host}:{port}"


def shut(server: ThreadingHTTPServer | None, thread: threading.Thread | None) -> None:
    """Stop serving, close the socket and wait for the thread (a few seconds at most)."""
    if server is not None:
        server.shutdown()
        server.server_close()
    if thread is not None:
        thread.join(timeout=5)
