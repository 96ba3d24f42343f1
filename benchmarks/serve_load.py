"""Load and latency of the served model (`make serve MODEL=patchcore`), loopback only.

Sends N requests from C concurrent clients (one keep-alive HTTP connection each) to
``POST /invocations`` and prints p50/p95/p99 latency, images/s and errors. Two modes:

    # single-image requests (default: 500 requests, 4 clients)
    python benchmarks/serve_load.py --serve --images data/01_raw/wood/test
    # 16-image requests
    python benchmarks/serve_load.py --serve --images data/01_raw/wood/test --batch 16 --requests 100
    # both, one after the other
    python benchmarks/serve_load.py --images ... --mode both

``--serve`` starts ``mlflow models serve -m models:/wood-anomaly-<model>/latest --env-manager local``
itself (the command ``make serve`` runs; tracking store: ``--tracking-uri``, default the project's
``sqlite:///mlflow.db``) on a free port and stops it at the end; otherwise ``--url`` must be a running
server on 127.0.0.1 / localhost.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def board_files(images: Path) -> list[Path]:
    files = sorted(p for p in Path(images).rglob("*") if p.suffix.lower() in SUFFIXES and "ground_truth" not in p.parts)
    if not files:
        sys.exit(f"no images under {images}")
    return files


def request_body(files: list[Path]) -> bytes:
    data = [[base64.b64encode(f.read_bytes()).decode("ascii")] for f in files]
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": data}}).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str, tracking_uri: str, port: int) -> subprocess.Popen:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "MLFLOW_TRACKING_URI": tracking_uri}
    process = subprocess.Popen(
        [str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/wood-anomaly-{model}/latest",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"mlflow models serve exited with {process.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.5)
    os.killpg(process.pid, signal.SIGTERM)
    sys.exit("server did not answer /ping within 180 s")


def run_load(host: str, port: int, bodies: list[bytes], images_per_request: int, requests: int, clients: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=120)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            body = bodies[i % len(bodies)]
            start = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
                reply = conn.getresponse()
                payload = reply.read()
                elapsed = time.perf_counter() - start
                ok = reply.status == 200 and len(json.loads(payload)["predictions"]) == images_per_request
            except Exception as exc:  # noqa: BLE001 - counted as an error, the load goes on
                elapsed, ok, payload = time.perf_counter() - start, False, str(exc).encode()
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=120)
            with lock:
                latencies.append(elapsed)
                if not ok:
                    errors.append(payload[:200].decode(errors="replace"))
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    wall = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall
    ms = np.asarray(latencies) * 1000.0
    return {
        "requests": len(latencies), "clients": clients, "images_per_request": images_per_request,
        "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()),
        "images_per_s": (len(latencies) - len(errors)) * images_per_request / wall, "wall_s": wall,
        "errors": len(errors), "first_error": errors[0] if errors else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=ROOT / "data/01_raw/wood/test")
    parser.add_argument("--url", default="http://127.0.0.1:5055")
    parser.add_argument("--serve", action="store_true", help="start `mlflow models serve` (as make serve) on a free port")
    parser.add_argument("--model", default="patchcore")
    parser.add_argument("--tracking-uri", default=f"sqlite:///{ROOT / 'mlflow.db'}")
    parser.add_argument("--mode", choices=["single", "batch", "both"], default=None)
    parser.add_argument("--batch", type=int, default=1, help="images per request (mode single=1, batch=16)")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--batch-requests", type=int, default=100, help="requests in the 16-image mode of --mode both")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=8)
    args = parser.parse_args()

    url = urlparse(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    if host not in LOOPBACK:
        sys.exit(f"loopback only: {host} is not 127.0.0.1/localhost")
    server = None
    if args.serve:
        host, port = "127.0.0.1", free_port()
        server = start_server(args.model, args.tracking_uri, port)
    files = board_files(args.images)
    modes = {"single": [1], "batch": [16], "both": [1, 16], None: [args.batch]}[args.mode]
    try:
        for size in modes:
            groups = [files[i : i + size] for i in range(0, len(files), size)]
            groups = [g for g in groups if len(g) == size] or [files[:size]]
            bodies = [request_body(g) for g in groups]
            n = args.requests if (size == 1 or args.mode is None) else args.batch_requests
            run_load(host, port, bodies, size, min(args.warmup, n), min(args.clients, 2))  # warm-up, not counted
            stats = run_load(host, port, bodies, size, n, args.clients)
            print(
                f"{stats['images_per_request']:>2} image(s)/request, {stats['requests']} requests, {stats['clients']} clients: "
                f"p50 {stats['p50_ms']:.1f} ms, p95 {stats['p95_ms']:.1f} ms, p99 {stats['p99_ms']:.1f} ms, "
                f"{stats['images_per_s']:.1f} images/s, errors {stats['errors']} (wall {stats['wall_s']:.1f} s)"
            )
            if stats["first_error"]:
                print("first error:", stats["first_error"])
            print(json.dumps(stats))
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
