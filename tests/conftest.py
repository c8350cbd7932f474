from __future__ import annotations

import csv
from pathlib import Path

import pytest

from soundsift import Classifier
from tests.data.shared import ESC50, shared_path
from tests.data.tiny_clap import build_tiny_clap


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clap(tmp_path_factory.mktemp("tiny-clap-fused"))


@pytest.fixture(scope="session")
def tiny_unfused_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clap(tmp_path_factory.mktemp("tiny-clap-unfused"), fusion=False, seed=1)


@pytest.fixture(scope="session")
def classifier(tiny_model_dir: Path) -> Classifier:
    return Classifier(model=str(tiny_model_dir), device="cpu", batch_size=4)


@pytest.fixture(scope="session")
def esc50_rows() -> list[dict[str, str]]:
    with open(shared_path(ESC50) / "meta" / "esc50.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="session")
def esc50_clips(esc50_rows: list[dict[str, str]]) -> list[Path]:
    """One real clip of each of the first eight ESC-50 classes."""
    seen: dict[str, Path] = {}
    for row in esc50_rows:
        seen.setdefault(row["category"], ESC50 / "audio" / row["filename"])
    return list(seen.values())[:8]


@pytest.fixture
def run(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """The `soundsift` command in this process with the tiny model: ``run(*argv)`` gives
    (exit code, stdout, stderr)."""
    from soundsift.cli.main import main

    monkeypatch.setenv("SOUNDSIFT_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("SOUNDSIFT_DEVICE", "cpu")

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke
