"""Markers for the security tests, and the number of fuzz cases run printed after the session."""

from __future__ import annotations

from tests.security import fuzzing


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "security: security tests (fuzzing, authentication, file access)")
    config.addinivalue_line(
        "markers", "slow: long or memory-heavy; deselect with -m 'not slow' (the fast CI tier runs without it)"
    )


def pytest_terminal_summary(terminalreporter) -> None:
    if fuzzing.CASE_COUNTS:
        terminalreporter.section("fuzz cases run")
        for line in fuzzing.summary_lines():
            terminalreporter.write_line(line)
