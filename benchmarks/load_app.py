"""Load test of the app: concurrent gradio_client users on loopback, each making a few requests.

    .venv/bin/python -m benchmarks.load_app                            # 16 users × 10 requests
    .venv/bin/python -m benchmarks.load_app --users 4 --requests 3     # a quick check

Starts `python app.py` as a subprocess (bundled model, a fresh archive and Gradio upload folder
in a temporary directory, 127.0.0.1 only), warms it up, then lets the users stylise small
images with a preset, every third request an `archive_search` instead. Every request must
succeed or be turned away cleanly ("queue full"); one that takes longer than --timeout counts
as hung. A last ordinary request must succeed after the load. Reports latency percentiles per
endpoint and the app's resident memory (VmRSS from /proc/<pid>/status) at start, after the
warm-up, at its peak and at the end. Exit status 1 on any error or hang, or when RSS grows more
than --rss-growth-mb after the warm-up. Bounded: at most warm-up + users × requests + 1
requests and --max-seconds in all; then it stops the app and exits.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError

from benchmarks.common import REPO, synthetic_image

PRESETS = ("hokusai_great_wave_off_kanagawa", "van_gogh_starry_night", "munch_the_scream")
START_SECONDS = 300


@dataclass(frozen=True)
class Outcome:
    endpoint: str  # "stylize" or "archive_search"
    status: str  # "ok", "queue_full", "hung" or "error"
    seconds: float
    detail: str = ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class RssMonitor:
    """Samples the app's RSS twice a second, keeping the peak."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, rss_mb(pid), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except (OSError, RuntimeError):
                return  # the app is gone; the main thread reports that

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def start_app(workdir: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "ARCHIVE_DIR": str(workdir / "archive"), "GRADIO_TEMP_DIR": str(workdir / "gradio"),
           "HF_HUB_OFFLINE": "1"}
    for name in ("STYLE_MODEL_REPO", "STYLE_MODEL_REVISION", "ARCHIVE_AUTH"):
        env.pop(name, None)
    log = open(workdir / "app.log", "wb")  # noqa: SIM115 - the app's lifetime, closed with the process
    return subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop_app(process: subprocess.Popen) -> None:
    """Terminate an app process, killing it if it has not exited within 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until_serving(process: subprocess.Popen, url: str, log: Path, seconds: float = START_SECONDS) -> None:
    """Poll `url` until the app answers 200; RuntimeError with the log's tail if it exits or times out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"app.py did not serve within {seconds:g} s:\n{log.read_text()[-3000:]}")


def request(client: Client, endpoint: str, image: Path, preset: str, timeout: float) -> Outcome:
    start = time.perf_counter()
    if endpoint == "stylize":
        job = client.submit(content=handle_file(str(image)), style_source="preset", preset=preset, strength=0.8,
                            title=f"load test {image.stem}", tags="load-test", api_name="/stylize")
    else:
        job = client.submit(text="load test", limit=20, api_name="/archive_search")
    try:
        output = job.result(timeout=timeout)
    except TimeoutError:
        job.cancel()
        return Outcome(endpoint, "hung", time.perf_counter() - start, f"no answer within {timeout} s")
    except QueueError as error:
        return Outcome(endpoint, "queue_full", time.perf_counter() - start, str(error))
    except (AppError, ValueError, OSError, httpx.HTTPError) as error:
        return Outcome(endpoint, "error", time.perf_counter() - start, f"{type(error).__name__}: {error}")
    seconds = time.perf_counter() - start
    valid = isinstance(output, (list, tuple)) and isinstance(output[2], dict) and "id" in output[2] \
        if endpoint == "stylize" else isinstance(output, list)
    return Outcome(endpoint, "ok" if valid else "error", seconds, "" if valid else f"unexpected output {output!r}")


def user(index: int, url: str, args: argparse.Namespace, images: list[Path], deadline: float,
         downloads: Path) -> list[Outcome]:
    try:
        client = Client(url, verbose=False, analytics_enabled=False, download_files=str(downloads / str(index)))
    except Exception as error:  # noqa: BLE001 - a user that cannot even connect is a failure to report
        return [Outcome("connect", "error", 0.0, f"{type(error).__name__}: {error}")]
    outcomes = []
    try:
        for number in range(args.requests):
            if time.monotonic() > deadline:
                break
            endpoint = "archive_search" if number % args.search_every == args.search_every - 1 else "stylize"
            outcomes.append(request(client, endpoint, images[(index + number) % len(images)],
                                    PRESETS[(index + number) % len(PRESETS)], args.timeout))
    finally:
        client.close()
    return outcomes


def percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    p50, p95 = np.percentile(seconds, [50, 95])
    return {"n": len(seconds), "p50": round(float(p50), 3), "p95": round(float(p95), 3),
            "max": round(max(seconds), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=16, help="concurrent gradio_client users")
    parser.add_argument("--requests", type=int, default=10, help="requests per user")
    parser.add_argument("--search-every", type=int, default=3, help="every Nth request is an archive_search")
    parser.add_argument("--size", type=int, default=96, help="long side of the test images, px")
    parser.add_argument("--warmup", type=int, default=4, help="sequential requests before the load")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds after which a request counts as hung")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="no new request after this long")
    parser.add_argument("--rss-growth-mb", type=float, default=300.0, help="allowed RSS growth after the warm-up")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if min(args.users, args.requests, args.search_every, args.size) < 1:
        parser.error("--users, --requests, --search-every and --size must be at least 1")

    with tempfile.TemporaryDirectory(prefix="load-app-") as temporary:
        workdir = Path(temporary)
        images = []
        for index, (width, height) in enumerate([(args.size, args.size * 2 // 3), (args.size * 3 // 4, args.size),
                                                 (args.size, args.size), (args.size // 2, args.size // 3 or 1)]):
            images.append(workdir / f"scan-{index}.png")
            synthetic_image(max(width, 1), max(height, 1), seed=index).save(images[-1])
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        process = start_app(workdir, port)
        try:
            wait_until_serving(process, url, workdir / "app.log")
            rss_start = rss_mb(process.pid)
            warm_client = Client(url, verbose=False, analytics_enabled=False,
                                 download_files=str(workdir / "downloads" / "warm"))
            warmup = [request(warm_client, "archive_search" if number == args.warmup - 1 else "stylize",
                              images[number % len(images)], PRESETS[0], args.timeout) for number in range(args.warmup)]
            rss_warm = rss_mb(process.pid)
            monitor = RssMonitor(process.pid)
            deadline = time.monotonic() + args.max_seconds
            start = time.perf_counter()
            with ThreadPoolExecutor(args.users) as pool:
                futures = [pool.submit(user, index, url, args, images, deadline, workdir / "downloads")
                           for index in range(args.users)]
                outcomes = [outcome for future in futures for outcome in future.result()]
            wall = time.perf_counter() - start
            monitor.stop()
            rss_end = rss_mb(process.pid)
            after = request(warm_client, "stylize", images[0], PRESETS[0], args.timeout)  # still serving?
            warm_client.close()
        finally:
            stop_app(process)

    counts = {status: sum(1 for outcome in outcomes if outcome.status == status)
              for status in ("ok", "queue_full", "hung", "error")}
    report = {
        "users": args.users, "requests_per_user": args.requests, "requests": len(outcomes),
        "outcomes": counts, "wall_seconds": round(wall, 1),
        "throughput_per_second": round(counts["ok"] / wall, 2) if wall else 0.0,
        "latency_seconds": {endpoint: percentiles([outcome.seconds for outcome in outcomes
                                                   if outcome.endpoint == endpoint and outcome.status == "ok"])
                            for endpoint in ("stylize", "archive_search")},
        "rss_mb": {"start": round(rss_start, 1), "after_warmup": round(rss_warm, 1),
                   "peak": round(max(monitor.peak, rss_end), 1), "end": round(rss_end, 1),
                   "growth_after_warmup": round(rss_end - rss_warm, 1), "allowed_growth": args.rss_growth_mb},
        "warmup_ok": all(outcome.status == "ok" for outcome in warmup),
        "request_after_load": after.status,
        "failures": [asdict(outcome) for outcome in outcomes + warmup + [after]
                     if outcome.status in ("hung", "error")][:20],
    }
    failed = (counts["hung"] or counts["error"] or not report["warmup_ok"] or after.status != "ok"
              or report["rss_mb"]["growth_after_warmup"] > args.rss_growth_mb)
    report["passed"] = not failed
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
