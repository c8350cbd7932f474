"""The server's adapters: taught through the API or the page, kept as files in one folder,
named by the client with a safe name (never a path), and checked against the served model."""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from soundsift.core.adapter import Adapter
from soundsift.errors import EXIT_USAGE, AdapterError, SoundsiftError

logger = logging.getLogger("soundsift")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
SUFFIX = ".adapter"


class AdapterNotFoundError(SoundsiftError):
    """No stored adapter has that name."""

    code = "adapter_not_found"
    http_status = 404
    exit_code = EXIT_USAGE


class AdapterLimitError(SoundsiftError):
    """The store holds as many adapters as it may."""

    code = "too_many_adapters"
    http_status = 409


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise AdapterError("an adapter name is 1 to 64 letters, digits, '-' or '_' (starting with a letter or digit)")
    return name


class AdapterStore:
    """Adapters by name, in memory and as ``<name>.adapter`` files in ``folder``."""

    def __init__(self, folder: str | None, *, limit: int) -> None:
        self._temporary = tempfile.TemporaryDirectory(prefix="soundsift-adapters-") if folder is None else None
        self.folder = Path(folder) if folder is not None else Path(self._temporary.name)  # type: ignore[union-attr]
        self.folder.mkdir(parents=True, exist_ok=True)
        self.limit = limit
        self._adapters: dict[str, Adapter] = {}
        self._lock = threading.Lock()

    def load_saved(self, check: Callable[[Adapter], Adapter]) -> None:
        """Read the folder's adapters; one that is damaged or taught on another model is left out
        (logged), so a server never starts with an adapter that would give wrong answers."""
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            if not NAME.fullmatch(path.stem):
                continue
            try:
                self._adapters[path.stem] = check(Adapter.load(path, name=path.stem))
            except AdapterError as error:
                logger.warning("adapter %s left out: %s", path.name, error)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._adapters)

    def get(self, name: str) -> Adapter:
        with self._lock:
            adapter = self._adapters.get(check_name(name))
        if adapter is None:
            raise AdapterNotFoundError(f"no adapter named {name!r}")
        return adapter

    def put(self, name: str, adapter: Adapter) -> Adapter:
        """Store (or replace) an adapter; written to a temporary file first, so a crash never leaves
        half a file under the name."""
        adapter = adapter.renamed(check_name(name))
        with self._lock:
            if name not in self._adapters and len(self._adapters) >= self.limit:
                raise AdapterLimitError(f"the server keeps at most {self.limit} adapters; delete one first")
            handle, partial = tempfile.mkstemp(dir=self.folder, suffix=".partial")
            os.close(handle)
            try:
                adapter.save(partial)
                os.replace(partial, self.folder / f"{name}{SUFFIX}")
            finally:  # a failed save leaves no file behind (each one used to stay, uncounted by the limit)
                Path(partial).unlink(missing_ok=True)
            self._adapters[name] = adapter
        return adapter

    def delete(self, name: str) -> None:
        with self._lock:
            if self._adapters.pop(check_name(name), None) is None:
                raise AdapterNotFoundError(f"no adapter named {name!r}")
            (self.folder / f"{name}{SUFFIX}").unlink(missing_ok=True)

    def close(self) -> None:
        if self._temporary is not None:
            self._temporary.cleanup()
