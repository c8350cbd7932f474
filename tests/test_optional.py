"""Optional dependencies: each is declared once, with an extra that really exists, and a missing
one is always one line naming `pip install 'soundsift[extra]'`, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from soundsift import optional
from soundsift.optional import OptionalDependency
from tests.server_process import running_server

REPO = Path(__file__).resolve().parents[1]


def without(module: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """`soundsift ARGV` in a fresh interpreter where importing ``module`` fails, as if not installed."""
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from soundsift.cli.main import main\n"
        f"raise SystemExit(main({list(argv)!r}))"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_every_optional_dependency_names_an_extra_of_the_package():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    declared = [value for value in vars(optional).values() if isinstance(value, OptionalDependency)]
    declared += list(optional.SERVER)
    assert len(declared) >= 15
    for dependency in declared:
        assert dependency.extra in extras, f"{dependency.module}: no extra {dependency.extra!r} in pyproject.toml"


@pytest.mark.parametrize(
    ("module", "argv", "extra"),
    [
        ("fastapi", ["serve", "--port", "1"], "server"),
        ("gradio", ["serve", "--port", "1"], "server"),
        ("matplotlib", ["eval", "esc50", "--data", "/nonexistent"], "eval"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(module, argv, extra):
    done = without(module, *argv)
    assert done.returncode == 1, done.stderr
    assert f"pip install 'soundsift[{extra}]'" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # a batch run in a subprocess
def test_parquet_output_without_pyarrow_names_the_parquet_extra(tiny_model_dir, tmp_path):
    clip = REPO / "soundsift" / "examples" / "siren.ogg"
    argv = ["batch", str(clip), "--labels", "siren, rain", "--model", str(tiny_model_dir), "--device", "cpu"]
    done = without("pyarrow", *argv, "--out", str(tmp_path / "results.parquet"))
    assert done.returncode == 1, done.stderr
    assert "pip install 'soundsift[parquet]'" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow  # a real server process
def test_an_api_only_server_runs_without_the_pages_toolkit(tiny_model_dir, tmp_path):
    """--no-ui never imports gradio (about 110 MB of the server's memory): with gradio made
    unimportable the server still starts and classifies."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\n\nsys.modules['gradio'] = None  # as if not installed\n")
    path = os.pathsep.join(filter(None, [str(blocker), os.environ.get("PYTHONPATH")]))
    log = tmp_path / "server.log"
    with running_server(tiny_model_dir, log, ui="false", wrapper=["env", f"PYTHONPATH={path}"]) as server:
        clip = REPO / "soundsift" / "examples" / "siren.ogg"
        answer = requests.post(
            f"{server.url}/api/classify",
            data={"labels": "siren, rain"},
            files={"audio": (clip.name, clip.read_bytes())},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
    assert without("gradio", "serve", "--port", "1").returncode == 1  # the blocker works: with the page, refused
