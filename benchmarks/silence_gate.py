"""The silence gate on a mostly quiet home recording: model calls, CPU seconds and events, gate on
against gate off, through `soundsift.detect` (the pipeline the monitor, detect and index share).

The recording is assembled from real sounds: ``--events`` ESC-50 clips of household sounds (dog,
door knock, glass breaking, crying baby, alarm clock, ...) at their own level, placed at random
times in ``--minutes`` of room noise (pink noise at ``--noise-dbfs``, the hiss of a quiet room in
a consumer microphone). It is written to a FLAC file at 16 kHz and streamed, as a user's recording
would be. Windows and hop are the monitor's (2 s every 1 s).

    python benchmarks/random_model.py --out /tmp/clap-random-full
    python benchmarks/silence_gate.py --model /tmp/clap-random-full --backend onnx --quantize int8

CPU seconds are the process's (every thread: decoding, features, the model). "Real-time streams
on N cores" is N x audio seconds / CPU seconds: how many such streams the cores could score as
they arrive. A random model's scores mean nothing, so events are compared, not judged: the gate
never changes a window it lets through, and gated windows score 0, so an event can only differ
where the gate-off run found one in room noise. Zero-shot, a random model finds no events at all,
which makes that comparison empty; with ``--shots N`` the labels are taught instead (a prototype
adapter, `soundsift.Adapter`) from N clips of each household class, which random weights' acoustic
structure is enough to find, and only the other clips are placed in the recording; a
random model's taught scores are low (about 0.1-0.3 among 15 classes), so give a ``--threshold``
they reach, such as 0.2.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from soundsift import Adapter, Classifier, detect
from soundsift.core.settings import ModelSettings

RATE = 16_000
SHARED = Path(__file__).resolve().parents[2] / "shared"
ESC50 = SHARED / "data" / "esc50-16k-fold1"
HOUSEHOLD = (
    "dog",
    "door_wood_knock",
    "glass_breaking",
    "crying_baby",
    "clock_alarm",
    "footsteps",
    "coughing",
    "sneezing",
    "laughing",
    "vacuum_cleaner",
    "can_opening",
    "toilet_flush",
    "door_wood_creaks",
    "keyboard_typing",
    "washing_machine",
)
LABELS = "dog barking, knocking, glass breaking, baby crying, alarm, footsteps, coughing, speech"


def household_clips(data: Path) -> dict[str, list[Path]]:
    """The household clips of ESC-50 fold 1, by class."""
    by_class: dict[str, list[Path]] = {}
    for row in (data / "meta" / "esc50.csv").read_text().splitlines()[1:]:
        name, category = row.split(",")[0], row.split(",")[3]
        if category in HOUSEHOLD:
            by_class.setdefault(category.replace("_", " "), []).append(data / "audio" / name)
    return by_class


def split_for_teaching(shots: int) -> tuple[dict[str, list[Path]], list[Path]]:
    """``shots`` clips of each household class to teach from, and the rest, to place in the recording."""
    by_class = household_clips(ESC50)
    taught = {label: clips[:shots] for label, clips in by_class.items()} if shots else {}
    return taught, [clip for clips in by_class.values() for clip in clips[shots:]]


def pink_noise(samples: int, level_dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with a 1/f spectrum at an RMS level of ``level_dbfs``."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1.0))
    noise = np.fft.irfft(spectrum, samples)
    noise *= 10 ** (level_dbfs / 20) / np.sqrt(np.mean(noise**2))
    return noise.astype(np.float32)


def home_recording(
    path: Path, minutes: float, events: int, noise_dbfs: float, seed: int, clips: list[Path]
) -> list[float]:
    """Writes the recording, ``events`` of ``clips`` placed in it; returns where each starts (seconds)."""
    rng = np.random.default_rng(seed)
    total = int(minutes * 60 * RATE)
    audio = pink_noise(total, noise_dbfs, rng)
    starts: list[float] = []
    slot = total // max(events, 1)
    for index in range(events):
        clip, rate = soundfile.read(clips[rng.integers(len(clips))], dtype="float32")
        assert rate == RATE
        start = index * slot + int(rng.integers(0, max(1, slot - len(clip))))
        end = min(total, start + len(clip))
        audio[start:end] += clip[: end - start]
        starts.append(start / RATE)
    soundfile.write(path, np.clip(audio, -1, 1), RATE, format="FLAC")
    return starts


def measure(
    classifier: Classifier,
    path: Path,
    min_dbfs: float | None,
    window_s: float,
    hop_s: float,
    adapter: Adapter | None = None,
    threshold: float = 0.5,
) -> dict[str, Any]:
    cpu, wall = time.process_time(), time.perf_counter()
    labels = None if adapter else LABELS
    detection = detect(
        classifier,
        str(path),
        labels,
        adapter=adapter,
        window_s=window_s,
        hop_s=hop_s,
        threshold=threshold,
        min_dbfs=min_dbfs,
    )
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    windows = len(detection.windows)
    return {
        "min_dbfs": min_dbfs,
        "windows": windows,
        "model_windows": windows - detection.gated_windows,
        "gated_windows": detection.gated_windows,
        "cpu_s": round(cpu, 2),
        "wall_s": round(wall, 2),
        "windows_per_s": round(windows / wall, 1),
        "audio_s": detection.duration_s,
        "events": [(e.label, e.start_s, e.end_s) for e in detection.events],
        "centres": [(w.start_s + w.end_s) / 2 for w in detection.windows],
        "gated": [w.gated for w in detection.windows],
    }


def only_in_gated_audio(event: tuple[str, float, float], gated_run: dict[str, Any]) -> bool:
    """Whether every window centred inside the event was gated (so the gated run could not find it)."""
    inside = [
        gated for centre, gated in zip(gated_run["centres"], gated_run["gated"]) if event[1] <= centre <= event[2]
    ]
    return bool(inside) and all(inside)


def streams_on(cores: int, run: dict[str, Any]) -> float:
    return round(cores * run["audio_s"] / run["cpu_s"], 1) if run["cpu_s"] else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model folder or hub id")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    parser.add_argument("--quantize", default=None, help="int8 for the ONNX backend's quantized model")
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the recording (default 60)")
    parser.add_argument("--events", type=int, default=40, help="household sounds placed in it (default 40)")
    parser.add_argument("--noise-dbfs", type=float, default=-70.0, help="room noise level (default -70)")
    parser.add_argument("--min-dbfs", type=float, default=-50.0, help="the gate (default -50, the monitor's)")
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--hop", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--shots",
        type=int,
        default=0,
        help="teach the household classes from N clips each (default 0: zero-shot)",
    )
    parser.add_argument("--threshold", type=float, default=0.5, help="event threshold (default 0.5)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()

    settings = {"model": args.model, "backend": args.backend}
    if args.quantize:
        settings["quantize"] = args.quantize
    classifier = Classifier(ModelSettings.build(**settings))
    cores = os.cpu_count() or 1
    taught, placed = split_for_teaching(args.shots)
    adapter = Adapter.fit(classifier, taught, method="prototype") if taught else None
    with tempfile.TemporaryDirectory() as folder:
        recording = Path(folder) / "home.flac"
        home_recording(recording, args.minutes, args.events, args.noise_dbfs, args.seed, placed)
        quiet = Path(folder) / "quiet.flac"
        home_recording(quiet, args.minutes, 0, args.noise_dbfs, args.seed, placed)
        warm_up = pink_noise(20 * RATE, -20.0, np.random.default_rng(1))  # one-off costs, before the timed runs
        detect(classifier, (warm_up, RATE), LABELS, window_s=args.window, hop_s=args.hop)
        runs = [(recording, None), (recording, args.min_dbfs), (quiet, args.min_dbfs)]
        off, on, quiet_on = (
            measure(classifier, path, gate, args.window, args.hop, adapter, args.threshold) for path, gate in runs
        )

    missed = [event for event in off["events"] if event not in on["events"]]
    in_noise = [event for event in missed if only_in_gated_audio(event, on)]
    added = [event for event in on["events"] if event not in off["events"]]
    print(f"recording: {args.minutes:g} min, {args.events} household sounds in room noise at {args.noise_dbfs:g} dBFS")
    print(f"labels: {f'taught from {args.shots} clips of each of {len(taught)} classes' if taught else LABELS}")
    print(f"{'':<22}{'windows':>8}{'to model':>10}{'CPU s':>8}{'wall s':>8}{'win/s':>8}{'streams':>9}")
    for name, run in (("gate off", off), (f"gate {args.min_dbfs:g} dBFS", on), ("quiet only, gate on", quiet_on)):
        print(
            f"{name:<22}{run['windows']:>8}{run['model_windows']:>10}{run['cpu_s']:>8.1f}{run['wall_s']:>8.1f}"
            f"{run['windows_per_s']:>8.1f}{streams_on(cores, run):>9.1f}"
        )
    saving = 1 - on["cpu_s"] / off["cpu_s"] if off["cpu_s"] else 0.0
    print(f"CPU saved by the gate: {saving:.0%}; model calls {off['model_windows']} -> {on['model_windows']}")
    print(f"CPU seconds per hour of quiet audio, gate on: {quiet_on['cpu_s'] * 3600 / quiet_on['audio_s']:.1f}")
    print(
        f"events: {len(off['events'])} gate off, {len(on['events'])} gate on;"
        f" identical: {on['events'] == off['events']};"
        f" gate-off events missing with the gate: {len(missed)} ({len(in_noise)} of them entirely in gated windows);"
        f" events only with the gate: {len(added)}"
    )
    if args.json:
        for run in (off, on, quiet_on):
            del run["centres"], run["gated"]
        summary = {
            "cores": cores,
            "shots": args.shots,
            "off": off,
            "on": on,
            "quiet_on": quiet_on,
            "cpu_saving": round(saving, 3),
            "streams_off": streams_on(cores, off),
            "streams_on": streams_on(cores, on),
        }
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
