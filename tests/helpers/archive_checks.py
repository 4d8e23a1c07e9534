"""An archive as a crash (or two processes at once) may leave it: intact, every entry with all its files."""
from __future__ import annotations

import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from PIL import Image

from archivist.archive import DATABASE_FILE, ORIGINALS, RESULTS, THUMBNAILS, TMP, Archive
from archivist.provenance import read_provenance, sha256_bytes


def assert_no_half_written_entry(root: Path) -> list[tuple[str, str]]:
    """Read the database as a crash left it (no sweep): intact, and every entry has all its files."""
    with closing(sqlite3.connect(root / DATABASE_FILE)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = connection.execute("SELECT id, original_file FROM entries").fetchall()
    for entry_id, original_file in rows:
        for relative in (f"{RESULTS}/{entry_id}.png", f"{THUMBNAILS}/{entry_id}.jpg", original_file):
            assert (root / relative).is_file(), f"entry {entry_id} is visible but {relative} is missing"
    return rows


def assert_reopened_archive_is_clean(root: Path) -> Archive:
    """Open as the app would (which sweeps), then check every file against the catalogue."""
    archive = Archive(root)
    assert_no_half_written_entry(root)
    entries = archive.search()
    referenced = set()
    for entry in entries:
        original = archive.path(entry.original_file).read_bytes()
        digest = sha256_bytes(original)
        assert Path(entry.original_file).stem == digest == entry.record.source_sha256
        assert read_provenance(archive.path(entry.result_file)) == entry.record
        with Image.open(archive.path(entry.thumbnail_file)) as thumbnail:
            thumbnail.verify()
        referenced |= {entry.original_file, entry.result_file, entry.thumbnail_file}
    stored = {path.relative_to(root).as_posix() for folder in (ORIGINALS, RESULTS, THUMBNAILS)
              for path in (root / folder).glob("*" if folder != ORIGINALS else "*/*") if path.is_file()}
    assert stored == referenced, f"unreferenced: {sorted(stored - referenced)}"
    # Staging files a crash left in tmp/ are swept once they are older than the grace period
    # (younger ones may belong to a live writer).
    hours_ago = time.time() - 2 * 3600
    for path in (root / TMP).iterdir():
        os.utime(path, (hours_ago, hours_ago))
    Archive(root)
    assert not any((root / TMP).iterdir())
    return archive
