"""The app as it runs on a server: real `python app.py` processes, driven through `gradio_client`.

Two processes on one ARCHIVE_DIR (a restart overlapping the old process, or two workers),
stylising and editing each other's entries at the same time, lose nothing and corrupt nothing;
and one process under concurrent users answers every request or turns it away cleanly, with
its resident memory bounded (`benchmarks.load_app`, small).
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import load_app
from benchmarks.load_app import free_port
from tests.helpers.appprocess import running_app
from tests.helpers.appserver import PRESET
from tests.helpers.archive_checks import assert_reopened_archive_is_clean
from tests.helpers.required import required_import

gradio_client = required_import("gradio_client")
pytestmark = pytest.mark.slow
WORKERS_PER_PROCESS = 2
SCANS_PER_WORKER = 2


def write_scan(path: Path, seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (36, 44, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path)
    return path


def test_two_app_processes_on_one_archive_lose_nothing(tmp_path):
    archive_dir = tmp_path / "archive"
    with ExitStack() as stack:
        urls = [stack.enter_context(running_app(free_port(), archive_dir, tmp_path / f"{name}.log")) for name in "ab"]
        clients = [gradio_client.Client(url, analytics_enabled=False, verbose=False,
                                        download_files=str(tmp_path / "downloads")) for url in urls]
        for client in clients:
            stack.callback(client.close)

        def work(worker: int) -> list[tuple[str, str]]:
            """Stylise through one process, edit the entry through the other, search through the first."""
            own, other = clients[worker % 2], clients[1 - worker % 2]
            done = []
            for number in range(SCANS_PER_WORKER):
                seed = worker * SCANS_PER_WORKER + number
                _, _, entry, _ = own.predict(content=gradio_client.handle_file(
                    str(write_scan(tmp_path / f"scan-{seed}.png", seed))), style_source="preset", preset=PRESET,
                    title=f"scan {seed}", api_name="/stylize")
                notes = f"edited through the other process ({seed})"
                assert other.predict(entry_id=entry["id"], notes=notes, api_name="/entry_update")["notes"] == notes
                assert entry["id"] in {hit["id"] for hit in own.predict(text="scan", api_name="/archive_search")}
                done.append((entry["id"], notes))
            return done

        with ThreadPoolExecutor(2 * WORKERS_PER_PROCESS) as pool:
            acknowledged = dict(item for items in pool.map(work, range(2 * WORKERS_PER_PROCESS)) for item in items)
    assert len(acknowledged) == 2 * WORKERS_PER_PROCESS * SCANS_PER_WORKER
    archive = assert_reopened_archive_is_clean(archive_dir)  # integrity, every file whole, nothing stray
    assert {entry.id: entry.catalogue.notes for entry in archive.search()} == acknowledged


def test_under_load_every_request_is_answered_and_memory_stays_bounded(tmp_path):
    report_path = tmp_path / "load.json"
    status = load_app.main(["--users", "6", "--requests", "3", "--size", "48", "--warmup", "3",
                            "--rss-growth-mb", "300", "--json", str(report_path)])
    report = json.loads(report_path.read_text())
    assert status == 0, report
    outcomes = report["outcomes"]
    assert outcomes["hung"] == outcomes["error"] == 0
    assert outcomes["ok"] + outcomes["queue_full"] == report["requests"] == 18
    assert report["warmup_ok"] and report["request_after_load"] == "ok"
    # Resident memory (VmRSS) at the end against after the warm-up: not a lifetime high-water mark.
    assert report["rss_mb"]["growth_after_warmup"] <= 300
