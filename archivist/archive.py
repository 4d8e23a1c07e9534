"""The archive: every result with its untouched original, a thumbnail and a catalogue record.

Layout under one root directory (nothing else is written there):

    archive.sqlite3                 catalogue (SQLite, with a persistent rollback journal beside it)
    originals/ab/<sha256>.<ext>     originals, byte for byte, named by the SHA-256 of their bytes
    results/<id>.png                full-resolution results with their provenance embedded
    thumbnails/<id>.jpg             entry thumbnails
    thumbnails/presets/             model-rendered preset thumbnails (see `thumbnails.py`)
    exports/                        ZIP exports, kept for an hour
    tmp/                            files being written
    credentials/                    the self-issued signing identity, made on first use when no
                                    institution's identity is given (never served)

Files are written to tmp/ and renamed into place inside the transaction that records them;
a deleted entry's row is forgotten first and its files unlinked after that has committed. A
crash therefore leaves at most unreferenced files, which `sweep_orphans` (run whenever an
archive is opened) removes, never an entry without its files. An original shared by several
entries stays until the last of them is deleted.

Several processes may share one archive: SQLite's locks (waited for up to BUSY_TIMEOUT
seconds) order their writes, file names cannot collide, and a sweep leaves temporary files
younger than TMP_GRACE_SECONDS alone, since another process may be writing them.

A full disk refuses writes (`DiskFull`) and changes nothing, while everything else keeps
working: the catalogue uses a rollback journal that SQLite keeps allocated between transactions
(`journal_mode = PERSIST`; WAL would need room for its shared-memory index even to read), so
searching, viewing and deleting (which frees space) need no new room on the disk.

Every result is signed with Content Credentials (`credentials.py`) by the archive's identity.

How a result was made (style, strength, settings, seed, model) is its `ProvenanceRecord`,
stored as JSON and exposed as SQL columns generated from it, so the catalogue and the
metadata embedded in the file cannot disagree. What a person says about it (title, source
identifier, rights, notes, tags, approval) is its `Catalogue`, the only part that can change.
"""
from __future__ import annotations

import csv
import dataclasses
import errno
import io
import json
import logging
import os
import re
import secrets
import sqlite3
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from PIL import Image

from stylegan.files import stage_file, write_file

from .credentials import Ingredient, Signing, SigningIdentity, local_identity
from .provenance import ProvenanceRecord, encode_image, sha256_bytes
from .thumbnails import downscale_rgb

log = logging.getLogger(__name__)

DATABASE_FILE = "archive.sqlite3"
ORIGINALS, RESULTS, THUMBNAILS, EXPORTS, TMP = "originals", "results", "thumbnails", "exports", "tmp"
CREDENTIALS = "credentials"
PRESET_THUMBNAILS = f"{THUMBNAILS}/presets"
THUMBNAIL_SIDE = 512
TMP_GRACE_SECONDS = 3600  # a sweep leaves younger temporary files alone: another process may be writing them
EXPORT_KEEP_SECONDS = 3600
BUSY_TIMEOUT = 30.0  # s that a connection waits for another's lock (this process's or another's)
SCHEMA_VERSION = 1
ENTRY_ID = re.compile(r"[0-9a-f]{16}")
MAX_TEXT = {"title": 500, "source_id": 500, "notes": 20_000}
MAX_TAG = 64
# errno values that mean "no room to write": a full filesystem, or the user's quota used up.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
SQLITE_FULL = 13  # https://www.sqlite.org/rescode.html#full

# https://rightsstatements.org/page/1.0/ (the 12 statements of version 1.0).
RIGHTS_STATEMENTS = frozenset({"InC", "InC-OW-EU", "InC-EDU", "InC-NC", "InC-RUU", "NoC-CR", "NoC-NC",
                               "NoC-OKLR", "NoC-US", "CNE", "UND", "NKC"})
_RIGHTS_STATEMENT_URI = re.compile(r"https?://rightsstatements\.org/vocab/([A-Za-z-]+)/1\.0/")
_CC_LICENSE_URI = re.compile(r"https?://creativecommons\.org/licenses/(by|by-sa|by-nd|by-nc|by-nc-sa|by-nc-nd)/"
                             r"(1\.0|2\.0|2\.5|3\.0|4\.0)/([a-z]{2}/)?")
_CC_PUBLIC_DOMAIN_URI = re.compile(r"https?://creativecommons\.org/publicdomain/(zero|mark)/1\.0/")

# Dublin Core columns of the export CSV (qualified names as DSpace and Omeka CSV imports use them).
DUBLIN_CORE_COLUMNS = ("dc.identifier", "dc.title", "dc.creator", "dc.date", "dc.source",
                       "dc.relation.isVersionOf", "dc.rights", "dc.description", "dc.type", "dc.format",
                       "dc.subject")
CSV_COLUMNS = DUBLIN_CORE_COLUMNS + ("file", "original_file")
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_SUFFIXES = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "TIFF": ".tif", "WEBP": ".webp", "JPEG2000": ".jp2", "BMP": ".bmp",
             "GIF": ".gif"}

_SCHEMA = """
CREATE TABLE entries (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    source_id TEXT NOT NULL,
    rights TEXT NOT NULL,
    notes TEXT NOT NULL,
    approved INTEGER NOT NULL CHECK (approved IN (0, 1)),
    original_file TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    provenance TEXT NOT NULL CHECK (json_valid(provenance)),
    created TEXT GENERATED ALWAYS AS (json_extract(provenance, '$.created')) STORED,
    original_sha256 TEXT GENERATED ALWAYS AS (json_extract(provenance, '$.source_sha256')) STORED,
    original_name TEXT GENERATED ALWAYS AS (json_extract(provenance, '$.source_name')) VIRTUAL,
    style TEXT GENERATED ALWAYS AS (json_extract(provenance, '$.style')) VIRTUAL,
    style_strength REAL GENERATED ALWAYS AS (json_extract(provenance, '$.style_strength')) VIRTUAL,
    settings TEXT GENERATED ALWAYS AS (json_extract(provenance, '$.settings')) VIRTUAL,
    seed INTEGER GENERATED ALWAYS AS (json_extract(provenance, '$.seed')) VIRTUAL,
    model_repo TEXT GENERATED ALWAYS AS (json_extract(provenance, '$.model_repo')) VIRTUAL,
    model_revision TEXT GENERATED ALWAYS AS (json_extract(provenance, '$.model_revision')) VIRTUAL,
    weights_sha256 TEXT GENERATED ALWAYS AS (json_extract(provenance, '$.weights_sha256')) VIRTUAL
);
CREATE INDEX entries_by_created ON entries (created);
CREATE INDEX entries_by_original ON entries (original_file);
CREATE TABLE tags (
    entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    tag TEXT NOT NULL COLLATE NOCASE,
    PRIMARY KEY (entry_id, tag)
);
CREATE INDEX tags_by_tag ON tags (tag);
"""
_SELECT = """
SELECT entries.*, (SELECT json_group_array(tag) FROM (SELECT tag FROM tags WHERE entry_id = entries.id
                                                     ORDER BY position)) AS tags_json
FROM entries
"""


class ArchiveError(ValueError):
    """A refused archive operation, with the reason in words."""


class EntryNotFound(ArchiveError):
    pass


class DiskFull(ArchiveError):
    """A write refused because the archive's disk (or quota) is full; nothing was changed."""


def validate_rights(uri: str) -> str:
    """A RightsStatements.org or Creative Commons URI, stripped; '' means not recorded."""
    uri = uri.strip()
    if not uri:
        return ""
    statement = _RIGHTS_STATEMENT_URI.fullmatch(uri)
    if (statement and statement.group(1) in RIGHTS_STATEMENTS) or _CC_LICENSE_URI.fullmatch(uri) \
            or _CC_PUBLIC_DOMAIN_URI.fullmatch(uri):
        return uri
    raise ArchiveError(f"rights statement {uri!r} is not a RightsStatements.org URI (such as "
                       "http://rightsstatements.org/vocab/NoC-US/1.0/) or a Creative Commons licence or "
                       "public-domain URI (such as https://creativecommons.org/publicdomain/mark/1.0/)")


def parse_tags(text: str) -> tuple[str, ...]:
    """'letters, 1917 ,letters' -> ('letters', '1917'): comma-separated, trimmed, first spelling kept."""
    return _normalise_tags(text.split(","))


def _normalise_tags(tags: Sequence[str]) -> tuple[str, ...]:
    kept: dict[str, str] = {}
    for tag in tags:
        tag = " ".join(str(tag).split())
        if not tag:
            continue
        if "," in tag or len(tag) > MAX_TAG:
            raise ArchiveError(f"tag {tag!r} must have no commas and at most {MAX_TAG} characters")
        kept.setdefault(tag.casefold(), tag)
    return tuple(kept.values())


@dataclass(frozen=True)
class Catalogue:
    """What a person records about an entry; validated on construction."""
    title: str = ""
    source_id: str = ""  # accession number, shelfmark, URL or other identifier of the source
    rights: str = ""  # the source's rights statement, carried over; never one made up for the result
    notes: str = ""
    tags: tuple[str, ...] = ()
    approved: bool = False  # approved for sharing: only approved entries are exported by default

    def __post_init__(self) -> None:
        for name, limit in MAX_TEXT.items():
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ArchiveError(f"{name} must be text, got {type(value).__name__}")
            if len(value) > limit:
                raise ArchiveError(f"{name} is {len(value):,} characters long; the limit is {limit:,}")
            object.__setattr__(self, name, value.strip())
        if isinstance(self.tags, str):
            raise ArchiveError("tags must be a list of strings (use parse_tags for comma-separated text)")
        if not isinstance(self.approved, bool):
            raise ArchiveError(f"approved must be true or false, got {self.approved!r}")
        object.__setattr__(self, "rights", validate_rights(self.rights))
        object.__setattr__(self, "tags", _normalise_tags(self.tags))


CATALOGUE_FIELDS = frozenset(field.name for field in dataclasses.fields(Catalogue))


@dataclass(frozen=True)
class Entry:
    id: str
    catalogue: Catalogue
    record: ProvenanceRecord  # how the result was made; also embedded in the result file
    original_file: str  # relative to the archive root
    width: int  # of the result, px
    height: int

    @property
    def result_file(self) -> str:
        return f"{RESULTS}/{self.id}.png"

    @property
    def thumbnail_file(self) -> str:
        return f"{THUMBNAILS}/{self.id}.jpg"

    @property
    def created(self) -> str:
        return self.record.created

    def to_dict(self) -> dict:
        return {"id": self.id, **dataclasses.asdict(self.catalogue), "tags": list(self.catalogue.tags),
                "created": self.created, "width": self.width, "height": self.height,
                "files": {"result": self.result_file, "original": self.original_file,
                          "thumbnail": self.thumbnail_file},
                "provenance": self.record.to_dict()}


class Archive:
    """A persistent archive rooted at one directory. Safe to use from several threads (one
    SQLite connection per operation) and from several processes at once.

    Results are signed by `identity`, by default the archive's own self-issued one (made in
    credentials/ on first use)."""

    def __init__(self, root: str | os.PathLike, identity: SigningIdentity | None = None) -> None:
        self.root = Path(root).resolve()
        for folder in (ORIGINALS, RESULTS, THUMBNAILS, PRESET_THUMBNAILS, EXPORTS, TMP):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self.database = self.root / DATABASE_FILE
        self._out_of_space_logged = False  # a full disk is logged once, not at every refused request
        with self._transaction() as connection:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ArchiveError(f"{self.database} was written by a newer version (schema {version}; "
                                   f"this one reads {SCHEMA_VERSION})")
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self.sweep_orphans()
        self.identity = identity or local_identity(self.root / CREDENTIALS)

    # -- paths ------------------------------------------------------------------------------
    def path(self, relative: str) -> Path:
        return self.root / relative

    @property
    def preset_thumbnail_dir(self) -> Path:
        return self.root / PRESET_THUMBNAILS

    @property
    def served_dirs(self) -> list[Path]:
        """Folders whose files the app may serve (never the database or tmp/)."""
        return [self.root / ORIGINALS, self.root / RESULTS, self.root / THUMBNAILS, self.root / EXPORTS]

    # -- entries ----------------------------------------------------------------------------
    def add(self, original: bytes, result: Image.Image, record: ProvenanceRecord,
            catalogue: Catalogue = Catalogue(), styles: Sequence[Ingredient] = ()) -> Entry:
        """Store `original` (exactly these bytes) and `result` (PNG with `record` embedded, signed
        with Content Credentials naming `original` and the `styles` it was made with)."""
        digest = sha256_bytes(original)
        if record.source_sha256 != digest:
            raise ArchiveError(f"the provenance record names source {record.source_sha256[:12]}…, "
                               f"but the original's bytes hash to {digest[:12]}…")
        entry_id = secrets.token_hex(8)
        entry = Entry(entry_id, catalogue, record, f"{ORIGINALS}/{digest[:2]}/{digest}{_image_suffix(original)}",
                      *result.size)
        signing = Signing(self.identity, original, tuple(styles))
        staged = {self.path(entry.result_file): encode_image(result, record, signing=signing),
                  self.path(entry.thumbnail_file): _jpeg(downscale_rgb(result, THUMBNAIL_SIDE)),
                  self.path(entry.original_file): original}
        temporaries: dict[Path, Path] = {}
        placed: list[Path] = []
        try:
            for final, data in staged.items():
                temporaries[final] = stage_file(self.root / TMP, data)
            with self._transaction() as connection:
                connection.execute(
                    "INSERT INTO entries (id, title, source_id, rights, notes, approved, original_file, width, "
                    "height, provenance) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (entry_id, catalogue.title, catalogue.source_id, catalogue.rights, catalogue.notes,
                     int(catalogue.approved), entry.original_file, entry.width, entry.height,
                     json.dumps(record.to_dict(), ensure_ascii=False)))
                _insert_tags(connection, entry_id, catalogue.tags)
                for final, temporary in temporaries.items():
                    if final.exists():  # the same original, stored for an earlier entry
                        continue
                    final.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(temporary, final)
                    placed.append(final)
        except BaseException as error:
            for path in placed:
                path.unlink(missing_ok=True)
            self._refuse_if_out_of_space(error, "the result could not be archived")
            raise
        finally:
            for temporary in temporaries.values():
                temporary.unlink(missing_ok=True)
        self._out_of_space_logged = False
        return entry

    def get(self, entry_id: str) -> Entry:
        with self._connect() as connection:
            return self._get(connection, entry_id)

    def update(self, entry_id: str, **changes) -> Entry:
        """Change catalogue fields (title, source_id, rights, notes, tags, approved)."""
        unknown = set(changes) - CATALOGUE_FIELDS
        if unknown:
            raise ArchiveError(f"cannot edit {sorted(unknown)}; editable fields: {sorted(CATALOGUE_FIELDS)}")
        try:
            with self._transaction() as connection:
                entry = self._get(connection, entry_id)
                catalogue = dataclasses.replace(entry.catalogue, **changes)
                connection.execute("UPDATE entries SET title = ?, source_id = ?, rights = ?, notes = ?, approved = ? "
                                   "WHERE id = ?", (catalogue.title, catalogue.source_id, catalogue.rights,
                                                    catalogue.notes, int(catalogue.approved), entry_id))
                connection.execute("DELETE FROM tags WHERE entry_id = ?", (entry_id,))
                _insert_tags(connection, entry_id, catalogue.tags)
        except sqlite3.Error as error:
            self._refuse_if_out_of_space(error, "the changes could not be saved")
            raise
        return dataclasses.replace(entry, catalogue=catalogue)

    def delete(self, entry_id: str) -> list[str]:
        """Forget an entry and remove its files (its original only if no other entry shares it).

        The row goes first, in a transaction of its own; the files go after it has committed, so a
        crash in between leaves unreferenced files (swept at the next open), never an entry
        without its files. Returns the removed files, relative to the root."""
        try:
            with self._transaction() as connection:
                entry = self._get(connection, entry_id)
                connection.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
        except sqlite3.Error as error:
            self._refuse_if_out_of_space(error, "the entry could not be deleted")
            raise
        removed: list[str] = []
        # Under the write lock again: no `add` can record the original between the check and the unlink.
        with self._transaction() as connection:
            shared = connection.execute("SELECT 1 FROM entries WHERE original_file = ? LIMIT 1",
                                        (entry.original_file,)).fetchone()
            for relative in [entry.result_file, entry.thumbnail_file] + ([] if shared else [entry.original_file]):
                if self.path(relative).exists():
                    self.path(relative).unlink()
                    removed.append(relative)
        return removed

    def search(self, text: str = "", *, tag: str = "", style: str = "", date_from: str | date | None = None,
               date_to: str | date | None = None, approved: bool | None = None,
               limit: int | None = None) -> list[Entry]:
        """Newest first. `text` matches title, source id, notes, tags, style, original name and id;
        `tag` is one exact tag (any case); `style` a part of the style (e.g. a preset name);
        dates are inclusive calendar days (UTC)."""
        clauses: list[str] = []
        parameters: list[object] = []
        if text.strip():
            pattern = _like_pattern(text.strip())
            columns = ("title", "source_id", "notes", "style", "original_name", "id")
            clauses.append("(" + " OR ".join(f"{column} LIKE ? ESCAPE '\\'" for column in columns)
                           + " OR EXISTS (SELECT 1 FROM tags WHERE entry_id = entries.id AND tag LIKE ? ESCAPE '\\'))")
            parameters += [pattern] * (len(columns) + 1)
        if tag.strip():
            clauses.append("EXISTS (SELECT 1 FROM tags WHERE entry_id = entries.id AND tag = ?)")
            parameters.append(" ".join(tag.split()))
        if style.strip():
            clauses.append("style LIKE ? ESCAPE '\\'")
            parameters.append(_like_pattern(style.strip()))
        for bound, operator, name in ((date_from, ">=", "date_from"), (date_to, "<=", "date_to")):
            if bound not in (None, ""):
                clauses.append(f"substr(created, 1, 10) {operator} ?")
                parameters.append(_parse_date(bound, name))
        if approved is not None:
            clauses.append("approved = ?")
            parameters.append(int(approved))
        query = _SELECT + (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY created DESC, id"
        if limit is not None:
            query += " LIMIT ?"
            parameters.append(int(limit))
        with self._connect() as connection:
            return [_entry(row) for row in connection.execute(query, parameters)]

    def styles(self) -> list[str]:
        """Every style used in the archive, for filters."""
        with self._connect() as connection:
            return [row[0] for row in connection.execute("SELECT DISTINCT style FROM entries ORDER BY style")]

    def tags(self) -> list[str]:
        with self._connect() as connection:
            return [row[0] for row in connection.execute("SELECT DISTINCT tag FROM tags ORDER BY tag")]

    # -- export -----------------------------------------------------------------------------
    def export_zip(self, destination: str | os.PathLike, *, base_url: str, entry_ids: Sequence[str] | None = None,
                   include_originals: bool = False, include_unapproved: bool = False) -> list[Entry]:
        """Write a ZIP of entries (the given ones, or all approved ones) and return what it holds.

        The ZIP holds results/<id>.png (provenance embedded) with a sidecar results/<id>.png.json,
        optionally originals/<sha256>.<ext>, metadata.csv (Dublin Core) and manifest.json (IIIF
        Presentation 3.0, whose ids are under `base_url`: where the unpacked ZIP will be published).
        Unapproved entries are refused unless `include_unapproved`.
        """
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?/", base_url):
            raise ArchiveError(f"the IIIF base URL must be an http(s) URL ending in '/', got {base_url!r}")
        if entry_ids:
            entries = [self.get(entry_id) for entry_id in dict.fromkeys(entry_ids)]
            unapproved = [entry.id for entry in entries if not entry.catalogue.approved]
            if unapproved and not include_unapproved:
                raise ArchiveError(f"entries {unapproved} are not approved for sharing: approve them, or ask "
                                   "for unapproved entries to be included")
        else:
            entries = self.search(approved=None if include_unapproved else True)
        if not entries:
            raise ArchiveError("nothing to export: there are no approved entries (or ask for unapproved ones)")
        def write_bundle(handle) -> None:
            with zipfile.ZipFile(handle, "w") as bundle:
                originals: set[str] = set()
                for entry in entries:
                    bundle.write(self.path(entry.result_file), entry.result_file, zipfile.ZIP_STORED)
                    bundle.writestr(entry.result_file + ".json", _json(entry.to_dict()), zipfile.ZIP_DEFLATED)
                    original = _export_original_name(entry)
                    if include_originals and original not in originals:
                        bundle.write(self.path(entry.original_file), original, zipfile.ZIP_STORED)
                        originals.add(original)
                bundle.writestr("metadata.csv", dublin_core_csv(entries, include_originals), zipfile.ZIP_DEFLATED)
                bundle.writestr("manifest.json", _json(iiif_manifest(entries, base_url)), zipfile.ZIP_DEFLATED)

        try:
            write_file(destination, write_bundle, staging=self.root / TMP)
        except OSError as error:
            self._refuse_if_out_of_space(error, "the export could not be written")
            raise
        return entries

    def new_export_path(self) -> Path:
        """A fresh file name in exports/ (older exports are pruned here)."""
        self._prune(self.root / EXPORTS, EXPORT_KEEP_SECONDS, [])
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        return self.root / EXPORTS / f"archive-export-{stamp}-{secrets.token_hex(3)}.zip"

    # -- housekeeping -----------------------------------------------------------------------
    def sweep_orphans(self) -> list[str]:
        """Remove files no entry references (left by a crash) and stale temporary files.

        Runs under the write lock, so no other writer is between placing and recording a file."""
        removed: list[Path] = []
        with self._transaction() as connection:
            ids = {row[0] for row in connection.execute("SELECT id FROM entries")}
            originals = {row[0] for row in connection.execute("SELECT original_file FROM entries")}
            for path in (self.root / ORIGINALS).rglob("*"):
                if path.is_file() and path.relative_to(self.root).as_posix() not in originals:
                    path.unlink()
                    removed.append(path)
            for folder, suffix in ((RESULTS, ".png"), (THUMBNAILS, ".jpg")):
                for path in (self.root / folder).iterdir():
                    if path.is_file() and not (path.suffix == suffix and path.stem in ids):
                        path.unlink()
                        removed.append(path)
            self._prune(self.root / TMP, TMP_GRACE_SECONDS, removed)
            self._prune(self.root / EXPORTS, EXPORT_KEEP_SECONDS, removed)
            for folder in sorted((self.root / ORIGINALS).iterdir(), reverse=True):  # `add` makes them under the lock
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
        return [path.relative_to(self.root).as_posix() for path in removed]

    @staticmethod
    def _prune(folder: Path, older_than_seconds: float, removed: list[Path]) -> None:
        cutoff = time.time() - older_than_seconds
        for path in folder.iterdir():
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:  # pruned by another process meanwhile (exports are pruned outside the lock)
                continue

    # -- plumbing ---------------------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(self.database, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA foreign_keys = ON")
            # Per connection (SQLite's default deletes the journal after each transaction, so a delete on
            # a full disk would find no room for one). Also turns an archive made in WAL mode back.
            connection.execute("PRAGMA journal_mode = PERSIST")
            yield connection
        finally:
            connection.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE (take the write lock now) ... COMMIT, or ROLLBACK on any error."""
        with self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def _get(self, connection: sqlite3.Connection, entry_id: str) -> Entry:
        if not isinstance(entry_id, str) or not ENTRY_ID.fullmatch(entry_id):
            raise EntryNotFound(f"{entry_id!r} is not an entry id (16 hexadecimal digits)")
        row = connection.execute(_SELECT + " WHERE id = ?", (entry_id,)).fetchone()
        if row is None:
            raise EntryNotFound(f"there is no entry {entry_id} in the archive")
        return _entry(row)

    def _refuse_if_out_of_space(self, error: BaseException, what_failed: str) -> None:
        """Raise DiskFull (from `error`) if `error` says the disk is full; log that once until a write succeeds."""
        if not is_out_of_space(error):
            return
        if not self._out_of_space_logged:
            self._out_of_space_logged = True
            log.warning("the disk of the archive in %s is full (%s): writes are refused until space is freed",
                        self.root, error)
        raise DiskFull(f"the archive's disk is full: {what_failed}, and nothing was changed. Free space on it "
                       "(delete entries or old exports, or ask the server's administrator) and try again") from error


def is_out_of_space(error: BaseException) -> bool:
    """Whether `error` says the disk (or the quota) is full: from a write, or from SQLite."""
    if isinstance(error, OSError):
        return error.errno in NO_SPACE_ERRNOS
    return isinstance(error, sqlite3.Error) and getattr(error, "sqlite_errorcode", None) == SQLITE_FULL


def _entry(row: sqlite3.Row) -> Entry:
    catalogue = Catalogue(row["title"], row["source_id"], row["rights"], row["notes"],
                          tuple(json.loads(row["tags_json"])), bool(row["approved"]))
    record = ProvenanceRecord.from_dict(json.loads(row["provenance"]))
    return Entry(row["id"], catalogue, record, row["original_file"], row["width"], row["height"])


def _insert_tags(connection: sqlite3.Connection, entry_id: str, tags: Sequence[str]) -> None:
    connection.executemany("INSERT INTO tags (entry_id, position, tag) VALUES (?, ?, ?)",
                           [(entry_id, position, tag) for position, tag in enumerate(tags)])


def _like_pattern(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _parse_date(value: str | date, name: str) -> str:
    if isinstance(value, date):
        return value.isoformat()[:10]
    try:
        return date.fromisoformat(value.strip()).isoformat()
    except ValueError:
        raise ArchiveError(f"{name} must be a date like 2024-05-31, got {value!r}") from None


def _image_suffix(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format or ""
    except (OSError, SyntaxError, ValueError) as error:
        raise ArchiveError(f"the original is not an image that can be identified ({error})") from error
    return _SUFFIXES.get(image_format, "." + image_format.lower())


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _json(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def _export_original_name(entry: Entry) -> str:
    return f"{ORIGINALS}/{Path(entry.original_file).name}"


def csv_cell(value: object) -> str:
    """A CSV cell that spreadsheets will not run as a formula (OWASP CSV injection)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_PREFIXES) else text


def _creator(record: ProvenanceRecord) -> str:
    return f"archive-style GAN {record.library_version} (model {record.model_repo}@{record.model_revision})"


def _description(entry: Entry) -> str:
    record = entry.record
    made = (f"Stylised derivative: style {record.style} at strength {record.style_strength}, settings "
            f"{json.dumps(record.settings, sort_keys=True)}, seed {record.seed}; model weights SHA-256 "
            f"{record.weights_sha256}.")
    return f"{entry.catalogue.notes}\n\n{made}" if entry.catalogue.notes else made


def dublin_core_csv(entries: Sequence[Entry], include_originals: bool) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        record, catalogue = entry.record, entry.catalogue
        row = (entry.id, catalogue.title, _creator(record), record.created,
               catalogue.source_id or record.source_name, f"urn:sha256:{record.source_sha256}", catalogue.rights,
               _description(entry), "StillImage", "image/png", "; ".join(catalogue.tags), entry.result_file,
               _export_original_name(entry) if include_originals else "")
        writer.writerow([csv_cell(value) for value in row])
    return buffer.getvalue()


def _language_map(value: str, language: str = "none") -> dict[str, list[str]]:
    return {language: [value]}


def _metadata_pair(label: str, value: str, language: str = "none") -> dict:
    return {"label": _language_map(label, "en"), "value": _language_map(value, language)}


def iiif_manifest(entries: Sequence[Entry], base_url: str, label: str = "archive-style GAN export") -> dict:
    """IIIF Presentation 3.0 manifest: one canvas per entry, its result painted on it."""
    canvases = []
    for entry in entries:
        record, catalogue = entry.record, entry.catalogue
        canvas_id = f"{base_url}canvas/{entry.id}"
        source = catalogue.source_id or record.source_name
        metadata = [_metadata_pair("Title", catalogue.title), _metadata_pair("Source", source),
                    _metadata_pair("Original SHA-256", record.source_sha256),
                    _metadata_pair("Style", record.style), _metadata_pair("Style strength", str(record.style_strength)),
                    _metadata_pair("Model", f"{record.model_repo}@{record.model_revision}"),
                    _metadata_pair("Created", record.created), _metadata_pair("Tags", "; ".join(catalogue.tags)),
                    _metadata_pair("Notes", catalogue.notes)]
        canvas = {
            "id": canvas_id, "type": "Canvas", "label": _language_map(catalogue.title or record.source_name),
            "width": entry.width, "height": entry.height,
            "metadata": [pair for pair in metadata if pair["value"]["none"][0]],
            "requiredStatement": _metadata_pair(
                "Attribution", f"Stylised derivative of {source} (rights: {catalogue.rights or 'not recorded'}), "
                               f"made with {_creator(record)}.", "en"),
            "items": [{
                "id": f"{canvas_id}/page", "type": "AnnotationPage",
                "items": [{
                    "id": f"{canvas_id}/page/painting", "type": "Annotation", "motivation": "painting",
                    "body": {"id": f"{base_url}{entry.result_file}", "type": "Image", "format": "image/png",
                             "width": entry.width, "height": entry.height},
                    "target": canvas_id,
                }],
            }],
        }
        if catalogue.rights:
            canvas["rights"] = catalogue.rights
        canvases.append(canvas)
    manifest = {
        "@context": "http://iiif.io/api/presentation/3/context.json",
        "id": f"{base_url}manifest.json", "type": "Manifest", "label": _language_map(label, "en"),
        "summary": _language_map("Stylised derivatives of archive images; each canvas names its source, "
                                 "the source's rights statement and how it was made.", "en"),
        "metadata": [_metadata_pair("Exported", datetime.now(UTC).isoformat(timespec="seconds")),
                     _metadata_pair("Entries", str(len(entries)))],
        "requiredStatement": _metadata_pair("Attribution", "AI-stylised derivatives made with archive-style GAN; "
                                                           "the rights of each source are stated per canvas.", "en"),
        "items": canvases,
    }
    rights = {entry.catalogue.rights for entry in entries}
    if len(rights) == 1 and "" not in rights:
        manifest["rights"] = rights.pop()
    return manifest
