"""Generate the reference pages of the documentation from the code, so they cannot drift from it.

    python scripts/generate_docs.py          # rewrite the pages that changed
    python scripts/generate_docs.py --check  # exit 1, naming each stale page, when one differs

Pages (under docs/reference/):

- ``cli.md``: every subcommand of ``soundsift`` (``soundsift.cli.main.build_parser()``, subparsers
  walked recursively): its usage, description, and every argument with its help text, by group.
- ``settings.md``: every field of ``ModelSettings`` and ``ServerSettings``: name, the
  ``SOUNDSIFT_<NAME>`` variable, the flag that sets it, default, allowed values and description.
- ``limits.md``: the settings that bound what one client can make the server do, with what a client
  gets past each (that answer is kept here, in ``CLIENT_ANSWERS``: a new limit needs a line there).

The pages are rendered from the parsers' and fields' own data, not from argparse's help formatter,
so they do not change with the terminal width or the Python version.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "docs" / "reference"
GENERATOR = "scripts/generate_docs.py"

# What a client gets past each limit (keyed by settings field). Fields named max_* are limits by
# name; LIMIT_FIELDS adds the others. Every limit needs an answer here, and every answer a field.
CLIENT_ANSWERS = {
    "max_upload_mb": "413 `upload_too_large`",
    "max_duration_s": "422 `audio_too_long`",
    "min_duration_s": "422 `audio_too_short` (or `empty_audio`)",
    "max_decoded_mb": "422 `audio_too_large`",
    "max_channels": "422 `audio_too_large`",
    "max_detect_duration_s": "422 `audio_too_long`",
    "max_detect_windows": "422 `audio_too_long`",
    "max_labels": "422 `invalid_labels`",
    "max_label_chars": "422 `invalid_labels` (`text_too_long` on `/api/embed/text`)",
    "max_synonyms": "422 `invalid_labels`",
    "max_label_text_chars": "422 `invalid_labels`",
    "max_templates": "422 `invalid_labels`",
    "max_template_chars": "422 `invalid_labels`",
    "max_batch_files": "422 `too_many_files`",
    "max_queue": "503 `overloaded` + `Retry-After`",
    "decode_workers": "(waits)",
    "micro_batch_size": "(waits for the next model call)",
    "micro_batch_wait_ms": "(waits)",
    "text_cache_size": "—",
    "graceful_timeout_s": "503 `shutting_down` after it",
    "max_adapters": "409 `too_many_adapters` (403 `teaching_disabled` when 0)",
    "max_teach_clips": "422 `invalid_examples`",
    "auth_failure_burst": "429 `too_many_failures` + `Retry-After`",
    "auth_failure_refill_s": "429 `too_many_failures` + `Retry-After`",
    "session_max_age_s": "401 (the page: back to `/login`)",
}
LIMIT_FIELDS = (
    "min_duration_s",
    "decode_workers",
    "micro_batch_size",
    "micro_batch_wait_ms",
    "text_cache_size",
    "graceful_timeout_s",
    "auth_failure_burst",
    "auth_failure_refill_s",
    "session_max_age_s",
)
# The subcommands whose flags name a setting (dest == field name), in the order they are looked up.
SETTINGS_COMMANDS = ("serve", "classify")


class GenerationError(Exception):
    """The code holds something the generator cannot document without a human's words."""


# ---- markdown helpers ---------------------------------------------------------------------------


def text(value: str | None) -> str:
    """Help or description text as markdown on one line: whitespace collapsed, markup outside code
    spans escaped (argparse and pydantic texts are plain text)."""
    if not value:
        return ""
    parts = " ".join(value.split()).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no code spans at all
        parts = ["\\`".join(parts)]
    for index in range(0, len(parts), 2):
        plain = parts[index].replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        plain = re.sub(r"([*\[\]|#])", r"\\\1", plain)
        parts[index] = re.sub(r"(?<!\w)_|_(?!\w)", r"\\_", plain)  # intraword _ is never emphasis
    return "`".join(parts)


def cell(value: str) -> str:
    """Text for a table cell: a '|' inside a code span must be escaped too."""
    return value.replace("`|`", "`\\|`")


def code(value: str) -> str:
    fence = "``" if "`" in value else "`"
    return f"{fence}{value}{fence}"


def table(columns: Sequence[str], rows: Iterator[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    return lines + ["| " + " | ".join(cell(part) for part in row) + " |" for row in rows]


def header(source: str) -> str:
    return f"<!-- Generated by {GENERATOR} from {source}. Do not edit: run `python {GENERATOR}`. -->\n"


# ---- the CLI reference --------------------------------------------------------------------------


def subparsers_of(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        name = action.metavar
    elif action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        name = "{" + ",".join(str(choice) for choice in action.choices) + "}"
    elif action.option_strings:
        name = action.dest.upper()
    else:
        name = action.dest
    if isinstance(name, tuple):
        return " ".join(name)
    nargs = action.nargs
    if nargs is None or nargs == 1:
        return str(name)
    if nargs == argparse.OPTIONAL:
        return f"[{name}]"
    if nargs == argparse.ZERO_OR_MORE:
        return f"[{name} ...]"
    if nargs == argparse.ONE_OR_MORE:
        return f"{name} [{name} ...]"
    if nargs in (argparse.REMAINDER, argparse.PARSER):
        return f"{name} ..."
    if isinstance(nargs, int):
        return " ".join([str(name)] * nargs)
    return str(name)


def takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def invocation(action: argparse.Action) -> str:
    """``--labels LABELS``, ``-o``, ``--out OUT``, or a positional's metavar, as code spans."""
    if not action.option_strings:
        return code(metavar(action))
    value = f" {metavar(action)}" if takes_value(action) else ""
    *others, last = action.option_strings
    return ", ".join([*(code(option) for option in others), code(last + value)])


def expanded_help(action: argparse.Action, prog: str) -> str:
    """The help string with its %(default)s-style fields filled in, as argparse does."""
    if not action.help:
        return ""
    params: dict[str, Any] = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    params["prog"] = prog
    for name, value in list(params.items()):
        if hasattr(value, "__name__"):
            params[name] = value.__name__
    if params.get("choices") is not None:
        params["choices"] = ", ".join(str(choice) for choice in params["choices"])
    return action.help % params


def shown_actions(actions: Sequence[argparse.Action]) -> list[argparse.Action]:
    """The arguments a user sees (not --help, nor suppressed ones)."""
    return [a for a in actions if a.help is not argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]


def usage(parser: argparse.ArgumentParser) -> str:
    """A synopsis: the required options, [OPTIONS] for the rest, then the positionals."""
    words = [parser.prog]
    actions = shown_actions(parser._actions)
    required = [a for a in actions if a.option_strings and a.required]
    optional = [a for a in actions if a.option_strings and not a.required]
    words += [f"{a.option_strings[-1]} {metavar(a)}" if takes_value(a) else a.option_strings[-1] for a in required]
    if optional:
        words.append("[OPTIONS]")
    for action in actions:
        if isinstance(action, argparse._SubParsersAction):
            words.append(f"{action.metavar or 'COMMAND'} ...")
        elif not action.option_strings:
            words.append(metavar(action))
    return " ".join(words)


def argument_lines(parser: argparse.ArgumentParser) -> Iterator[str]:
    for group in parser._action_groups:
        actions = [a for a in shown_actions(group._group_actions) if not isinstance(a, argparse._SubParsersAction)]
        if not actions:
            continue
        yield f"**{text(group.title)}**"
        yield ""
        if group.description:
            yield text(group.description)
            yield ""
        for action in actions:
            words = text(expanded_help(action, parser.prog))
            if action.option_strings and action.required:
                words = f"(required) {words}".rstrip()
            yield f"- {invocation(action)}: {words}" if words else f"- {invocation(action)}"
        yield ""


def command_section(parser: argparse.ArgumentParser, summary: str | None, level: int) -> Iterator[str]:
    """A command's usage, description, arguments and subcommands; the root (level 1) has no heading."""
    if level > 1:
        yield f"{'#' * level} {parser.prog}"
        yield ""
    if summary:
        yield f"*{text(summary)}*"
        yield ""
    yield "```text"
    yield usage(parser)
    yield "```"
    yield ""
    if parser.description:
        yield text(parser.description)
        yield ""
    yield from argument_lines(parser)
    commands = subparsers_of(parser)
    if commands is not None:
        summaries = {choice.dest: choice.help for choice in commands._choices_actions}
        title = commands.metavar if isinstance(commands.metavar, str) else "commands"
        yield f"**{text(title)}**"
        yield ""
        for name in commands.choices:
            yield f"- [{code(name)}](#{slug(f'{parser.prog} {name}')}): {text(summaries.get(name))}"
        yield ""
    if parser.epilog:
        yield text(parser.epilog)
        yield ""
    if commands is not None:
        for name, child in commands.choices.items():
            yield from command_section(child, summaries.get(name), level + 1)


def slug(title: str) -> str:
    """The anchor Python-Markdown's toc (and GitHub) gives a plain heading."""
    return re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", title).strip().lower())


def cli_page() -> str:
    from soundsift.cli.main import build_parser

    parser = build_parser()
    lines = [header("soundsift.cli.main.build_parser()"), "# Command-line reference", ""]
    lines += [
        "Every subcommand of `soundsift`, its arguments and their help, as `soundsift COMMAND --help` prints",
        "them. The guide with examples is [the command line](../cli.md); settings shared with the server",
        "and the library are in [the settings reference](settings.md).",
        "",
    ]
    lines += command_section(parser, None, 1)
    return "\n".join(lines).rstrip() + "\n"


# ---- the settings and limits references ---------------------------------------------------------


def settings_classes() -> list[tuple[str, type[BaseSettings]]]:
    from soundsift.core.settings import ModelSettings
    from soundsift.serving.settings import ServerSettings

    return [
        ("soundsift.ModelSettings", ModelSettings),
        ("soundsift.ServerSettings", ServerSettings),
    ]


def default_of(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return None if field.default is PydanticUndefined else field.default


def shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return code("true" if value else "false")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (list, dict)):
        return code(json.dumps(value, ensure_ascii=False))
    return code(str(value))


def allowed(field: FieldInfo) -> str:
    """The type and range of a field in words: ``int ≥ 1, ≤ 1024``, ``torch`` or ``onnx``, ``JSON list``."""
    annotation = field.annotation
    optional = False
    if get_origin(annotation) in (Union, types.UnionType):
        members = [member for member in get_args(annotation) if member is not type(None)]
        optional = len(members) < len(get_args(annotation))
        annotation = members[0] if len(members) == 1 else annotation
    if get_origin(annotation) is Literal:
        kind = " or ".join(code(str(value)) for value in get_args(annotation))
    elif get_origin(annotation) is list:
        (item,) = get_args(annotation)
        items = " or ".join(code(str(v)) for v in get_args(item)) if get_origin(item) is Literal else item.__name__
        kind = f"JSON list of {items}"
    else:
        kind = getattr(annotation, "__name__", str(annotation))
    bounds = []
    for constraint in field.metadata:
        for attribute, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"), ("min_length", "length ≥")):
            bound = getattr(constraint, attribute, None)
            if bound is not None:
                bounds.append(f"{sign} {shown(bound).strip('`')}")
    words = ", ".join([kind, *bounds])
    return f"{words} (optional)" if optional else words


def flags() -> dict[str, str]:
    """Settings field name → the flag that sets it (the option whose dest is the field name), as code."""
    from soundsift.cli.main import build_parser

    commands = subparsers_of(build_parser())
    assert commands is not None
    found: dict[str, str] = {}
    for name in SETTINGS_COMMANDS:
        for action in commands.choices[name]._actions:
            if action.option_strings and action.dest not in found:
                found[action.dest] = code(action.option_strings[-1])
    return found


def field_rows(cls: type[BaseSettings], names: Sequence[str] | None = None) -> Iterator[tuple[str, FieldInfo]]:
    for name, field in cls.model_fields.items():
        if names is None or name in names:
            yield name, field


def env_var(name: str) -> str:
    return code(f"SOUNDSIFT_{name.upper()}")


def settings_page() -> str:
    flag_of = flags()
    lines = [header("the fields of ModelSettings and ServerSettings"), "# Settings reference", ""]
    lines += [
        "Every setting, with its environment variable, its flag (on `soundsift serve`, or for scoring",
        "defaults `soundsift classify`), default, allowed values and meaning. Keyword arguments and flags",
        "win over `SOUNDSIFT_*` variables, which win over defaults; list values in a variable are JSON",
        "(`SOUNDSIFT_TEMPLATES='[\"a recording of {}\"]'`). How they fit together:",
        "[configuration](../configuration.md).",
        "",
    ]
    for title, cls in settings_classes():
        lines += [f"## {title}", "", text(cls.__doc__), ""]
        rows = (
            [
                code(name),
                env_var(name),
                flag_of.get(name, "—"),
                shown(default_of(field)),
                allowed(field),
                text(field.description),
            ]
            for name, field in field_rows(cls)
        )
        lines += [*table(("setting", "env", "flag", "default", "allowed", "description"), rows), ""]
    return "\n".join(lines).rstrip() + "\n"


def limit_names(cls: type[BaseSettings]) -> list[str]:
    return [name for name in cls.model_fields if name.startswith("max_") or name in LIMIT_FIELDS]


def limits_page() -> str:
    flag_of = flags()
    every_limit = [name for _, cls in settings_classes() for name in limit_names(cls)]
    missing = [name for name in every_limit if name not in CLIENT_ANSWERS]
    unknown = [name for name in CLIENT_ANSWERS if name not in every_limit]
    if missing or unknown:
        raise GenerationError(
            "CLIENT_ANSWERS is out of date: "
            + "; ".join(
                [f"say what a client gets past the new limit {name!r}" for name in missing]
                + [f"{name!r} is no longer a setting" for name in unknown]
            )
        )
    lines = [header("the fields of ModelSettings and ServerSettings"), "# Limits", ""]
    lines += [
        "The settings that bound what one request, or one client, can make soundsift do, and what a",
        "client gets past each (HTTP status and error `code`; the library raises the error of the same",
        "code). The limits that are not settings, and what the server promises whoever the client is,",
        "are in [security and limits](../security.md); every setting is in [the settings reference](settings.md).",
        "",
    ]
    for title, cls in settings_classes():
        lines += [f"## {title}", ""]
        rows = (
            [
                code(name),
                env_var(name),
                flag_of.get(name, "—"),
                shown(default_of(field)),
                text(field.description),
                answer,
            ]
            for name, field in field_rows(cls, limit_names(cls))
            for answer in [CLIENT_ANSWERS[name]]
        )
        lines += [*table(("limit", "env", "flag", "default", "description", "a client gets"), rows), ""]
    return "\n".join(lines).rstrip() + "\n"


# ---- writing and checking -----------------------------------------------------------------------


def pages() -> dict[Path, str]:
    """Every generated page: path → the text it should have."""
    return {
        REFERENCE / "cli.md": cli_page(),
        REFERENCE / "settings.md": settings_page(),
        REFERENCE / "limits.md": limits_page(),
    }


def stale_pages() -> dict[Path, str]:
    """The generated pages whose file differs from what they should be: path → a unified diff."""
    stale = {}
    for path, expected in pages().items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != expected:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                expected.splitlines(keepends=True),
                fromfile=f"{path.relative_to(REPO)} (current)",
                tofile=f"{path.relative_to(REPO)} (generated)",
            )
            stale[path] = "".join(diff)
    return stale


def write_pages() -> list[Path]:
    """Write the pages that changed; returns them."""
    written = []
    for path, expected in pages().items():
        if not path.exists() or path.read_text(encoding="utf-8") != expected:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(expected, encoding="utf-8")
            written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a generated page is stale; write nothing")
    args = parser.parse_args(argv)
    try:
        return check() if args.check else write()
    except GenerationError as error:
        print(f"{GENERATOR}: {error}", file=sys.stderr)
        return 2


def check() -> int:
    stale = stale_pages()
    for path, diff in stale.items():
        print(f"stale: {path.relative_to(REPO)} (regenerate: python {GENERATOR})", file=sys.stderr)
        print(diff, file=sys.stderr)
    return 1 if stale else 0


def write() -> int:
    for path in write_pages():
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
