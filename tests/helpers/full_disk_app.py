"""The app on an archive whose disk fills up: the subject of tests/archivist/test_disk_full.py.

    python tests/helpers/full_disk_app.py ARCHIVE_DIR

ARCHIVE_DIR is the mount point of a small, empty filesystem of its own (the test mounts a tmpfs
there in a private mount namespace, so only this process and its children see it). The app is
served in this process (`tests/appserver.serve`) and driven through `gradio_client`: two results
are archived, the disk is filled to the last byte, and then stylising, searching, viewing, editing,
deleting and stylising again after space is freed are tried. Every observation is printed as one
JSON object on the last line of stdout; the test judges them.
"""
from __future__ import annotations

import io
import json
import logging
import os
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from archivist.archive import DATABASE_FILE, TMP, Archive
from archivist.provenance import sha256_bytes
from tests.helpers.appserver import PRESET, serve

FILLER = "filler"


def scan(path: Path, seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    return path


def fill(path: Path) -> int:
    """Write to `path` until the filesystem has no room left; the bytes written."""
    written = 0
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        for chunk in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    written += os.write(descriptor, b"\0" * chunk)
            except OSError as error:
                if error.errno != 28:
                    raise
    finally:
        os.close(descriptor)
    return written


def attempt(function) -> dict:
    """{"ok": value} or {"error": message, "title": ..., "type": ...}."""
    try:
        return {"ok": function()}
    except AppError as error:
        return {"error": str(error), "title": error.title, "type": "AppError"}
    except Exception as error:  # noqa: BLE001 - reported to the test, which judges it
        return {"error": str(error), "type": type(error).__name__}


class Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage() + (" (with a traceback)" if record.exc_info else ""))


def consistency(root: Path) -> dict:
    with closing(sqlite3.connect(root / DATABASE_FILE)) as connection:
        integrity = connection.execute("PRAGMA integrity_check").fetchall()
        rows = connection.execute("SELECT id, original_file, original_sha256 FROM entries").fetchall()
    whole = all((root / original).is_file() and sha256_bytes((root / original).read_bytes()) == digest
                and (root / f"results/{entry_id}.png").is_file() and (root / f"thumbnails/{entry_id}.jpg").is_file()
                for entry_id, original, digest in rows)
    return {"integrity": integrity[0][0], "entries": sorted(row[0] for row in rows), "whole": whole,
            "temporary_files": sorted(path.name for path in (root / TMP).iterdir())}


def main(root: Path) -> None:
    logs = Count()
    logging.getLogger("archivist.archive").addHandler(logs)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"full-disk-{os.getpid()}"
    work.mkdir()
    report: dict = {}
    archive = Archive(root / "archive")
    with serve(archive) as served:
        client = Client(served.url, analytics_enabled=False, verbose=False, download_files=str(work / "downloads"))

        def stylize(seed: int) -> str:
            _, _, entry, _ = client.predict(content=handle_file(str(scan(work / f"scan-{seed}.png", seed))),
                                            style_source="preset", preset=PRESET, title=f"scan {seed}",
                                            api_name="/stylize")
            return entry["id"]

        first, second = stylize(1), stylize(2)
        report["filled_bytes"] = fill(root / FILLER)
        report["before"] = attempt(lambda: consistency(archive.root))
        report["stylize_on_full_disk"] = [attempt(lambda: stylize(3)), attempt(lambda: stylize(4))]
        report["after_refusals"] = attempt(lambda: consistency(archive.root))
        report["search"] = attempt(lambda: sorted(entry["id"] for entry in
                                                  client.predict(api_name="/archive_search")))
        report["view"] = attempt(lambda: client.predict(entry_id=first, api_name="/entry_get")["id"])
        report["edit"] = attempt(lambda: client.predict(entry_id=first, notes="checked on a full disk",
                                                        api_name="/entry_update")["notes"])
        report["delete"] = attempt(lambda: client.predict(entry_id=second, confirm=True,
                                                          api_name="/entry_delete")["deleted"])
        report["after_delete"] = attempt(lambda: consistency(archive.root))
        (root / FILLER).unlink()
        report["stylize_after_freeing"] = attempt(lambda: stylize(5))
        report["end"] = attempt(lambda: consistency(archive.root))
        report["reopened"] = attempt(lambda: len(Archive(archive.root).search()))
        client.close()
    report["first"], report["second"] = first, second
    report["warnings"] = logs.messages
    print(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
