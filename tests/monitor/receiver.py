"""A notification receiver on a free loopback port: what Apprise's json:// and form:// targets POST.

It records every request (path, content type, body); it can answer the first ``fail_first`` requests
with 500 (a target that is briefly broken) and wait ``delay_s`` before answering (a slow one).
"""

from __future__ import annotations

import email.parser
import email.policy
import http.server
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

HANG_GUARD_S = 60.0


@dataclass
class Request:
    path: str
    content_type: str
    body: bytes

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    def form(self) -> dict[str, tuple[str | None, bytes]]:
        """A multipart/form-data body: field name -> (file name or None, content)."""
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {self.content_type}\r\n\r\n".encode() + self.body
        )
        parts = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            parts[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
        return parts


class Receiver:
    def __init__(self, *, fail_first: int = 0, delay_s: float = 0.0) -> None:
        self.requests: list[Request] = []
        self.answered = 0
        self.fail_first, self.delay_s = fail_first, delay_s
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(receiver.delay_s)
                with receiver._lock:
                    receiver.answered += 1
                    failing = receiver.answered <= receiver.fail_first
                    if not failing:
                        receiver.requests.append(Request(self.path, self.headers.get("Content-Type", ""), body))
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, scheme: str = "json", path: str = "hook") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/{path}"

    def wait_for(self, count: int) -> list[Request]:
        """The first ``count`` requests received; the deadline is only a hang guard."""
        deadline = time.monotonic() + HANG_GUARD_S
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"received {len(self.requests)} notifications, expected {count}")
            time.sleep(0.05)
        return self.requests[:count]

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
