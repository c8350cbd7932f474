from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest

from soundsift.cli.main import main


def test_table_output(run, esc50_clips):
    code, out, _ = run("classify", str(esc50_clips[0]), "--labels", "dog barking | dog bark, rain, siren")
    assert code == 0
    assert str(esc50_clips[0]) in out and "5.0 s" in out
    assert "dog barking | dog bark" in out and "→ " in out


def test_json_output_matches_library(run, esc50_clips, classifier):
    code, out, _ = run("classify", *map(str, esc50_clips[:2]), "--labels", "dog, rain, siren", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [row["source"] for row in rows] == [str(p) for p in esc50_clips[:2]]
    expected = classifier.classify(esc50_clips[1], "dog, rain, siren")
    assert rows[1]["top_label"] == expected.top_label
    assert rows[1]["confidence"] == pytest.approx(expected.confidence, abs=1e-6)


def test_csv_output_and_failed_file_exit_code(run, esc50_clips, tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"\x00" * 300)
    code, out, _ = run("classify", str(esc50_clips[0]), str(bad), "--labels", "dog, rain", "--csv")
    assert code == 1
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["path"] == str(esc50_clips[0]) and rows[0]["error"] == ""
    assert float(rows[0]["score:dog"]) + float(rows[0]["score:rain"]) == pytest.approx(1.0, abs=1e-5)
    assert rows[1]["path"] == str(bad) and "bad.mp3" in rows[1]["error"]
    assert rows[1]["confidence"] == rows[1]["score:dog"] == ""
    assert rows[0]["duration_s"] == "5.000000"


def test_multi_label_options(run, esc50_clips):
    code, out, _ = run(
        "classify",
        str(esc50_clips[0]),
        "--labels",
        "dog, rain",
        "--multi-label",
        "--label-threshold",
        "dog=-1",
        "--label-threshold",
        "rain=1",
        "--json",
    )
    assert code == 0
    assert json.loads(out)[0]["detected_labels"] == ["dog"]


def test_template_and_threshold_flags(run, esc50_clips):
    code, out, _ = run(
        "classify",
        str(esc50_clips[0]),
        "--labels",
        "dog, rain",
        "--template",
        "the sound of {}",
        "--template",
        "a recording of {}",
        "--threshold",
        "0.999",
        "--json",
    )
    assert code == 0 and json.loads(out)[0]["uncertain"] is True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--labels", "dog"], "at least 2 labels"),
        (["--labels", "dog, cat", "--template", "nothing"], "placeholder"),
        (["--labels", "dog, cat", "--threshold", "1.5"], "threshold"),
        (["--labels", "dog, cat", "--label-threshold", "x=high"], "LABEL=NUMBER"),
        (["--labels", "dog, cat", "--device", "tpu"], "device"),
    ],
)
def test_usage_errors_exit_2(run, esc50_clips, argv, message):
    code, out, err = run("classify", str(esc50_clips[0]), *argv)
    assert code == 2 and message in err and "Traceback" not in err and out == ""


def test_missing_labels_and_argparse_errors_exit_2(run, capsys):
    assert main(["classify", "x.wav"]) == 2
    assert "--labels (or --preset, or --adapter) is required" in capsys.readouterr().err
    assert main(["classify", "x.wav", "--labels", "a, b", "--preset", "office"]) == 2
    with pytest.raises(SystemExit) as raised:
        main(["classify", "x.wav", "--threshold", "high"])
    assert raised.value.code == 2


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["classify", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--labels",
        "--template",
        "--threshold",
        "--min-margin",
        "--multi-label",
        "--label-threshold",
        "--json",
        "--csv",
        "--model",
        "--device",
        "--backend",
        "--fp16",
        "--batch-size",
        "--max-duration",
    ):
        assert option in text


@pytest.mark.slow  # the CLI in a subprocess, waiting for the hub to be unreachable
def test_unreachable_hub_model_is_explained(tmp_path, esc50_clips):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("SOUNDSIFT_MODEL", None)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "soundsift",
            "classify",
            str(esc50_clips[0]),
            "--labels",
            "a, b",
            "--model",
            "laion/clap-htsat-fused",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert completed.returncode == 1
    assert "laion/clap-htsat-fused" in completed.stderr and "SOUNDSIFT_MODEL" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_the_text_table_lines_up_labels_in_any_script(tiny_model_dir, esc50_clips, capsys):
    from soundsift.cli.classify import display_width

    labels = "狗叫声, rain, 玻璃破碎声, café au lait"
    assert main(["classify", str(esc50_clips[0]), "--labels", labels, "--model", str(tiny_model_dir)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if " sim " in line]
    assert len(rows) == 4
    # The score column starts at the same terminal column on every row, CJK labels included.
    columns = {display_width(row[: row.index(" sim ")]) for row in rows}
    assert len(columns) == 1, rows
    assert display_width("狗叫声") == 6 and display_width("e\u0301") == 1


def every_action(parser):
    """Every flag of the parser and of its subcommands, with the subcommand's name."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from ((f"{name} {where}".strip(), found) for where, found in every_action(child))
        elif action.option_strings:
            yield "", action


def test_a_flag_that_states_its_default_states_the_settings_default():
    """Where a flag's help says "(default X)" and the flag sets a settings field, X is that field's
    default: the help is written from the settings, and nothing written by hand may drift from them."""
    import re

    from soundsift.cli.common import default_of
    from soundsift.cli.main import build_parser
    from soundsift.core.settings import ModelSettings
    from soundsift.serving.settings import ServerSettings

    fields = {"label_thresholds": (ModelSettings, "label_threshold")}
    fields |= {name: (ServerSettings, name) for name in ServerSettings.model_fields}
    fields |= {name: (ModelSettings, name) for name in ModelSettings.model_fields}
    checked = set()
    for command, action in every_action(build_parser()):
        stated = re.search(r"\(default ([^;,)]+)", action.help or "")
        if stated and action.dest in fields:
            settings, field = fields[action.dest]
            if settings.model_fields[field].default_factory is not None:
                continue  # a list (the templates), shown in its own words
            assert stated.group(1) == default_of(settings, field), (command, action.option_strings)
            checked.add(action.dest)
    assert {"threshold", "min_margin", "label_thresholds", "max_duration_s", "port", "max_queue"} <= checked
