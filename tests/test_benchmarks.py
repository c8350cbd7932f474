"""Every benchmark script runs end to end at tiny sizes with the tiny model, so a refactor cannot
silently break the scripts the docs' figures come from. The figures themselves are not checked
here (speed is measured by the scripts, never asserted by a test); what is checked is that each
script finishes and prints the table or JSON it is read for."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data.shared import ESC50, shared_path

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run_script(name: str, *args: str, timeout_s: float = 600) -> str:
    """The script's stdout; a failure shows its stderr."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / name), *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, f"{name} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout


def test_cpu_speed(tiny_model_dir, tmp_path):
    report = tmp_path / "speed.json"
    out = run_script(
        "cpu_speed.py",
        *("--model", str(tiny_model_dir), "--clips", "4", "--batch1-clips", "2", "--pipeline-clips", "2"),
        *("--latency-calls", "2", "--embedding-clips", "2", "--json", str(report)),
        *("--onnx-fp32", str(tmp_path / "fp32"), "--onnx-int8", str(tmp_path / "int8")),
        *("--onnx-int8-static", str(tmp_path / "int8-static"), "--peak-size", "256", "--peak-seconds", "0.2"),
    )
    assert "onnx-int8-static" in out and "top-1 agreement onnx-int8-static vs torch" in out
    assert "GFLOP per clip" in out and "GEMM peak here" in out and "% peak b8" in out and "load average" in out
    figures = json.loads(report.read_text())
    runners = figures["runners"]
    assert set(runners) == {"pipeline", "torch", "onnx-fp32", "onnx-int8", "onnx-int8-static"}
    assert all(row["batch8"] > 0 and row["share_of_peak"]["batch8"] > 0 for row in runners.values())
    limit = figures["limit"]
    assert limit["peak"]["fp32_gflops"] > 0 and limit["peak"]["int8_gops"] > 0
    # The tiny audio encoder's products, counted from its graph: about 0.09 GFLOP per clip.
    assert 0.05e9 < limit["flops"]["total"] < 0.2e9 and set(limit["flops"]["by_type"]) == {"Conv", "Gemm", "MatMul"}
    assert json.loads((tmp_path / "int8-static" / "manifest.json").read_text())["calibration"]["count"] == 4
    # The same exports, timed against each other call by call (how graph changes are measured).
    graphs = [str(tmp_path / name / "audio.onnx") for name in ("fp32", "int8")]
    timed = json.loads(run_script("hardware_limit.py", "--no-peak", "--calls", "2", "--time", *graphs, graphs[0]))
    rows = timed["timed"]
    assert [row["graph"] for row in rows] == [*graphs, graphs[0]] and rows[0]["vs_first"] == 1.0
    assert all(row["calls"] == 3 and 0 < row["best_ms"] <= row["median_ms"] for row in rows)


def test_hardware_limit_counts_a_known_product(tmp_path):
    """A Gemm, a batched MatMul and a Conv of known sizes: the counter must find exactly their FLOPs."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    sys.path.insert(0, str(REPO / "benchmarks"))
    from hardware_limit import graph_flops

    weights = {
        "W": np.ones((6, 5), np.float32),  # Gemm with transB: (batch x 5) x (5 -> 6)
        "V": np.ones((3, 4, 7), np.float32),  # MatMul on (3, 2, 4) x (3, 4, 7)
        "K": np.ones((8, 1, 3, 3), np.float32),  # Conv 1 -> 8 channels, 3x3, on 10x10 (8x8 out)
    }
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "W"], ["y"], transB=1),
            helper.make_node("MatMul", ["a", "V"], ["b"]),
            helper.make_node("Conv", ["image", "K"], ["c"]),
        ],
        "known",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5]),
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [3, 2, 4]),
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 10, 10]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("c", TensorProto.FLOAT, None),
        ],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    path = tmp_path / "known.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    counted = graph_flops(path)
    assert counted["by_type"] == {"Gemm": 2 * 1 * 5 * 6, "MatMul": 2 * 3 * 2 * 4 * 7, "Conv": 2 * 8 * 8 * 8 * 9}


def test_compare_pipeline(tiny_model_dir):
    out = run_script("compare_pipeline.py", "--model", str(tiny_model_dir), "--clips", "3", "--batch-size", "2")
    assert "soundsift torch, batch 2" in out and "top-1 agreement with the pipeline" in out


def test_few_shot(tiny_model_dir, tmp_path):
    data = tiny_esc50(tmp_path / "esc50", classes=3, clips_per_class=3)
    out = run_script(
        "few_shot.py",
        *("--model", str(tiny_model_dir), "--data", str(data), "--shots", "1", "--seeds", "1"),
        *("--out", str(tmp_path / "report")),
    )
    assert "fit 50 labels x 16 clips, auto" in out
    assert (tmp_path / "report").is_dir() and any((tmp_path / "report").iterdir())


def test_label_translation():
    out = run_script("label_translation.py")
    assert "top-1 agreement with the glossary" in out and "soundsift's rule" in out


def test_load_with_mixed_traffic(tiny_model_dir, tmp_path):
    report = tmp_path / "load.json"
    out = run_script(
        "load.py",
        *("--start-server", "--model", str(tiny_model_dir), "--clients", "1", "2", "--requests", "4"),
        *("--mixed", "--mixed-seconds", "3", "--json", str(report)),
    )
    assert "p95 ms" in out
    figures = json.loads(report.read_text())
    mixed = figures["mixed"]
    assert {"classify_alone", "text_alone", "both", "work_fraction"} <= set(mixed)
    assert mixed["both"]["classify"]["items_per_s"] > 0 and mixed["both"]["text"]["items_per_s"] > 0
    assert mixed["work_fraction"] > 0
    assert figures["server_peak_rss_mb"] > 50 and "server peak RSS" in out


def test_monitor_streams():
    out = run_script("monitor_streams.py", "--model", "tiny", "--streams", "2", "--seconds", "6", "--speeds", "8")
    (line,) = [line for line in out.splitlines() if line.startswith("{")]
    figures = json.loads(line)
    assert figures["streams"] == 2 and figures["hops"] > 0


def test_search_scale(tiny_model_dir, tmp_path):
    report = tmp_path / "scale.json"
    run_script(
        "search_scale.py",
        *("--model", str(tiny_model_dir), "--sizes", "3000", "--queries", "5", "--exact-queries", "5"),
        *("--clips", "3", "--json", str(report), "--stores", "lance,postgres,milvus", "--pg-ef-search", "10,400"),
    )
    figures = json.loads(report.read_text())
    assert figures["indexing"]["clips"] == 3
    assert [(row["store"], row["vectors"]) for row in figures["vectors"]] == [
        ("lance", 3000),
        ("postgres", 3000),
        ("milvus", 3000),
    ]
    assert all(row["recall_at_10"] >= 0.8 for row in figures["vectors"])
    sweep = figures["vectors"][1]["ef_search_sweep"]
    assert [point["ef_search"] for point in sweep] == [10, 400] and sweep[1]["recall_at_10"] >= 0.8


def test_random_model(tiny_model_dir, tmp_path):
    """With a tiny config instead of the real one: the same code path, seconds instead of a minute."""
    out = run_script("random_model.py", "--out", str(tmp_path / "model"), "--config", str(tiny_model_dir))
    assert str(tmp_path / "model") in out and (tmp_path / "model" / "config.json").is_file()


def tiny_esc50(folder: Path, *, classes: int, clips_per_class: int) -> Path:
    """An ESC-50-shaped folder (meta/esc50.csv, audio/) holding a few fold-1 clips of a few classes."""
    source = shared_path(ESC50)
    with open(source / "meta" / "esc50.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    chosen_classes = sorted({row["category"] for row in rows})[:classes]
    kept = [row for name in chosen_classes for row in [r for r in rows if r["category"] == name][:clips_per_class]]
    (folder / "meta").mkdir(parents=True)
    (folder / "audio").mkdir()
    with open(folder / "meta" / "esc50.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    for row in kept:
        (folder / "audio" / row["filename"]).symlink_to(source / "audio" / row["filename"])
    return folder


def test_silence_gate(tiny_model_dir, tmp_path):
    report = tmp_path / "gate.json"
    out = run_script(
        "silence_gate.py", "--model", str(tiny_model_dir), "--minutes", "0.5", "--events", "2", "--json", str(report)
    )
    assert "CPU saved by the gate" in out and "CPU seconds per hour of quiet audio" in out
    figures = json.loads(report.read_text())
    assert figures["on"]["gated_windows"] > 0 and figures["off"]["gated_windows"] == 0
    assert figures["on"]["model_windows"] < figures["off"]["model_windows"] == figures["off"]["windows"]
    # Taught labels (the events comparison's mode): the same figures, for the adapter's classes.
    taught = run_script(
        "silence_gate.py", *("--model", str(tiny_model_dir), "--minutes", "0.5", "--events", "2", "--shots", "1")
    )
    assert "taught from 1 clips of each of 15 classes" in taught and "CPU saved by the gate" in taught


def test_clips_per_call(tiny_model_dir, tmp_path):
    report = tmp_path / "calls.json"
    out = run_script(
        "clips_per_call.py",
        *("--model", str(tiny_model_dir), "--quantize", "none", "--sizes", "1", "4", "--batch", "4"),
        *("--clips", "4", "--rounds", "2", "--json", str(report)),
    )
    assert "| clips per encoder run |" in out and "load average after" in out
    figures = json.loads(report.read_text())
    assert set(figures) == {"1", "4"} and all(len(runs) == 2 for runs in figures.values())
    assert all(run["clips_per_s"] > 0 and run["peak_rss_mb"] > 0 for runs in figures.values() for run in runs)


def test_classify_turns(tiny_model_dir, tmp_path):
    report = tmp_path / "turns.json"
    same_code = tmp_path / "same-checkout"
    same_code.symlink_to(REPO)
    out = run_script(
        "classify_turns.py",
        *("--code", str(REPO), "--code", str(same_code), "--model", str(tiny_model_dir), "--backend", "torch"),
        *("--quantize", "none", "--clips", "3", "--rounds", "2", "--gap-ms", "0", "--json", str(report)),
    )
    assert "| checkout | calls | p50 ms |" in out and "load average after" in out
    times = json.loads(report.read_text())
    assert list(times) == [str(REPO), str(same_code)]
    assert all(len(calls) == 6 and all(ms > 0 for ms in calls) for calls in times.values())
