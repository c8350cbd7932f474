"""The errors of the search package: typed, with stable codes, like soundsift.errors."""

from __future__ import annotations

from soundsift.errors import EXIT_USAGE, ConfigurationError, SoundsiftError


class SearchIndexError(ConfigurationError):
    """Base of the index's own errors (exit 1 in the CLI, 4xx over HTTP)."""

    code = "index_error"


class IndexNotFoundError(SearchIndexError):
    """The folder holds no index yet (nothing was added to it)."""

    code = "index_not_found"
    http_status = 404


class IndexMismatchError(SearchIndexError):
    """The index was built with another model (or another window layout); mixing would be meaningless."""

    code = "index_model_mismatch"
    http_status = 409


class IndexBusyError(SearchIndexError):
    """Another indexing run holds the index."""

    code = "index_busy"
    http_status = 409


class IndexCorruptError(SearchIndexError):
    """The index folder cannot be read (a foreign or damaged catalogue)."""

    code = "index_corrupt"


class StoreUnavailableError(SearchIndexError):
    """The index's vector store (a database server) cannot be reached or lacks what it needs."""

    code = "store_unavailable"
    http_status = 503


class PathNotAllowedError(SoundsiftError):
    """A path outside the library roots a server was configured with."""

    code = "path_not_allowed"
    http_status = 403
    exit_code = EXIT_USAGE


class QueryError(SoundsiftError):
    """A search that cannot run: no query, a bad segment, a bad filter."""

    code = "invalid_query"
    exit_code = EXIT_USAGE
