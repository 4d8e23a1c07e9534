"""A full disk (ENOSPC).

Every file this project writes goes through `stylegan.files`, whose `write_chunk` a test can make
fail as a full disk does: each writer then raises the disk's error and leaves nothing behind (no
temporary file, the old file intact). The archive turns it into `DiskFull`, logged once, with
nothing changed; the app shows it as a gr.Error that says the archive's disk is full, without a
traceback per request. And for real: the app on an archive on a tiny tmpfs (mounted in a private
mount namespace), filled to the last byte, keeps searching, viewing, editing and deleting, and
archives again once space is freed.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import app
from archivist.archive import DATABASE_FILE, Archive, DiskFull
from archivist.credentials import LOCK_FILE, CredentialsError, Signing, local_identity
from archivist.provenance import new_record, save_with_provenance, sha256_bytes
from archivist.thumbnails import render_preset_thumbnails
from stylegan import files
from tests.helpers.appserver import PRESET, bundled_stylizer, one_torch_thread, serve, tree
from tests.helpers.archive_writer import MODEL, add
from tests.helpers.required import required_import
from training.checkpoint import list_checkpoints, save_checkpoint

gradio_client = required_import("gradio_client")
ROOT = Path(__file__).resolve().parents[2]
NO_SPACE = os.strerror(errno.ENOSPC)
WRITE_CHUNK = files.write_chunk


def no_space_under(folder: Path) -> Callable:
    """A `files.write_chunk` that fails under `folder` as a full disk does (and writes elsewhere)."""
    def write_chunk(handle, data) -> int:
        if Path(handle.name).is_relative_to(folder):
            raise OSError(errno.ENOSPC, NO_SPACE, handle.name)
        return WRITE_CHUNK(handle, data)
    return write_chunk


def database_integrity(root: Path) -> list:
    with closing(sqlite3.connect(root / DATABASE_FILE)) as connection:
        return connection.execute("PRAGMA integrity_check").fetchall()


def archive_warnings(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "archivist.archive" and record.levelno >= logging.WARNING]


def test_an_archive_write_on_a_full_disk_changes_nothing_and_is_logged_once(tmp_path, monkeypatch, caplog):
    archive = Archive(tmp_path / "archive")
    rng = random.Random(0)
    kept = [add(archive, rng, []) for _ in range(3)]
    before = tree(archive.root)
    monkeypatch.setattr(files, "write_chunk", no_space_under(archive.root))
    with caplog.at_level(logging.WARNING, logger="archivist.archive"):
        for _ in range(3):
            with pytest.raises(DiskFull, match="the archive's disk is full: the result could not be archived, "
                                               "and nothing was changed. Free space"):
                add(archive, rng, [])
        with pytest.raises(DiskFull, match="the export could not be written"):
            archive.export_zip(archive.new_export_path(), base_url="https://example.org/", include_unapproved=True)
    assert tree(archive.root) == before  # no entry, no temporary file, no partial export
    (warning,) = archive_warnings(caplog)  # once, not per refusal
    assert "is full" in warning.getMessage() and warning.exc_info is None
    assert {entry.id for entry in archive.search()} == set(kept)
    assert archive.update(kept[0], notes="seen on a full disk").catalogue.notes == "seen on a full disk"
    archive.delete(kept[1])
    assert database_integrity(archive.root) == [("ok",)]

    monkeypatch.setattr(files, "write_chunk", WRITE_CHUNK)  # space freed
    added = add(archive, rng, [])
    assert {entry.id for entry in archive.search()} == {kept[0], kept[2], added}
    monkeypatch.setattr(files, "write_chunk", no_space_under(archive.root))  # full again: logged again
    with caplog.at_level(logging.WARNING, logger="archivist.archive"), pytest.raises(DiskFull):
        add(archive, rng, [])
    assert len(archive_warnings(caplog)) == 2


# -- every writer: (the folder it writes in, the write) ------------------------------------------
WRITERS: dict[str, Callable[[Path], tuple[Path, Callable]]] = {}


def writer(function):
    WRITERS[function.__name__] = function
    return function


def _cli_save(tmp_path: Path, colour: str, **options) -> Callable:
    original = b"original"
    record = new_record(source_sha256=sha256_bytes(original), source_name="scan.png", model_info=MODEL,
                        style="preset:waves", style_strength=0.5, settings={}, seed=0)
    signing = Signing(local_identity(tmp_path / "identity"), original)
    return lambda: save_with_provenance(Image.new("RGB", (8, 6), colour), tmp_path / "out" / "a.png", record,
                                        signing=signing, **options)


@writer
def cli_result_and_sidecar(tmp_path):
    return tmp_path / "out", _cli_save(tmp_path, "red")


@writer
def cli_result_overwriting_an_old_one(tmp_path):
    (tmp_path / "out").mkdir()
    _cli_save(tmp_path, "red")()
    return tmp_path / "out", _cli_save(tmp_path, "blue", overwrite=True)


@writer
def self_issued_identity(tmp_path):
    folder = tmp_path / "identity"
    return folder, lambda: local_identity(folder)


@writer
def preset_thumbnails(tmp_path):
    folder = tmp_path / "presets"
    return folder, lambda: render_preset_thumbnails(bundled_stylizer(), folder)


@writer
def app_previews(tmp_path):
    handlers = app.Handlers(bundled_stylizer(), Archive(tmp_path / "archive"))
    image = Image.new("RGB", (8, 6))
    return handlers.preview_dir, lambda: handlers.preview_files((image, image), "entry")


@writer
def training_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    layer = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(layer.parameters())
    layer(torch.ones(1, 2)).sum().backward()
    optimizer.step()

    def save(step: int) -> Path:
        return save_checkpoint(run_dir, step, {"generator": layer}, {"generator": optimizer},
                               [torch.Generator().get_state()], {}, keep=3)
    save(1)
    return run_dir, lambda: save(2)


@pytest.mark.parametrize("name", WRITERS)
def test_every_writer_leaves_nothing_behind_on_a_full_disk(tmp_path, monkeypatch, name):
    folder, write = WRITERS[name](tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    before = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    monkeypatch.setattr(files, "write_chunk", no_space_under(folder))
    with pytest.raises((OSError, CredentialsError), match=NO_SPACE):
        write()
    after = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file() and path.name != LOCK_FILE}
    assert after == before  # no temporary file, and whatever was there is intact
    if name == "training_checkpoint":
        assert [path.name for path in list_checkpoints(folder)] == ["step-0000001"]
    monkeypatch.undo()
    write()  # with room again, the same write succeeds
    if name == "app_previews":
        shutil.rmtree(folder)


# -- the app -------------------------------------------------------------------------------------
def write_scan(path: Path, seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path)
    return path


def app_stylize(client, scan: Path) -> str:
    _, _, entry, _ = client.predict(content=gradio_client.handle_file(str(scan)), style_source="preset",
                                    preset=PRESET, title=scan.stem, api_name="/stylize")
    return entry["id"]


@pytest.mark.usefixtures(one_torch_thread.__name__)
def test_the_app_says_the_archive_disk_is_full_and_keeps_serving(tmp_path, monkeypatch, caplog, capfd):
    archive = Archive(tmp_path / "archive")
    scans = [write_scan(tmp_path / f"scan-{seed}.png", seed) for seed in range(4)]
    with serve(archive) as served:
        client = gradio_client.Client(served.url, analytics_enabled=False, verbose=False,
                                      download_files=str(tmp_path / "downloads"))
        first, second = app_stylize(client, scans[0]), app_stylize(client, scans[1])
        before = tree(archive.root)
        capfd.readouterr()
        monkeypatch.setattr(files, "write_chunk", no_space_under(archive.root))
        with caplog.at_level(logging.WARNING, logger="archivist.archive"):
            for _ in range(2):
                with pytest.raises(gradio_client.exceptions.AppError,
                                   match="the archive's disk is full: the result could not be archived") as refused:
                    app_stylize(client, scans[2])
                assert refused.value.title == "The archive's disk is full"
        assert tree(archive.root) == before
        assert {entry["id"] for entry in client.predict(api_name="/archive_search")} == {first, second}
        assert client.predict(entry_id=first, api_name="/entry_get")["title"] == "scan-0"
        assert client.predict(entry_id=first, notes="full disk", api_name="/entry_update")["notes"] == "full disk"
        assert client.predict(entry_id=second, confirm=True, api_name="/entry_delete")["deleted"] == second
        monkeypatch.undo()  # space freed
        third = app_stylize(client, scans[3])
        assert {entry["id"] for entry in client.predict(api_name="/archive_search")} == {first, third}
        client.close()
    (warning,) = archive_warnings(caplog)
    assert warning.exc_info is None
    assert "Traceback" not in capfd.readouterr().err  # one log line, not a traceback per request
    assert database_integrity(archive.root) == [("ok",)]


def private_tmpfs_command(mount_point: Path, size: str, argv: list[str]) -> list[str]:
    """`argv` run in a mount namespace of its own, with a `size` tmpfs mounted at `mount_point` (as root,
    or in a user namespace where root is mapped to the caller)."""
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    script = 'mount -t tmpfs -o "size=$1" tmpfs "$2" && shift 2 && exec "$@"'
    return ["unshare", *user, "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", size,
            str(mount_point), *argv]


@pytest.fixture
def tiny_filesystem(tmp_path) -> Callable[[list[str]], list[str]]:
    """A command prefix that runs a command with a 3 MB tmpfs at tmp_path/disk; skipped where no
    filesystem can be mounted (no root and no user namespaces)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    probe = subprocess.run(private_tmpfs_command(mount_point, "3m", ["true"]) if shutil.which("unshare") else ["false"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a private mount namespace here ({probe.stderr.strip() or 'no unshare'}); "
                    "the write-hook tests above still cover the archive on a full disk")
    return lambda argv: private_tmpfs_command(mount_point, "3m", argv)


@pytest.mark.slow
def test_the_app_on_a_really_full_disk(tmp_path, tiny_filesystem):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(tiny_filesystem([sys.executable, str(ROOT / "tests" / "helpers" / "full_disk_app.py"),
                                           str(tmp_path / "disk")]),
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    first, second = report["first"], report["second"]
    assert report["filled_bytes"] > 0
    for refused in report["stylize_on_full_disk"]:
        assert refused["title"] == "The archive's disk is full", refused
        assert refused["error"].startswith("the archive's disk is full: the result could not be archived"), refused
    whole = {"integrity": "ok", "entries": sorted([first, second]), "whole": True, "temporary_files": []}
    assert report["before"] == report["after_refusals"] == {"ok": whole}
    assert report["search"] == {"ok": sorted([first, second])}
    assert report["view"] == {"ok": first}
    assert report["edit"] == {"ok": "checked on a full disk"}
    assert report["delete"] == {"ok": second}
    assert report["after_delete"] == {"ok": whole | {"entries": [first]}}
    third = report["stylize_after_freeing"]["ok"]
    assert report["end"] == {"ok": whole | {"entries": sorted([first, third])}}
    assert report["reopened"] == {"ok": 2}
    assert len(report["warnings"]) == 1 and "with a traceback" not in report["warnings"][0]
    assert "Traceback" not in done.stderr
