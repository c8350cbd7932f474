"""HTTP load test of /api/classify on loopback: requests/s and p50/p95 latency at several concurrencies.

Bounded: each level sends at most --requests requests and stops after --max-seconds. Only loopback
targets are accepted.

    python benchmarks/load.py --start-server --model /tmp/soundsift-clap-random   # own server
    python benchmarks/load.py --url http://127.0.0.1:7860                          # running server
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ipaddress
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import requests

EXAMPLE = Path(__file__).resolve().parents[1] / "soundsift" / "examples" / "siren.ogg"
LABELS = "siren, smoke alarm, doorbell, rain, speech, dog barking, glass breaking, baby crying"


def require_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(socket.gethostbyname(host)).is_loopback:
        sys.exit(f"refusing to load-test {host}: only loopback addresses are allowed")


def start_server(model: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "SOUNDSIFT_MODEL": model, "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen(
        [sys.executable, "-m", "soundsift", "serve", "--port", str(port)],
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


def run_level(url: str, audio: bytes, clients: int, total: int, max_seconds: float) -> dict[str, float]:
    deadline = time.monotonic() + max_seconds
    latencies: list[float] = []
    errors = 0

    def one(_: int) -> tuple[bool, float]:
        if time.monotonic() > deadline:
            return True, -1.0
        started = time.perf_counter()
        response = requests.post(
            f"{url}/api/classify", files={"audio": ("clip.ogg", audio)}, data={"labels": LABELS}, timeout=max_seconds
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="a running server (loopback only)")
    parser.add_argument("--start-server", action="store_true", help="start soundsift serve on a free port")
    parser.add_argument("--model", default=os.environ.get("SOUNDSIFT_MODEL"), help="model for --start-server")
    parser.add_argument("--audio", type=Path, default=EXAMPLE)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=48, help="requests per concurrency level")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time cap per level")
    args = parser.parse_args()

    server = None
    if args.start_server:
        if not args.model:
            sys.exit("--start-server needs --model (e.g. from benchmarks/random_model.py)")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = start_server(args.model, port)
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
    try:
        for clients in args.clients:
            row = run_level(args.url, audio, clients, args.requests, args.max_seconds)
            print(
                f"{row['clients']:>7} {row['requests']:>8} {row['errors']:>6} {row['rps']:>7.2f} "
                f"{row['p50_ms']:>8.0f} {row['p95_ms']:>8.0f}"
            )
    finally:
        if server:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
