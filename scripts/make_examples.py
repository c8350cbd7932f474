"""Regenerate the example clips bundled in soundsift/examples/ (our own synthesised sounds, free to ship).

python scripts/make_examples.py
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile

RATE = 48_000
OUT = Path(__file__).resolve().parents[1] / "soundsift" / "examples"


def seconds(duration: float) -> np.ndarray:
    return np.arange(int(duration * RATE)) / RATE


def siren() -> np.ndarray:
    """A wail sweeping 650-1500 Hz, about one rise and fall every three seconds."""
    t = seconds(6.0)
    frequency = 1075 + 425 * np.sin(2 * np.pi * 0.35 * t)
    phase = 2 * np.pi * np.cumsum(frequency) / RATE
    return 0.4 * np.sign(np.sin(phase)) * 0.5 + 0.2 * np.sin(phase)


def smoke_alarm() -> np.ndarray:
    """The ISO 8201 temporal-three pattern: three 0.5 s beeps at 3.1 kHz, then 1.5 s silence."""
    t = seconds(7.0)
    cycle = t % 4.0
    on = (cycle < 3.0) & ((cycle % 1.0) < 0.5)
    return 0.5 * on * np.sin(2 * np.pi * 3100 * t)


def doorbell() -> np.ndarray:
    """Ding-dong: two decaying bell tones (E5 then C5) with harmonics."""
    t = seconds(3.0)
    out = np.zeros_like(t)
    for start, pitch in ((0.2, 659.3), (0.9, 523.3)):
        local = np.clip(t - start, 0, None)
        envelope = np.where(t >= start, np.exp(-local * 2.5), 0.0)
        out += envelope * sum(np.sin(2 * np.pi * pitch * k * local) / k**1.5 for k in (1, 2, 3, 4.2))
    return 0.35 * out / np.max(np.abs(out))


def rain() -> np.ndarray:
    """Broadband hiss with thousands of tiny droplet clicks."""
    rng = np.random.default_rng(7)
    hiss = np.convolve(rng.standard_normal(int(6.0 * RATE)), np.ones(6) / 6, mode="same") * 0.05
    drops = np.zeros_like(hiss)
    positions = rng.integers(0, len(drops) - 200, size=2500)
    click = np.exp(-np.arange(200) / 25.0) * np.sin(np.arange(200) * 0.9)
    for position, gain in zip(positions, rng.uniform(0.02, 0.25, size=len(positions))):
        drops[position : position + 200] += gain * click
    return np.clip(hiss + drops, -0.9, 0.9)


def speech() -> np.ndarray | None:
    """A spoken sentence from espeak-ng, when it is installed."""
    if not shutil.which("espeak-ng"):
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speech.wav"
        text = "Hello, this is a short announcement. The next train leaves from platform two."
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
        samples, rate = soundfile.read(path, dtype="float32")
    import soxr

    return soxr.resample(samples, rate, RATE)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    clips = {"siren": siren(), "smoke-alarm": smoke_alarm(), "doorbell": doorbell(), "rain": rain()}
    spoken = speech()
    if spoken is not None:
        clips["speech"] = spoken
    for name, samples in clips.items():
        soundfile.write(OUT / f"{name}.ogg", samples.astype(np.float32), RATE, format="OGG", subtype="VORBIS")
        print(f"wrote {OUT / name}.ogg ({len(samples) / RATE:.1f} s)")


if __name__ == "__main__":
    main()
