"""Print the requirements of soundsift's pyproject.toml for some extras, one per line.

Used by the Dockerfile to install the dependencies in a layer of their own, before the source is
copied, so that a code change does not reinstall them:

    python requirements.py pyproject.toml torch,server > requirements.txt

Self-references such as ``soundsift[torch,onnx]`` are expanded; the package itself is not listed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    name = project["name"]
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise SystemExit(f"unknown extra(s) {', '.join(unknown)}; {name} has {', '.join(sorted(optional))}")
    found: list[str] = []
    pending, seen = list(extras), set()

    def add(requirement: str) -> None:
        self_reference = re.fullmatch(rf"\s*{re.escape(name)}\s*\[([^\]]*)\]\s*", requirement)
        if self_reference:
            pending.extend(part.strip() for part in self_reference.group(1).split(",") if part.strip())
        elif requirement not in found:
            found.append(requirement)

    for requirement in project.get("dependencies", []):
        add(requirement)
    while pending:
        extra = pending.pop(0)
        if extra not in seen:
            seen.add(extra)
            for requirement in optional[extra]:
                add(requirement)
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    extras = [part.strip() for part in argv[1].split(",") if part.strip()]
    print("\n".join(requirements(Path(argv[0]), extras)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
