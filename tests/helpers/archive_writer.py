"""A process that writes to an archive until it is killed: the subject of tests/archivist/test_crash_safety.py.

    python tests/helpers/archive_writer.py ROOT

runs a zygote: it imports the library once, then reads commands on stdin and forks one writer
per command, so that each of the test's many "restarts" is a fresh process without paying for
`import torch` again. (The zygote itself never computes anything, so forking it is safe.)

    write SEED             a writer that adds, edits and deletes entries in a loop until killed
                           (or for MAX_SECONDS); it prints "added ID", "updated ID NOTES", "deleted ID"
                           after each operation has returned, and "updating ID NOTES" and "deleting ID"
                           before an edit and a delete
    crash OP WHEN N SEED   one `add` or `delete` (OP) that exits at once, as if killed, before or
                           after (WHEN) its N-th file rename or unlink; prints "completed" if the
                           operation finished without reaching it
    reap                   wait for the last writer; prints "reaped STATUS"

Every writer opens the archive as the app does on start (`Archive(root)`, which sweeps orphans).
"""
from __future__ import annotations

import io
import os
import random
import sys
import time
import traceback
from types import SimpleNamespace

import numpy as np
from PIL import Image

from archivist.archive import Archive, Catalogue
from archivist.pipeline import Job, StyleChoice, ToArchive, stylize
from stylegan.inference import ModelInfo, StylizeSettings

MAX_SECONDS = 60  # a writer whose test has gone away stops by itself
MODEL = ModelInfo("test/crash", "0" * 40, "ab" * 32, "")
STAND_IN_STYLIZER = SimpleNamespace(presets={"waves": None}, model_info=MODEL, style_image_features="VGG19 int8")
CRASH_STATUS = 99


def mirror(content, style, settings, progress):
    """A stand-in for the network: the work under test is the archive's, not the model's."""
    yield content.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def original_bytes(rng: random.Random) -> bytes:
    width, height = rng.randint(8, 48), rng.randint(8, 48)
    pixels = np.random.default_rng(rng.getrandbits(32)).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, rng.choice(["PNG", "JPEG"]))
    return buffer.getvalue()


def add(archive: Archive, rng: random.Random, originals: list[bytes]) -> str:
    # One in four reuses an earlier original, so shared originals are created and deleted too.
    original = rng.choice(originals) if originals and rng.random() < 0.25 else original_bytes(rng)
    originals.append(original)
    name = f"scan-{rng.randint(0, 999)}.img"
    job = Job(StyleChoice.preset("waves"), StylizeSettings(strength=0.5, seed=rng.randint(0, 99)))
    destination = ToArchive(archive, Catalogue(title=f"entry {rng.random():.6f}", tags=("crash",)))
    return stylize(STAND_IN_STYLIZER, original, name, job, destination, run=mirror).kept.id


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def write_until_killed(root: str, seed: int) -> None:
    rng = random.Random(seed)
    archive = Archive(root)
    originals: list[bytes] = []
    deadline = time.monotonic() + MAX_SECONDS
    while time.monotonic() < deadline:
        entries = archive.search(limit=50)
        choice = rng.random()
        if entries and choice < 0.3:
            entry_id = rng.choice(entries).id
            say(f"deleting {entry_id}")
            archive.delete(entry_id)
            say(f"deleted {entry_id}")
        elif entries and choice < 0.45:
            entry_id, notes = rng.choice(entries).id, f"edited {rng.random():.6f}"
            say(f"updating {entry_id} {notes}")
            archive.update(entry_id, notes=notes, tags=["crash", "edited"])
            say(f"updated {entry_id} {notes}")
        else:
            say(f"added {add(archive, rng, originals)}")


def crash_during(root: str, operation: str, when: str, count: int, seed: int) -> None:
    """Run one operation, exiting (no cleanup, no atexit) at its `count`-th rename or unlink."""
    rng = random.Random(seed)
    archive = Archive(root)
    calls = 0

    def cut(real):
        def call(*args, **kwargs):
            nonlocal calls
            calls += 1
            if calls == count and when == "before":
                os._exit(CRASH_STATUS)
            result = real(*args, **kwargs)
            if calls == count and when == "after":
                os._exit(CRASH_STATUS)
            return result
        return call

    os.replace, os.rename, os.unlink = cut(os.replace), cut(os.rename), cut(os.unlink)
    if operation == "add":
        add(archive, rng, [])
    else:
        entries = archive.search()
        archive.delete(rng.choice(entries).id)
    say("completed")


def zygote(root: str) -> None:
    child = None
    for line in sys.stdin:
        command, *arguments = line.split()
        if command == "reap":
            _, status = os.waitpid(child, 0)
            say(f"reaped {status}")
            continue
        child = os.fork()
        if child == 0:
            status = 0
            try:
                if command == "write":
                    write_until_killed(root, int(arguments[0]))
                else:
                    operation, when, count, seed = arguments
                    crash_during(root, operation, when, int(count), int(seed))
            except BaseException:  # noqa: BLE001 - reported, and the status says so
                traceback.print_exc()
                status = 1
            os._exit(status)  # never return into the zygote's loop
        say(f"pid {child}")


if __name__ == "__main__":
    zygote(sys.argv[1])
