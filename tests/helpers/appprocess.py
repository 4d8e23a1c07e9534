"""`python app.py` in a process of its own, as a server runs it: for the browser test and the tests of
several processes on one archive."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.load_app import stop_app, wait_until_serving

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def running_app(port: int, archive_dir: Path, log: Path) -> Iterator[str]:
    """`python app.py` serving `archive_dir` on `port`; stopped (and waited for) on exit."""
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
           "ARCHIVE_DIR": str(archive_dir), "OMP_NUM_THREADS": "1"}
    env.pop("STYLE_MODEL_REPO", None)
    with open(log, "ab") as output:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=output,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(process, url, log, seconds=180)
        yield url
    finally:
        stop_app(process)
