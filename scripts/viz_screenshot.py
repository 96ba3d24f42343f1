#!/usr/bin/env python
"""Open the project's Kedro-Viz in a real headless Chromium: screenshot + check the pipeline rendered.

    python scripts/viz_screenshot.py                       # this project, default pipeline
    python scripts/viz_screenshot.py --pipeline inference --out build/viz_inference.png

Starts ``kedro viz run --no-browser`` on a free port, waits for its API, loads the page in Debian's
``chromium`` (``apt-get install -y chromium``) with a fresh profile and no network services, saves a
screenshot and the rendered DOM, and checks that the DOM names the expected nodes. Exit status 0 when
the page rendered them, 1 otherwise (2: no chromium).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary (env CHROMIUM wins), or None."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def free_port(low: int = 30000, high: int = 49000) -> int:
    """A free local TCP port below 49152 (Kedro-Viz refuses the ephemeral range)."""
    import random

    for port in random.sample(range(low, high), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free TCP port in {low}-{high}")


def wait_for(url: str, timeout: float, process: subprocess.Popen | None = None) -> bytes:
    """GET ``url`` until it answers 200 (raises TimeoutError / RuntimeError when the server died)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"kedro viz exited with status {process.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - local server
                return response.read()
        except Exception as exc:  # noqa: BLE001 - not up yet
            last = exc
            time.sleep(1.0)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s ({last})")


@contextmanager
def kedro_viz(project: Path, port: int, log_file: Path, pipeline: str | None = None, kedro: str | None = None):
    """``kedro viz run --no-browser`` in ``project`` for the duration of the block (its output in ``log_file``)."""
    kedro = kedro or str(Path(sys.executable).with_name("kedro"))
    command = [kedro, "viz", "run", "--no-browser", "--host", "127.0.0.1", "--port", str(port)]
    if pipeline:
        command += ["--pipeline", pipeline]
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "MPLBACKEND": "Agg"}
    with open(log_file, "wb") as log:
        process = subprocess.Popen(command, cwd=project, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)  # its own session: the server and any reloader child
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def chromium(binary: str, url: str, extra: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
    """One headless Chromium run with a fresh, throw-away profile."""
    with tempfile.TemporaryDirectory(prefix="viz-chromium-") as profile:
        command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1600,1000", *extra, url]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def render(binary: str, url: str, screenshot: Path, budget_ms: int = 20000, timeout: float = 120) -> str:
    """Load ``url``, let the app render (virtual time budget), save a PNG; returns the rendered DOM."""
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    budget = f"--virtual-time-budget={budget_ms}"
    dom = chromium(binary, url, [budget, "--dump-dom"], timeout)
    if dom.returncode != 0 or not dom.stdout.strip():
        raise RuntimeError(f"chromium --dump-dom failed ({dom.returncode}): {dom.stderr[-2000:]}")
    shot = chromium(binary, url, [budget, f"--screenshot={screenshot}"], timeout)
    if shot.returncode != 0 or not screenshot.is_file():
        raise RuntimeError(f"chromium --screenshot failed ({shot.returncode}): {shot.stderr[-2000:]}")
    return dom.stdout


def graph_nodes(dom: str) -> dict[str, int]:
    """Nodes drawn in the flowchart (SVG ``pipeline-node--<type>``), by type: proof the app rendered the graph."""
    import re

    counts: dict[str, int] = {}
    for kind in re.findall(r'class="pipeline-node pipeline-node--(\w+)', dom):
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def missing_names(dom: str, names: Iterable[str]) -> list[str]:
    """Names not shown in the DOM (Kedro-Viz may show 'build_comparison' as 'Build Comparison')."""
    text = dom.lower()
    return [n for n in names if n.lower() not in text and n.replace("_", " ").lower() not in text]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--pipeline", default=None, help="registered pipeline to show (default: __default__)")
    parser.add_argument("--out", type=Path, default=Path("build/viz.png"), help="screenshot path (DOM saved beside it)")
    parser.add_argument("--expect", nargs="*", default=None, help="names the page must show (default: the pipeline's namespaces)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for kedro viz to start")
    args = parser.parse_args(argv)

    binary = find_chromium()
    if binary is None:
        print("no chromium found: apt-get install -y chromium (or set CHROMIUM)", file=sys.stderr)
        return 2
    port = free_port()
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with kedro_viz(args.project, port, out.with_suffix(".server.log"), args.pipeline) as process:
        api = json.loads(wait_for(f"http://127.0.0.1:{port}/api/main", args.timeout, process))
        expected = args.expect or sorted({n["name"] for n in api["nodes"] if n.get("type") == "modularPipeline"})
        dom = render(binary, f"http://127.0.0.1:{port}/", out)
    out.with_suffix(".html").write_text(dom)
    missing = missing_names(dom, expected)
    drawn = graph_nodes(dom)
    print(f"screenshot: {out}\nDOM: {out.with_suffix('.html')} ({len(dom)} chars)\nexpected: {expected}\ngraph nodes: {drawn}")
    if missing or not drawn:
        print(f"NOT rendered: {missing or 'no graph node drawn'}", file=sys.stderr)
        return 1
    print("rendered: all expected names found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
