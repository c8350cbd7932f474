"""HTTP load test on loopback: /api/classify at several concurrencies, and mixed load.

Levels: requests/s and p50/p95 latency of /api/classify with N clients. Each level sends at most
--requests requests and stops after --max-seconds.

Mixed load (--mixed): for --mixed-seconds each, classify clients alone, text-embedding clients alone
(fresh texts every request, so nothing is cached), then both at once; with --search also search
clients (fresh queries) against an index of the example clips, alone and beside classify. For each
phase: classify p50/p95, clips/s, texts/s (or queries/s), and for each mix the work done as a
fraction of each load alone (clips/s mixed / clips/s alone + texts/s mixed / texts/s alone): 1.00
means nothing is lost to contention, below 1 the two loads got in each other's way.

Only loopback targets are accepted.

    python benchmarks/load.py --start-server --model /tmp/soundsift-clap-random   # own server
    python benchmarks/load.py --start-server --model M --mixed --search --serve-args="--backend onnx --quantize int8"
    python benchmarks/load.py --url http://127.0.0.1:7860                          # running server
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ipaddress
import itertools
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import requests

EXAMPLES = Path(__file__).resolve().parents[1] / "soundsift" / "examples"
EXAMPLE = EXAMPLES / "siren.ogg"
TEXTS_PER_REQUEST = 8
WORDS = [
    "dog",
    "cat",
    "rain",
    "siren",
    "engine",
    "bell",
    "bird",
    "horn",
    "drum",
    "glass",
    "door",
    "wind",
    "train",
    "clock",
    "water",
    "fire",
    "baby",
    "crowd",
]
LABELS = "siren, smoke alarm, doorbell, rain, speech, dog barking, glass breaking, baby crying"


def require_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(socket.gethostbyname(host)).is_loopback:
        sys.exit(f"refusing to load-test {host}: only loopback addresses are allowed")


def start_server(model: str, port: int, extra: list[str]) -> subprocess.Popen:
    env = {**os.environ, "SOUNDSIFT_MODEL": model, "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen(
        [sys.executable, "-m", "soundsift", "serve", "--port", str(port), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).ok:
                return process
        except requests.ConnectionError:
            time.sleep(0.5)
    process.kill()
    sys.exit("server did not become ready in 300 s")


def run_level(
    url: str, audio: bytes, clients: int, total: int, max_seconds: float, model: str | None = None
) -> dict[str, float]:
    deadline = time.monotonic() + max_seconds
    latencies: list[float] = []
    errors = 0

    def one(_: int) -> tuple[bool, float]:
        if time.monotonic() > deadline:
            return True, -1.0
        started = time.perf_counter()
        form = {"labels": LABELS, **({"model": model} if model else {})}
        response = requests.post(
            f"{url}/api/classify", files={"audio": ("clip.ogg", audio)}, data=form, timeout=max_seconds
        )
        return response.ok, time.perf_counter() - started

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for ok, latency in pool.map(one, range(total)):
            if latency >= 0:
                latencies.append(latency)
                errors += not ok
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / wall,
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
    }


def percentile_ms(latencies: list[float], fraction: float) -> float:
    ordered = sorted(latencies)
    return 1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


class Traffic:
    """One kind of client for the mixed phases: ``send`` makes one request and returns how many
    items (clips, texts, queries) it carried."""

    def __init__(self, name: str, clients: int, send: Callable[[requests.Session, int], int]) -> None:
        self.name, self.clients, self.send = name, clients, send


# One numbering for every phase, so that no phase re-sends a text or query an earlier phase sent
# (the server would answer it from its text cache, and the mixed figures would count cache hits).
REQUEST_NUMBERS = itertools.count()


def run_phase(traffic: list[Traffic], seconds: float) -> dict[str, dict[str, float]]:
    """Every client of every traffic kind sends requests back to back for ``seconds``."""
    deadline = time.monotonic() + seconds
    latencies: dict[str, list[float]] = {kind.name: [] for kind in traffic}
    items = dict.fromkeys(latencies, 0)
    errors = dict.fromkeys(latencies, 0)
    lock = threading.Lock()

    def client(kind: Traffic) -> None:
        with requests.Session() as session:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    count = kind.send(session, next(REQUEST_NUMBERS))
                except requests.RequestException:
                    count = -1
                elapsed = time.perf_counter() - started
                with lock:
                    if count < 0:
                        errors[kind.name] += 1
                    else:
                        latencies[kind.name].append(elapsed)
                        items[kind.name] += count

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(sum(kind.clients for kind in traffic)) as pool:
        for future in [pool.submit(client, kind) for kind in traffic for _ in range(kind.clients)]:
            future.result()
    wall = time.perf_counter() - started
    return {
        name: {
            "requests": len(times),
            "errors": errors[name],
            "items_per_s": round(items[name] / wall, 2),
            "p50_ms": round(percentile_ms(times, 0.5), 1),
            "p95_ms": round(percentile_ms(times, 0.95), 1),
        }
        for name, times in latencies.items()
    }


def mixed_load(url: str, audio: bytes, args: argparse.Namespace) -> dict[str, object]:
    def classify(session: requests.Session, _: int) -> int:
        response = session.post(
            f"{url}/api/classify", files={"audio": ("clip.ogg", audio)}, data={"labels": LABELS}, timeout=120
        )
        return 1 if response.ok else -1

    def texts(session: requests.Session, number: int) -> int:
        fresh = [f"{WORDS[(number + i) % len(WORDS)]} sound {number}-{i}" for i in range(TEXTS_PER_REQUEST)]
        response = session.post(f"{url}/api/embed/text", json={"texts": fresh}, timeout=120)
        return len(fresh) if response.ok else -1

    def search(session: requests.Session, number: int) -> int:
        query = f"{WORDS[number % len(WORDS)]} and {WORDS[(number * 7) % len(WORDS)]} number {number}"
        response = session.post(f"{url}/api/search", data={"query": query, "top": "5"}, timeout=120)
        return 1 if response.ok else -1

    classifying = Traffic("classify", args.classify_clients, classify)
    embedding = Traffic("text", args.text_clients, texts)
    phases = {
        "classify_alone": [classifying],
        "text_alone": [embedding],
        "both": [classifying, embedding],
    }
    if args.search:
        search(requests.Session(), next(REQUEST_NUMBERS))  # untimed: the first search opens the index
        searching = Traffic("search", args.text_clients, search)
        phases.update({"search_alone": [searching], "classify_and_search": [classifying, searching]})
    figures: dict[str, object] = {}
    for phase, traffic in phases.items():
        figures[phase] = run_phase(traffic, args.mixed_seconds)
        print(f"{phase:<20} " + "  ".join(describe(name, row) for name, row in figures[phase].items()), flush=True)
    figures["work_fraction"] = work_fraction(figures, "both", "text_alone", "text")
    print(f"work done under mixed load, as a fraction of each alone: {figures['work_fraction']:.2f}")
    if args.search:
        figures["search_work_fraction"] = work_fraction(figures, "classify_and_search", "search_alone", "search")
        print(f"the same with search queries: {figures['search_work_fraction']:.2f}")
    return figures


def describe(name: str, row: dict[str, float]) -> str:
    unit = {"classify": "clips/s", "text": "texts/s", "search": "queries/s"}[name]
    return f"{name}: {row['items_per_s']:.2f} {unit}, p50 {row['p50_ms']:.0f} ms, p95 {row['p95_ms']:.0f} ms"


def work_fraction(figures: dict, mixed: str, other_alone: str, other: str) -> float:
    clips = figures[mixed]["classify"]["items_per_s"] / max(figures["classify_alone"]["classify"]["items_per_s"], 1e-9)
    rest = figures[mixed][other]["items_per_s"] / max(figures[other_alone][other]["items_per_s"], 1e-9)
    return round(clips + rest, 3)


def build_index(model: str, extra: list[str]) -> str:
    """An index of the example clips, made with `soundsift index` with the server's model flags
    (``--backend X`` / ``--backend=X``, ``--quantize``), for the search phases."""
    folder = tempfile.mkdtemp(prefix="soundsift-load-index-")
    model_flags: list[str] = []
    for position, flag in enumerate(extra):
        name = flag.split("=", 1)[0]
        if name in ("--backend", "--quantize"):
            model_flags.append(flag)
            if "=" not in flag and position + 1 < len(extra):
                model_flags.append(extra[position + 1])
    command = [sys.executable, "-m", "soundsift", "index", str(EXAMPLES), "--index", folder, "--model", model]
    subprocess.run([*command, *model_flags], check=True, stdout=subprocess.DEVNULL)
    return folder


def process_peak_rss_mb(pid: int) -> float:
    """The started server's peak resident memory so far (VmHWM), MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="a running server (loopback only)")
    parser.add_argument("--start-server", action="store_true", help="start soundsift serve on a free port")
    parser.add_argument("--model", default=os.environ.get("SOUNDSIFT_MODEL"), help="model for --start-server")
    parser.add_argument("--audio", type=Path, default=EXAMPLE)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=48, help="requests per concurrency level")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time cap per level")
    parser.add_argument("--mixed", action="store_true", help="also measure classify and text clients together")
    parser.add_argument("--mixed-seconds", type=float, default=30.0, help="length of each mixed phase")
    parser.add_argument("--classify-clients", type=int, default=6)
    parser.add_argument("--text-clients", type=int, default=2, help="text (and search) clients")
    parser.add_argument("--search", action="store_true", help="with --start-server: search clients too")
    parser.add_argument("--serve-args", default="", help="extra `soundsift serve` flags for --start-server")
    parser.add_argument(
        "--classify-model", help="the classify requests' 'model' field (a served model, or A+B: an ensemble)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    server = None
    if args.start_server:
        if not args.model:
            sys.exit("--start-server needs --model (e.g. from benchmarks/random_model.py)")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        extra = shlex.split(args.serve_args)
        if args.search:
            extra += ["--search-index", build_index(args.model, extra)]
        server = start_server(args.model, port, extra)
        args.url = f"http://127.0.0.1:{port}"
    if not args.url:
        sys.exit("give --url or --start-server")
    require_loopback(args.url)
    audio = args.audio.read_bytes()
    info = requests.get(f"{args.url}/api/info", timeout=10).json()
    print(
        f"model {info['model']} on {', '.join(info['devices'])}; audio {args.audio.name}; "
        f"{len(LABELS.split(','))} labels"
    )
    print(f"{'clients':>7} {'requests':>8} {'errors':>6} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8}")
    figures: dict[str, object] = {"model": info["model"], "devices": info["devices"], "levels": []}
    try:
        for clients in args.clients:
            row = run_level(args.url, audio, clients, args.requests, args.max_seconds, args.classify_model)
            figures["levels"].append(row)  # type: ignore[attr-defined]
            print(
                f"{row['clients']:>7} {row['requests']:>8} {row['errors']:>6} {row['rps']:>7.2f} "
                f"{row['p50_ms']:>8.0f} {row['p95_ms']:>8.0f}"
            )
        if args.mixed:
            figures["mixed"] = mixed_load(args.url, audio, args)
        if server:
            figures["server_peak_rss_mb"] = process_peak_rss_mb(server.pid)
            print(f"server peak RSS: {figures['server_peak_rss_mb']:.0f} MB")
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
    finally:
        if server:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
