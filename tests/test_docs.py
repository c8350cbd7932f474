"""The documentation: the generated reference pages are current, the site builds strictly, and the
README stays a front page whose links, commands and extras are true."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
README_LIMIT = 12_500  # bytes: reference material belongs in docs/


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_docs", REPO / "scripts" / "generate_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hand_written_pages() -> list[Path]:
    return [README, *sorted(path for path in DOCS.glob("*.md"))]


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)


def test_the_generated_reference_pages_are_current():
    stale = generator().stale_pages()
    assert not stale, (
        "generated docs are stale: "
        + ", ".join(str(path.relative_to(REPO)) for path in stale)
        + " — run `python scripts/generate_docs.py` and commit the result\n"
        + "\n".join(stale.values())
    )


def test_check_mode_names_a_stale_page(tmp_path, monkeypatch, capsys):
    module = generator()
    page = tmp_path / "reference" / "cli.md"
    monkeypatch.setattr(module, "REPO", tmp_path)
    monkeypatch.setattr(module, "pages", lambda: {page: "# fresh\n"})
    assert module.main(["--check"]) == 1
    assert "stale: reference/cli.md" in capsys.readouterr().err
    assert module.main([]) == 0 and page.read_text() == "# fresh\n"
    assert module.main(["--check"]) == 0


def test_every_limit_says_what_a_client_gets():
    """A new max_* setting needs a line in CLIENT_ANSWERS; the generator refuses to guess."""
    module = generator()
    answers = dict(module.CLIENT_ANSWERS)
    del answers["max_upload_mb"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "CLIENT_ANSWERS", answers)
        with pytest.raises(module.GenerationError, match="max_upload_mb"):
            module.limits_page()


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (the dev extra has it: pip install -e '.[dev]')")
    site = tmp_path / "site"
    config = str(REPO / "mkdocs.yml")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", config, "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (site / "index.html").is_file() and (site / "reference" / "cli.html").is_file()


def test_the_readme_is_a_front_page():
    readme = README.read_text(encoding="utf-8")
    size = len(readme.encode("utf-8"))
    assert size <= README_LIMIT, f"README.md is {size} bytes; move reference material into docs/"
    # .ci/run and the quick start rely on exactly these two commands
    assert "make serve" in readme and "make test" in readme


def test_the_readme_names_every_extra_and_subcommand():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    from soundsift.cli.main import build_parser

    extras = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    for page in (README, DOCS / "index.md"):
        listed = set(re.findall(r"^\| `([a-z0-9-]+)` \|", page.read_text(encoding="utf-8"), flags=re.M))
        missing = sorted(set(extras) - listed)
        assert not missing, f"{page.relative_to(REPO)}: the extras table lacks {missing}"
    commands = generator().subparsers_of(build_parser())
    readme = README.read_text(encoding="utf-8")
    missing = [name for name in commands.choices if f"`soundsift {name}`" not in readme]
    assert not missing, f"README.md: the command table lacks {missing}"


def github_anchor(heading: str) -> str:
    heading = re.sub(r"[`*_]", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def test_the_readmes_links_resolve():
    """README links are relative paths that work on GitHub: the file exists, and so does the anchor."""
    readme = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert any(target.startswith("docs/") for target in targets)
    for target in targets:
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (REPO / path) if path else README
        assert file.exists(), f"README.md links to {target}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", file.read_text(encoding="utf-8"), flags=re.M)
            assert anchor in {github_anchor(h) for h in headings}, f"README.md links to {target}: no such heading"


def test_commands_in_the_docs_use_real_flags():
    """Every `soundsift COMMAND ... --flag` in a code block of the README or docs/ is a flag of COMMAND."""
    from soundsift.cli.main import build_parser

    module = generator()
    commands = module.subparsers_of(build_parser())

    def options(parser) -> set[str]:
        found = {option for action in parser._actions for option in action.option_strings}
        children = module.subparsers_of(parser)
        for child in children.choices.values() if children else ():
            found |= options(child)
        return found

    known = {name: options(parser) for name, parser in commands.choices.items()}
    wrong = []
    for page in hand_written_pages():
        for block in code_blocks(page.read_text(encoding="utf-8")):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ")
                if not re.match(r"soundsift [a-z]+(\s|$)", line):  # a command, not an error message
                    continue
                try:
                    words = shlex.split(line, comments=True)
                except ValueError:
                    words = line.split()
                name = words[1] if len(words) > 1 else ""
                if name not in known:
                    wrong.append(f"{page.name}: unknown subcommand in {line!r}")
                    continue
                flags = {word.split("=")[0] for word in words[2:] if word.startswith("--")}
                wrong += [f"{page.name}: {name} has no {flag} ({line!r})" for flag in sorted(flags - known[name])]
    assert not wrong, "\n".join(wrong)


def test_environment_variables_in_the_docs_exist():
    """Every SOUNDSIFT_* variable the README or docs/ name is a setting or read somewhere in the code."""
    module = generator()
    settings = {f"SOUNDSIFT_{name.upper()}" for _, cls in module.settings_classes() for name in cls.model_fields}
    code = "\n".join(
        path.read_text(encoding="utf-8", errors="replace")
        for folder in ("soundsift", "tests", "scripts", "deploy", "benchmarks")
        for path in (REPO / folder).rglob("*")
        if path.is_file() and path.suffix in (".py", ".yaml", ".yml", ".sh", ".service", ".env", "")
        if path != Path(__file__)
    )
    code += "\n".join((REPO / name).read_text(encoding="utf-8") for name in ("Dockerfile", "compose.yaml", "Makefile"))
    unknown = []
    for page in hand_written_pages():
        for name in sorted(set(re.findall(r"SOUNDSIFT_[A-Z0-9_]*[A-Z0-9]", page.read_text(encoding="utf-8")))):
            if name not in settings and not re.search(rf"\b{name}\b", code):
                unknown.append(f"{page.relative_to(REPO)}: {name}")
    assert not unknown, "documented variables that nothing reads: " + ", ".join(unknown)
