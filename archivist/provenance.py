"""Provenance: every file the library writes says what it is, what it came from and how it was made.

The record is embedded as XMP (written by exiv2 through pyexiv2) in PNG, JPEG, WebP and TIFF,
and, in PNG, also as a readable `provenance` iTXt chunk of JSON; `save_with_provenance` writes
the same record as a sidecar `<file>.json`. On top of that, every encoded file is signed with
Content Credentials (a C2PA manifest naming the original, the styles and the record; see
`credentials.py`). The XMP carries the IPTC digital source type
"trainedAlgorithmicMedia", a plain-language dc:description ("AI-generated derivative of ...;
not a work by the original artist"), dc:source (the source's name), dc:relation
("isVersionOf:sha256:<hex>") and every field of the record in the `asg` namespace.

Files are written to a temporary name in the target folder and renamed into place, so a
reader never sees half a file; nothing is overwritten unless asked.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import re
import struct
import threading
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyexiv2
from PIL import Image, PngImagePlugin

from stylegan import __version__
from stylegan.files import write_file
from stylegan.images import PNG_SIGNATURE

from .credentials import Ingredient, Signing, sign

if TYPE_CHECKING:
    from stylegan.inference import ModelInfo

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
XMP_NAMESPACE = "urn:archive-style-gan:ns:provenance:1.0#"
XMP_PREFIX = "asg"
PNG_TEXT_KEY = "provenance"
FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "JPG": "JPEG", "WEBP": "WEBP", "TIFF": "TIFF", "TIF": "TIFF"}
SUFFIX_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}
MAX_PNG_TEXT = 16 * 1024 * 1024  # inflated size of a compressed provenance chunk we accept

SHA256 = re.compile(r"[0-9a-f]{64}")
CREATED = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")
# Characters XML 1.0 cannot carry (so neither can XMP), and lone surrogates (not UTF-8).
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")

# record field -> XMP property in our namespace (seed is left out when it is None)
XMP_FIELDS = {
    "source_sha256": "sourceSha256",
    "source_name": "sourceName",
    "model_repo": "modelRepo",
    "model_revision": "modelRevision",
    "weights_sha256": "weightsSha256",
    "style": "style",
    "style_strength": "styleStrength",
    "settings": "settings",
    "seed": "seed",
    "library_version": "libraryVersion",
    "created": "created",
}
XMP_DIGITAL_SOURCE_TYPE = "Xmp.iptcExt.DigitalSourceType"

# exiv2 keeps a process-wide namespace registry and is not documented as thread-safe.
_EXIV2_LOCK = threading.Lock()
_namespace_registered = False


def _check_text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"provenance {field} must be a string, got {type(value).__name__}")
    bad = NOT_XML.search(value)
    if bad:
        raise ValueError(f"provenance {field} contains {bad.group()!r}, which XMP cannot carry")
    return value


def _check_style(style: str, *, in_blend: bool = False) -> None:
    kind, _, value = style.partition(":")
    if kind == "preset" and value:
        return
    if kind == "sha256" and SHA256.fullmatch(value):
        return
    if kind == "blend" and not in_blend:
        try:
            parts = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"provenance style {style!r}: the blend is not JSON ({error})") from error
        if not isinstance(parts, list) or not parts:
            raise ValueError(f"provenance style {style!r}: a blend is a non-empty list of [style, weight]")
        for part in parts:
            if not (isinstance(part, list) and len(part) == 2 and isinstance(part[0], str)
                    and isinstance(part[1], (int, float)) and not isinstance(part[1], bool)
                    and math.isfinite(part[1]) and part[1] >= 0):
                raise ValueError(f"provenance style {style!r}: each blend part is [style, weight ≥ 0]")
            _check_style(part[0], in_blend=True)
        return
    raise ValueError(f"provenance style must be 'preset:<name>', 'sha256:<64 hex>' or 'blend:[[style, weight], ...]', "
                     f"got {style!r}")


@dataclass(frozen=True)
class ProvenanceRecord:
    """How one result was made. Validated on construction; `settings` is copied (JSON values only)."""
    source_sha256: str
    source_name: str
    model_repo: str
    model_revision: str
    weights_sha256: str
    style: str  # "preset:<name>", "sha256:<hex>", or "blend:" + JSON list of [style, weight]
    style_strength: float
    settings: dict  # preserve_color, max_long_side, mode, post-processing, ... (JSON-able)
    seed: int | None
    library_version: str
    created: str  # UTC ISO 8601, e.g. 2026-11-26T01:02:03Z
    digital_source_type: str = TRAINED_ALGORITHMIC_MEDIA

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if field.type == "str":
                _check_text(field.name, getattr(self, field.name))
        if not SHA256.fullmatch(self.source_sha256):
            raise ValueError(f"provenance source_sha256 must be 64 lowercase hex digits, got {self.source_sha256!r}")
        if self.weights_sha256 and not SHA256.fullmatch(self.weights_sha256):
            raise ValueError(f"provenance weights_sha256 must be 64 lowercase hex digits or '' (unsaved model), "
                             f"got {self.weights_sha256!r}")
        _check_style(self.style)
        strength = self.style_strength
        if isinstance(strength, bool) or not isinstance(strength, (int, float)):
            raise TypeError(f"provenance style_strength must be a number, got {strength!r}")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"provenance style_strength must be in [0, 1], got {strength!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise TypeError(f"provenance seed must be an int or None, got {self.seed!r}")
        if not CREATED.fullmatch(self.created):
            raise ValueError(f"provenance created must be UTC ISO 8601 like 2026-11-26T01:02:03Z, got {self.created!r}")
        if not isinstance(self.settings, Mapping):
            raise TypeError(f"provenance settings must be a dict, got {type(self.settings).__name__}")
        try:
            settings = json.loads(json.dumps(self.settings, ensure_ascii=False, allow_nan=False))
            _check_text("settings", json.dumps(settings, ensure_ascii=False))
        except (TypeError, ValueError) as error:
            raise ValueError(f"provenance settings must hold JSON values only ({error})") from error
        object.__setattr__(self, "settings", settings)
        object.__setattr__(self, "style_strength", float(strength))

    def to_dict(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)} | {
            "settings": json.loads(json.dumps(self.settings))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProvenanceRecord:
        if not isinstance(data, Mapping):
            raise TypeError(f"not a provenance record: expected a mapping, got {type(data).__name__}")
        names = {field.name for field in dataclasses.fields(cls)}
        unknown, missing = set(data) - names, names - set(data) - {"digital_source_type"}
        if unknown or missing:
            raise ValueError(f"not a provenance record: unknown fields {sorted(unknown)}, missing {sorted(missing)}")
        return cls(**data)


def describe_style(style: str | Sequence[tuple[str, float]]) -> str:
    """A style as a record keeps it: the string form itself, or a list of (style string, weight) as
    `pipeline.StyleChoice.resolve` describes one. One style with any weight is that style; several
    are a "blend:" list."""
    if isinstance(style, str):
        _check_style(style)
        return style
    parts = []
    for label, weight in style:
        _check_style(label, in_blend=True)
        parts.append([label, float(weight)])
    if not parts:
        raise ValueError("no style given")
    text = parts[0][0] if len(parts) == 1 else "blend:" + json.dumps(parts, ensure_ascii=False)
    _check_style(text)
    return text


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_record(*, source_sha256: str, source_name: str, model_info: ModelInfo,
               style: str | Sequence[tuple[str, float]], style_strength: float,
               settings: Mapping[str, Any], seed: int | None) -> ProvenanceRecord:
    """A record for a result made now by this library version with `model_info`'s weights."""
    return ProvenanceRecord(source_sha256=source_sha256, source_name=source_name, model_repo=model_info.repo,
                            model_revision=model_info.revision, weights_sha256=model_info.weights_sha256,
                            style=describe_style(style), style_strength=style_strength, settings=dict(settings),
                            seed=seed, library_version=__version__, created=utc_now())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def statement(record: ProvenanceRecord) -> str:
    return f"AI-generated derivative of {record.source_name}; not a work by the original artist"


def _xmp_values(record: ProvenanceRecord) -> dict[str, Any]:
    values: dict[str, Any] = {
        XMP_DIGITAL_SOURCE_TYPE: record.digital_source_type,
        "Xmp.dc.description": {'lang="x-default"': statement(record)},
        "Xmp.dc.source": record.source_name,
        "Xmp.dc.relation": [f"isVersionOf:sha256:{record.source_sha256}"],
        "Xmp.xmp.CreatorTool": f"archive-style-gan {record.library_version}",
        "Xmp.xmp.CreateDate": record.created,
    }
    for field, name in XMP_FIELDS.items():
        value = getattr(record, field)
        if field == "settings":
            value = json.dumps(value, ensure_ascii=False, sort_keys=True)
        elif field in ("style_strength", "seed"):
            value = None if value is None else repr(value)
        if value is not None:
            values[f"Xmp.{XMP_PREFIX}.{name}"] = value
    return values


def _record_from_xmp(xmp: Mapping[str, Any]) -> ProvenanceRecord | None:
    keys = {field: f"Xmp.{XMP_PREFIX}.{name}" for field, name in XMP_FIELDS.items()}
    if keys["source_sha256"] not in xmp:
        return None
    missing = [key for field, key in keys.items() if field != "seed" and key not in xmp]
    if missing or XMP_DIGITAL_SOURCE_TYPE not in xmp:
        raise ValueError(f"incomplete provenance XMP: missing {missing or [XMP_DIGITAL_SOURCE_TYPE]}")
    data: dict[str, Any] = {field: xmp[key] for field, key in keys.items() if key in xmp}
    try:
        data["style_strength"] = float(data["style_strength"])
        data["settings"] = json.loads(data["settings"])
        data["seed"] = int(data["seed"]) if "seed" in data else None
    except ValueError as error:
        raise ValueError(f"malformed provenance XMP ({error})") from error
    data["digital_source_type"] = xmp[XMP_DIGITAL_SOURCE_TYPE]
    return ProvenanceRecord.from_dict(data)


def _register_namespace() -> None:
    global _namespace_registered
    if not _namespace_registered:
        pyexiv2.registerNs(XMP_NAMESPACE, XMP_PREFIX)
        _namespace_registered = True


def _normalise_format(format: str) -> str:
    try:
        return FORMATS[format.upper()]
    except KeyError:
        raise ValueError(f"cannot embed provenance in {format!r}; use one of PNG, JPEG, WEBP, TIFF") from None


def encode_image(image: Image.Image, record: ProvenanceRecord, format: str = "PNG", *, signing: Signing,
                 **save_options) -> bytes:
    """`image` encoded as `format` (PNG, JPEG, WEBP, TIFF) with `record` embedded as XMP (and, in
    PNG, as a `provenance` iTXt chunk of JSON), then signed: a C2PA manifest naming `signing`'s
    original and styles and holding the record. Any XMP the image carried is replaced."""
    format = _normalise_format(format)
    if sha256_bytes(signing.original) != record.source_sha256:
        raise ValueError(f"the original to sign with hashes to {sha256_bytes(signing.original)[:12]}…, but the "
                         f"provenance record names source {record.source_sha256[:12]}…")
    if "xmp" in save_options:
        raise ValueError("encode_image writes the XMP itself; pass the record instead of xmp=")
    if format == "PNG":
        given = save_options.pop("pnginfo", None)
        info = PngImagePlugin.PngInfo()
        info.chunks = list(given.chunks) if given is not None else []  # the caller's object stays as it was
        info.add_itxt(PNG_TEXT_KEY, json.dumps(record.to_dict(), ensure_ascii=False))
        save_options["pnginfo"] = info
    buffer = io.BytesIO()
    try:
        image.save(buffer, format, **save_options)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"cannot encode a {image.mode} image as {format}: {error}") from error
    with _EXIV2_LOCK:
        _register_namespace()
        metadata = pyexiv2.ImageData(buffer.getvalue())
        try:
            metadata.clear_xmp()
            metadata.modify_xmp(_xmp_values(record))
            encoded = metadata.get_bytes()
        except RuntimeError as error:  # e.g. JPEG's XMP segment holds at most 64 KiB
            raise ValueError(f"cannot embed this provenance in {format}: {error}") from error
        finally:
            metadata.close()
    return sign(encoded, format, signing.identity, title=f"AI-stylised derivative of {record.source_name}",
                description=statement(record), digital_source_type=record.digital_source_type,
                provenance=record.to_dict(), parent=Ingredient(record.source_name, signing.original),
                components=signing.styles)


def _png_text(data: bytes, keyword: bytes) -> str | None:
    """The text of the first iTXt chunk named `keyword` in PNG `data`, or None."""
    position = len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        body = data[position + 8:position + 8 + length]
        if kind == b"iTXt" and body.startswith(keyword + b"\0") and len(body) >= len(keyword) + 3:
            compressed = body[len(keyword) + 1]
            parts = body[len(keyword) + 3:].split(b"\0", 2)  # language, translated keyword, text
            if len(parts) != 3:
                raise ValueError(f"malformed {keyword.decode()} iTXt chunk")
            text = parts[2]
            if compressed:
                inflater = zlib.decompressobj()
                text = inflater.decompress(text, MAX_PNG_TEXT)
                if inflater.unconsumed_tail:
                    raise ValueError(f"the {keyword.decode()} iTXt chunk inflates past {MAX_PNG_TEXT:,} bytes")
            return text.decode("utf-8")
        if kind in (b"IDAT", b"IEND"):  # we write it before the pixels
            return None
        position += 12 + length
    return None


def read_provenance(path_or_bytes: str | os.PathLike | bytes) -> ProvenanceRecord | None:
    """The record embedded in a PNG (iTXt JSON, else XMP), JPEG, WebP or TIFF; None if it has none.

    Raises ValueError for data exiv2 cannot read or a record that is malformed.
    """
    data = bytes(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) else Path(path_or_bytes).read_bytes()
    if data.startswith(PNG_SIGNATURE):
        text = _png_text(data, PNG_TEXT_KEY.encode())
        if text is not None:
            try:
                return ProvenanceRecord.from_dict(json.loads(text))
            except TypeError as error:  # JSON of the wrong shape
                raise ValueError(f"malformed provenance JSON ({error})") from error
    with _EXIV2_LOCK:
        _register_namespace()
        try:
            metadata = pyexiv2.ImageData(data)
        except RuntimeError as error:
            raise ValueError(f"cannot read metadata: {error}") from error
        try:
            xmp = metadata.read_xmp()
        finally:
            metadata.close()
    return _record_from_xmp(xmp)


def sidecar_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def save_with_provenance(image: Image.Image, path: str | os.PathLike, record: ProvenanceRecord, *,
                         signing: Signing, overwrite: bool = False, **save_options) -> Path:
    """Write `image` to `path` (format from the suffix) with `record` embedded and signed (see
    `encode_image`), and the record as the sidecar `<path>.json`. Raises FileExistsError if either
    exists, unless `overwrite`."""
    path = Path(path)
    try:
        format = SUFFIX_FORMATS[path.suffix.lower()]
    except KeyError:
        raise ValueError(f"{path}: cannot tell the format from {path.suffix!r}; "
                         f"use one of {', '.join(SUFFIX_FORMATS)}") from None
    sidecar = sidecar_path(path)
    if not overwrite:
        for existing in (path, sidecar):
            if existing.exists():
                raise FileExistsError(f"{existing} already exists; pass overwrite=True to replace it")
    encoded = encode_image(image, record, format, signing=signing, **save_options)
    sidecar_json = (json.dumps(record.to_dict(), ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    write_file(sidecar, sidecar_json, overwrite=overwrite)  # the sidecar first: whoever sees the image finds its record
    try:
        write_file(path, encoded, overwrite=overwrite)
    except BaseException:
        if not overwrite:
            sidecar.unlink(missing_ok=True)
        raise
    return path
