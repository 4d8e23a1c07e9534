"""Files written whole or not at all: the one way this project writes a file.

`write_file` writes to a temporary name (beside the target, or in a staging folder on the same
filesystem), flushes and fsyncs it, and renames it into place; `stage_file` stops before the
rename, for callers that rename inside a transaction of their own (the archive). Whatever
happens on the way (a full disk, an exception in the caller's writer, an interrupt), the
temporary file is removed and the target is left as it was.

Temporary names hold the writing process's id and a random part, so writers in several
processes never collide. Every byte goes through `write_chunk`: tests replace it to make a
write fail as a full disk does (`OSError(errno.ENOSPC)`).
"""
from __future__ import annotations

import io
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMPORARY_SUFFIX = ".tmp"

Contents = bytes | Callable[[BinaryIO], object]  # the bytes, or a function that writes them to a file


def write_chunk(handle: io.FileIO, data) -> int:
    """Write `data` to `handle` (the only place file contents are written; see the module docstring)."""
    return io.FileIO.write(handle, data)


class _File(io.FileIO):
    def write(self, data) -> int:
        return write_chunk(self, data)


class _Writer(io.BufferedWriter):
    """What a writer function gets: no descriptor to write to directly (Pillow would, past `write_chunk`)."""

    def fileno(self) -> int:
        raise io.UnsupportedOperation("fileno")


def temporary_name(label: str = "") -> str:
    """'.<label>.<pid>-<random>.tmp' (hidden, and never the same in two processes or two calls)."""
    return f".{label + '.' if label else ''}{os.getpid()}-{secrets.token_hex(6)}{TEMPORARY_SUFFIX}"


def stage_file(folder: str | os.PathLike, contents: Contents, *, label: str = "", mode: int | None = None) -> Path:
    """A new file in `folder` holding `contents`, flushed and fsynced; removed again if writing fails.
    `mode`: exactly these permissions (whatever the umask); None: 0o666 as the umask allows."""
    path = Path(folder) / temporary_name(label)

    def create(name: str, flags: int) -> int:
        return os.open(name, flags, 0o666 if mode is None else mode)

    file = _File(path, "xb", opener=create)  # "x": O_EXCL, never someone else's file
    try:
        with _Writer(file) as handle:
            if isinstance(contents, (bytes, bytearray, memoryview)):
                handle.write(contents)
            else:
                contents(handle)
            handle.flush()
            os.fsync(file.fileno())
        if mode is not None:
            os.chmod(path, mode)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def write_file(path: str | os.PathLike, contents: Contents, *, overwrite: bool = True, mode: int | None = None,
               staging: str | os.PathLike | None = None) -> Path:
    """Write `contents` to `path` atomically: readers see the old file or the whole new one, never a
    part. Without `overwrite`, an existing `path` is kept and FileExistsError raised. `staging`: the
    folder for the temporary file (default: beside `path`; it must be on the same filesystem)."""
    path = Path(path)
    temporary = stage_file(path.parent if staging is None else staging, contents, label=path.name, mode=mode)
    try:
        if overwrite:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)  # atomic, and fails if `path` exists
            os.unlink(temporary)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path

