"""Reading a batch upload (loose files and ZIP archives) without trusting it.

ZIP members are never extracted to disk: each is read into memory when its turn comes, and
`zipfile` stops at the size the archive declares (and checks the CRC), so the limits below,
checked against the declared sizes before anything is read, bound the work. Whatever is
refused is reported with the reason; decoding (non-images) is checked by the caller with
`images.open_image`, which adds its own refusals.
"""
from __future__ import annotations

import lzma
import os
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from stylegan.images import MAX_FILE_BYTES

MAX_BATCH_FILES = 100
MAX_BATCH_BYTES = 2 * 1024**3  # total uncompressed size of a batch's ZIP members
MAX_COMPRESSION_RATIO = 100  # deflate reaches ~1000:1 only on degenerate (bomb-like) data
RATIO_CHECK_MIN_BYTES = 1024**2  # small members may compress well legitimately
# What `zipfile` raises on a corrupt, truncated or unsupported archive, its own and its decompressors'.
ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError, ValueError, zlib.error,
              lzma.LZMAError)


class UnreadableMember(ValueError):
    """A ZIP member that cannot be read (corrupt, truncated, encrypted or compressed unsupportedly)."""


@dataclass(frozen=True)
class BatchItem:
    name: str  # as shown to the user: "scan.tif" or "box3.zip/folder/scan.tif"
    path: Path  # the uploaded file
    member: str | None = None  # the ZIP member, when the item comes from an archive

    def read(self) -> bytes:
        if self.member is None:
            return self.path.read_bytes()
        try:
            with zipfile.ZipFile(self.path) as archive:
                return archive.read(self.member)
        except ZIP_ERRORS as error:
            raise UnreadableMember(f"cannot be read from the ZIP ({type(error).__name__}: {error})") from error


@dataclass(frozen=True)
class Refusal:
    name: str
    reason: str


def collect_batch(uploads: Sequence[tuple[str, str | os.PathLike]], *, max_files: int = MAX_BATCH_FILES,
                  max_bytes: int = MAX_BATCH_BYTES) -> tuple[list[BatchItem], list[Refusal]]:
    """Split `(name, path)` uploads into items to process and refusals; ZIPs are expanded (one level)."""
    items: list[BatchItem] = []
    refused: list[Refusal] = []
    zip_bytes = 0
    for name, path in uploads:
        path = Path(path)
        if not zipfile.is_zipfile(path):
            if len(items) >= max_files:
                refused.append(Refusal(name, f"over the limit of {max_files} files per batch"))
            else:
                items.append(BatchItem(name, path))
            continue
        members, member_refusals, declared = _zip_members(name, path)
        refused += member_refusals
        if len(items) + len(members) > max_files:
            refused.append(Refusal(name, f"holds {len(members)} files; a batch takes at most {max_files} "
                                         f"({max_files - len(items)} places were left)"))
        elif zip_bytes + declared > max_bytes:
            refused.append(Refusal(name, f"would expand to {declared:,} bytes, over the batch limit of "
                                         f"{max_bytes:,} bytes (possible zip bomb)"))
        else:
            zip_bytes += declared
            items += members
    return items, refused


def _zip_members(name: str, path: Path) -> tuple[list[BatchItem], list[Refusal], int]:
    """Safe members of one ZIP, the refused ones, and the accepted members' declared total size."""
    members: list[BatchItem] = []
    refused: list[Refusal] = []
    declared = 0
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except ZIP_ERRORS as error:
        return [], [Refusal(name, f"not a readable ZIP archive ({type(error).__name__}: {error})")], 0
    for info in infos:
        if not info.filename:  # zipfile's is_dir() itself fails on an empty name
            refused.append(Refusal(f"{name}/<unnamed>", "a ZIP member without a file name"))
            continue
        if info.is_dir():
            continue
        label = f"{name}/{info.filename}"
        reason = _member_problem(info)
        if reason:
            refused.append(Refusal(label, reason))
            continue
        members.append(BatchItem(label, path, info.filename))
        declared += info.file_size
    return members, refused, declared


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        return "unsafe path in the ZIP (absolute or containing '..': zip slip)"
    if info.flag_bits & 0x1:
        return "encrypted ZIP member"
    if name.lower().endswith(".zip"):
        return "ZIP inside a ZIP: nested archives are not expanded"
    if info.file_size > MAX_FILE_BYTES:  # refused before anything is read into memory
        return f"{info.file_size:,} bytes uncompressed, over the limit of {MAX_FILE_BYTES:,} bytes per file"
    if info.file_size >= RATIO_CHECK_MIN_BYTES and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
        return (f"compression ratio {info.file_size // max(info.compress_size, 1):,}:1 is over "
                f"{MAX_COMPRESSION_RATIO}:1 (possible zip bomb)")
    return None
