"""The data beside the repository (../shared): ESC-50 fold 1, label sets, the real checkpoint's config.

Users running the tests from an sdist have none of it: tests that need it are skipped with the
reason. CI sets SOUNDSIFT_REQUIRE_SHARED=1 (make test does), which turns that skip into a failure,
so nothing is silently left out there. SOUNDSIFT_SHARED_DIR points elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("SOUNDSIFT_SHARED_DIR", REPO.parent / "shared"))
ESC50 = SHARED / "data" / "esc50-16k-fold1"
LABEL_SETS = SHARED / "data" / "label-sets"
CLAP_CONFIG = SHARED / "models" / "clap-htsat-fused-config"


def shared_path(path: Path, *, module_level: bool = False) -> Path:
    """``path`` (under SHARED) when it exists; otherwise skip the test (or the whole module, from
    module level), or fail it where the shared data is required."""
    if path.exists():
        return path
    reason = f"needs the shared test data: {path} is missing (see ../shared/README.md)"
    if os.environ.get("SOUNDSIFT_REQUIRE_SHARED") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=module_level)
