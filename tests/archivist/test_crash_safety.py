"""Crash safety of the archive: a writer killed with SIGKILL at random (seeded) moments, and at
every file rename and unlink of `add` and `delete`, never leaves a half-written entry; the next
open sweeps whatever the crash left behind, and the database passes SQLite's integrity check.

The writer is `tests/helpers/archive_writer.py` (the real `Archive` and `archivist.pipeline.stylize`, with a
stand-in for the network), forked afresh for every life from one zygote process.
"""
from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers.archive_checks import assert_no_half_written_entry, assert_reopened_archive_is_clean
from tests.helpers.archive_writer import CRASH_STATUS

ROOT = Path(__file__).resolve().parents[2]
LIVES = 20
SEED = 1917
REPLY_SECONDS = 120  # generous: the machine may be busy; a hang still fails
ACKNOWLEDGEMENTS = ("added", "updating", "updated", "deleting", "deleted")


class Writer:
    """The zygote of tests/helpers/archive_writer.py, with every line it and its children print."""

    def __init__(self, root: Path, log: Path) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        self.log = log
        with open(log, "wb") as stderr:
            self.process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "helpers" / "archive_writer.py"), str(root)],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                            cwd=ROOT, env=env)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.acknowledged: list[tuple[str, str]] = []  # (one of ACKNOWLEDGEMENTS, entry id [and notes])
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def next_line(self) -> str:
        try:
            line = self.lines.get(timeout=REPLY_SECONDS)
        except queue.Empty:
            raise AssertionError(f"the writer said nothing for {REPLY_SECONDS} s:\n{self.log.read_text()[-3000:]}")
        if line is None:
            raise AssertionError(f"the writer's zygote exited:\n{self.log.read_text()[-3000:]}")
        return line

    def wait_for(self, prefix: str | None) -> str:
        """The rest of the next line starting with `prefix` (None: of the next acknowledgement);
        acknowledgements on the way are kept."""
        while True:
            word, _, rest = self.next_line().partition(" ")
            if word in ACKNOWLEDGEMENTS:
                self.acknowledged.append((word, rest))
                if prefix is None:
                    return rest
            elif word == prefix:
                return rest

    def command(self, line: str, reply: str) -> str:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.wait_for(reply)

    def count(self, kind: str) -> int:
        return sum(1 for word, _ in self.acknowledged if word == kind)


@contextmanager
def writer_zygote(root: Path, log: Path) -> Iterator[Writer]:
    writer = Writer(root, log)
    try:
        yield writer
    finally:
        writer.process.stdin.close()
        try:
            writer.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            writer.process.kill()
            writer.process.wait()


def test_random_kills_never_leave_a_half_written_entry(tmp_path):
    root = tmp_path / "archive"
    rng = random.Random(SEED)
    with writer_zygote(root, tmp_path / "writer.log") as writer:
        for life in range(LIVES):
            pid = int(writer.command(f"write {life}", "pid"))
            # Let it get a random number of operations in (0: still opening and sweeping), then
            # kill it a random moment later: inside an operation most of the time.
            for _ in range(rng.randint(0, 4)):
                writer.wait_for(None)
            time.sleep(rng.uniform(0.0, 0.15))
            os.kill(pid, signal.SIGKILL)
            status = int(writer.command("reap", "reaped"))
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
                f"the writer ended by itself (status {status}):\n{writer.log.read_text()[-3000:]}")
            assert_no_half_written_entry(root)
        acknowledged = list(writer.acknowledged)
    assert min(writer.count(kind) for kind in ACKNOWLEDGEMENTS) > 0, acknowledged
    archive = assert_reopened_archive_is_clean(root)
    kept = {entry.id for entry in archive.search()}
    added = {entry_id for word, entry_id in acknowledged if word == "added"}
    deleted = {entry_id for word, entry_id in acknowledged if word == "deleted"}
    maybe_deleted = {entry_id for word, entry_id in acknowledged if word == "deleting"}  # killed during it
    assert added - maybe_deleted <= kept, "a committed entry was lost"
    assert not deleted & kept, "a committed delete came back"
    edited = {entry_id: possible for entry_id, possible in edits_that_may_show(acknowledged).items() if entry_id in kept}
    assert edited, acknowledged  # something to check
    for entry_id, possible in edited.items():
        assert archive.get(entry_id).catalogue.notes in possible, f"a committed edit of {entry_id} was lost"


def edits_that_may_show(acknowledged: list[tuple[str, str]]) -> dict[str, set[str]]:
    """{entry id: the notes it may show now}: those of its last acknowledged edit (before any, the empty
    notes it was added with), or of an edit announced after it (killed in flight: committed or not)."""
    possible: dict[str, set[str]] = {}
    for word, rest in acknowledged:
        if word in ("updating", "updated"):
            entry_id, notes = rest.split(" ", 1)
            possible[entry_id] = {notes} if word == "updated" else possible.get(entry_id, {""}) | {notes}
    return possible


def test_a_crash_at_any_file_step_of_add_or_delete_is_recovered(tmp_path):
    root = tmp_path / "archive"
    crashes = 0
    with writer_zygote(root, tmp_path / "writer.log") as writer:
        for seed in range(6):  # something to delete
            writer.command(f"crash add after 1000 {seed}", "pid")
            assert int(writer.command("reap", "reaped")) == 0
        for operation in ("add", "delete"):
            for when in ("before", "after"):
                for count in range(1, 20):
                    writer.command(f"crash {operation} {when} {count} {count}", "pid")
                    status = int(writer.command("reap", "reaped"))
                    assert_no_half_written_entry(root)
                    if os.waitstatus_to_exitcode(status) == 0:
                        break  # the operation has fewer steps than `count`: all were cut
                    assert os.waitstatus_to_exitcode(status) == CRASH_STATUS, writer.log.read_text()[-3000:]
                    crashes += 1
                else:
                    raise AssertionError(f"{operation} never completed")
    assert crashes >= 8  # add renames and unlinks 3 files each; delete removes up to 3
    assert_reopened_archive_is_clean(root)
