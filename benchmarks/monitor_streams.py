"""`soundsift monitor` with several streams on one model: windows and events per second, batch sizes,
and what a broker restart does to delivery.

Each stream replays a recording (ESC-50 clips from ../shared when present, else a tone) at ``--speed``
times real time, with threshold 0 and 1-of-1 confirmation and no cooldown, so every scored window
raises an event for each alert label: the figures are the monitor's own ceiling, not a property of the
scores (a random model's scores mean nothing). Speeds above what the model can score show up as
skipped hops; the highest speed without skips is the number of real-time streams one process carries.

    PYTHONPATH=. python benchmarks/monitor_streams.py --model tiny --speeds 1 8 32
    PYTHONPATH=. python benchmarks/monitor_streams.py --model full --speeds 1 2 4
    PYTHONPATH=. python benchmarks/monitor_streams.py --model tiny --broker-restart   # needs mosquitto

Run under ``taskset -c 0,1`` for the 2-core figures. Prints one JSON object per run.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch

from soundsift import Classifier
from soundsift.monitor.config import MonitorConfig
from soundsift.monitor.runner import MonitorService

REPO = Path(__file__).resolve().parents[1]
ESC50 = REPO.parent / "shared" / "data" / "esc50-16k-fold1" / "audio"


def recordings(folder: Path, count: int, seconds: float) -> list[Path]:
    clips = sorted(ESC50.glob("*.wav"))
    paths = []
    for index in range(count):
        if clips:
            parts = [soundfile.read(clip, dtype="float32")[0] for clip in clips[index * 8 : index * 8 + 8]]
            audio, rate = np.concatenate(parts), 16_000
        else:
            rate = 16_000
            t = np.arange(int(seconds * rate)) / rate
            audio = (0.3 * np.sin(2 * np.pi * (300 + 200 * index) * t)).astype(np.float32)
        repeats = int(np.ceil(seconds * rate / len(audio)))
        path = folder / f"stream{index}.wav"
        soundfile.write(path, np.tile(audio, repeats)[: int(seconds * rate)], rate)
        paths.append(path)
    return paths


def model_folder(kind: str, folder: Path) -> Path:
    if kind == "tiny":
        from tests.data.tiny_clap import build_tiny_clap

        return build_tiny_clap(folder / "tiny")
    if kind == "full":
        from random_model import full_size_random_model

        return full_size_random_model(Path("/tmp/soundsift-clap-random"))
    return Path(kind)


def stream_configs(paths: list[Path], speed: float, seconds: float) -> list[dict[str, Any]]:
    return [
        {
            "name": f"room{index}",
            "source": str(path),
            "labels": "smoke alarm, glass breaking, baby crying, dog barking, speech, silence",
            "alert": ["smoke alarm", "glass breaking", "baby crying"],
            "window_s": 2.0,
            "hop_s": 1.0,
            "threshold": 0.0,
            "confirm": "1/1",
            "cooldown_s": 0.0,
            "gate_db": -90.0,
            "speed": speed,
            "max_seconds": seconds,
        }
        for index, path in enumerate(paths)
    ]


def run_once(classifier: Classifier, config: MonitorConfig) -> dict[str, Any]:
    service = MonitorService(classifier, config, emit=lambda _: None)
    started = time.perf_counter()
    results = service.run()
    wall = time.perf_counter() - started
    scorer = service.engine.stats["audio"]
    hops = sum(stats.hops for stats in results.values())
    return {
        "wall_s": round(wall, 2),
        "windows_per_s": round(scorer.items / wall, 2),
        "events_per_s": round(sum(stats.alerts for stats in results.values()) / wall, 2),
        "hops": hops,
        "skipped_fraction": round(sum(stats.skipped for stats in results.values()) / max(hops, 1), 3),
        "mean_batch": round(scorer.mean_batch, 2),
        "largest_batch": scorer.largest_batch,
        "model_s_per_window": round(scorer.model_s / max(scorer.items, 1), 4),
    }


def broker_restart(classifier: Classifier, paths: list[Path], folder: Path, down_s: float) -> dict[str, Any]:
    """Three real-time streams publish to mosquitto; the broker is stopped for ``down_s`` seconds."""
    from tests.monitor.broker import Broker, Recorder

    broker = Broker(folder / "broker")
    broker.start()
    recorder = Recorder(broker, "bench/+/event", client_id="soundsift-bench-recorder")
    recorder.wait_for(recorder.client.is_connected, what="recorder connected")
    seconds = 20.0
    config = MonitorConfig.model_validate(
        {
            "streams": stream_configs(paths, 1.0, seconds),
            "database": folder / "restart.db",
            "mqtt": {"url": f"{broker.url}/bench", "drain_s": 30.0},
        }
    )
    service = MonitorService(classifier, config, emit=lambda _: None)
    runner = threading.Thread(target=service.run)
    runner.start()
    time.sleep(5)
    broker.stop()
    time.sleep(down_s)
    broker.start()
    restarted = time.monotonic()
    runner.join()
    with sqlite3.connect(folder / "restart.db") as db:
        logged = db.execute("SELECT count(*), sum(mqtt = 'sent') FROM events").fetchone()
    deadline = time.monotonic() + 30
    while len(recorder.messages) < logged[0] and time.monotonic() < deadline:
        time.sleep(0.1)
    received = {json.loads(m.payload)["id"] for m in recorder.messages}
    times = [m.at for m in recorder.messages if m.at >= restarted]
    recorder.close()
    broker.stop()
    return {
        "broker_down_s": down_s,
        "events_logged": logged[0],
        "events_acknowledged": logged[1],
        "events_received": len(received),
        "lost": logged[0] - len(received),
        "first_delivery_after_restart_s": round(min(times) - restarted, 2) if times else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny, full (random full-size CLAP) or a model folder")
    parser.add_argument("--streams", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of audio per stream")
    parser.add_argument("--speeds", type=float, nargs="+", default=[1.0, 8.0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--broker-restart", action="store_true", help="measure delivery across a broker restart")
    parser.add_argument("--down", type=float, default=5.0, help="seconds the broker is down")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        classifier = Classifier(model=str(model_folder(args.model, folder)), device="cpu")
        paths = recordings(folder, args.streams, args.seconds)
        if args.broker_restart:
            print(json.dumps({"model": args.model, **broker_restart(classifier, paths, folder, args.down)}))
            return
        for speed in args.speeds:
            config = MonitorConfig.model_validate(
                {"streams": stream_configs(paths, speed, args.seconds), "database": folder / f"speed{speed}.db"}
            )
            result = run_once(classifier, config)
            print(json.dumps({"model": args.model, "streams": args.streams, "speed": speed, **result}), flush=True)


if __name__ == "__main__":
    main()
