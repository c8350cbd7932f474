"""One error table: every error soundsift raises on purpose is a SoundsiftError whose class carries
its HTTP status and CLI exit code; the server and the CLI both read them from the class."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import soundsift
from soundsift.errors import EXIT_FAILED, EXIT_USAGE, SoundsiftError

# Control flow inside one module, never raised to a caller: the page's message to its user and the
# upload guard's early stop of a body read.
INTERNAL = {"PageProblem", "_BodyTooLargeError"}


def package_classes() -> list[type]:
    found = []
    for module in pkgutil.walk_packages(soundsift.__path__, "soundsift."):
        if module.name.endswith("__main__"):
            continue
        try:
            imported = importlib.import_module(module.name)
        except ImportError:  # an optional extra not installed here
            continue
        found += [
            value for _, value in inspect.getmembers(imported, inspect.isclass) if value.__module__ == module.name
        ]
    return found


def test_every_error_class_is_a_soundsift_error_with_a_status_and_an_exit_code():
    errors = [kind for kind in package_classes() if issubclass(kind, BaseException)]
    outside = sorted(kind.__name__ for kind in errors if not issubclass(kind, SoundsiftError))
    assert set(outside) <= INTERNAL, f"errors outside the hierarchy: {outside}"
    table = [kind for kind in errors if issubclass(kind, SoundsiftError)]
    assert len(table) >= 30
    for kind in table:
        assert 400 <= kind.http_status < 600, kind
        assert kind.exit_code in (EXIT_FAILED, EXIT_USAGE), kind
        assert (kind.code and kind.code != "soundsift_error") or kind is SoundsiftError, kind


def test_the_table_says_what_clients_rely_on():
    from soundsift.errors import AudioDecodeError, LabelError, QueueFullError, ServiceStoppingError
    from soundsift.search.errors import IndexMismatchError, IndexNotFoundError, PathNotAllowedError, QueryError
    from soundsift.serving.adapters import AdapterNotFoundError

    assert (AudioDecodeError.http_status, LabelError.http_status, LabelError.exit_code) == (415, 422, EXIT_USAGE)
    assert QueueFullError.http_status == ServiceStoppingError.http_status == 503 and QueueFullError.retry_after_s
    assert (IndexNotFoundError.http_status, IndexMismatchError.http_status, PathNotAllowedError.http_status) == (
        404,
        409,
        403,
    )
    assert QueryError.exit_code == EXIT_USAGE and IndexMismatchError.exit_code == EXIT_FAILED
    assert AdapterNotFoundError.http_status == 404
