"""`--health-port`: the monitor's own state as JSON, for supervisors (systemd, Docker, Kubernetes).

``GET /`` (or ``/health``) answers 200 while every stream is starting, listening or has ended, and
503 while one is reconnecting or has failed; the body always holds each stream's state and counters.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable
from typing import Any


class HealthServer:
    def __init__(self, host: str, port: int, report: Callable[[], dict[str, Any]]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/", "/health", "/healthz"):
                    self.send_error(404)
                    return
                body = report()
                data = json.dumps(body, ensure_ascii=False).encode()
                self.send_response(200 if body.get("ok") else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.host, self.port = host, int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="soundsift-health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
