"""The version, defined once (pyproject reads it; the package re-exports it)."""

__version__ = "0.2.0"
