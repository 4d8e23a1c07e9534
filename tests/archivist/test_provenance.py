"""Provenance: the record survives every format embedded and as a sidecar, the XMP declares the
result AI-generated, hostile strings are escaped, and files are written atomically, never clobbered.
(Every encoded file is also signed; its Content Credentials are tested in test_credentials.py.)"""
from __future__ import annotations

import io
import json
import os
import re
import struct
from datetime import UTC, datetime
from xml.etree import ElementTree

import numpy as np
import pyexiv2
import pytest
from PIL import Image, PngImagePlugin

import stylegan
from archivist.credentials import Signing, local_identity, read_credentials
from archivist.provenance import (
    TRAINED_ALGORITHMIC_MEDIA,
    ProvenanceRecord,
    describe_style,
    encode_image,
    new_record,
    read_provenance,
    save_with_provenance,
    sha256_bytes,
    sidecar_path,
)
from stylegan.images import open_image
from stylegan.inference import ModelInfo
from tests.helpers.imagegen import encode, gradient, png_chunk
from tests.helpers.records import SOURCE, make_record

SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif"}
HOSTILE = '<script>alert("x")</script> & \'quotes\' "double" ]]><!-- Ünïcödé 日本語 🎨\ttab\nline\r\n  '


@pytest.fixture(scope="module")
def signing(tmp_path_factory) -> Signing:
    return Signing(local_identity(tmp_path_factory.mktemp("credentials")), SOURCE)


def _png_info(**texts: str) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    for key, text in texts.items():
        info.add_itxt(key, text)
    return info


def read_xmp(data: bytes) -> dict:
    metadata = pyexiv2.ImageData(data)
    try:
        return metadata.read_xmp()
    finally:
        metadata.close()


def xmp_packet(data: bytes) -> bytes:
    match = re.search(rb"<x:xmpmeta.*?</x:xmpmeta>", data, re.DOTALL)
    assert match, "no XMP packet in the file"
    return match.group()


def without_png_chunk(data: bytes, keyword: bytes) -> bytes:
    """`data` minus the iTXt chunk named `keyword`."""
    position, kept = 8, [data[:8]]
    while position < len(data):
        (length,) = struct.unpack_from(">I", data, position)
        chunk = data[position:position + 12 + length]
        if not (chunk[4:8] == b"iTXt" and chunk[8:].startswith(keyword + b"\0")):
            kept.append(chunk)
        position += 12 + length
    return b"".join(kept)


@pytest.mark.parametrize("format", SUFFIXES)
def test_round_trip_embedded_and_sidecar(tmp_path, format, signing):
    record = make_record()
    image = gradient(20, 12)
    path = save_with_provenance(image, tmp_path / f"result{SUFFIXES[format]}", record, signing=signing)
    assert read_provenance(path) == record
    assert read_provenance(path.read_bytes()) == record
    sidecar = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    assert sidecar == record.to_dict()
    assert ProvenanceRecord.from_dict(sidecar) == record
    reopened = open_image(path)
    assert reopened.size == image.size
    if format in ("PNG", "TIFF"):
        np.testing.assert_array_equal(np.asarray(reopened), np.asarray(image))
    report = read_credentials(path.read_bytes())  # signed after the XMP went in: the signature covers it
    assert report.state == "Valid" and report.problems == ()


def test_png_carries_readable_json_and_the_same_record_as_xmp(signing):
    record = make_record()
    data = encode_image(gradient(), record, "PNG", signing=signing)
    with Image.open(io.BytesIO(data)) as image:
        assert json.loads(image.info["provenance"]) == record.to_dict()
        assert "XML:com.adobe.xmp" in image.info  # the standard XMP iTXt chunk
    xmp_only = without_png_chunk(data, b"provenance")
    assert b"iTXtprovenance\0" not in xmp_only
    assert read_provenance(xmp_only) == record


@pytest.mark.parametrize("format", SUFFIXES)
def test_xmp_declares_an_ai_generated_derivative(format, signing):
    record = make_record()
    data = encode_image(gradient(), record, format, signing=signing)
    xmp = read_xmp(data)
    assert xmp["Xmp.iptcExt.DigitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert xmp["Xmp.dc.description"] == {
        'lang="x-default"': "AI-generated derivative of letter_1887.tif; not a work by the original artist"}
    assert xmp["Xmp.dc.source"] == "letter_1887.tif"
    assert xmp["Xmp.dc.relation"] == [f"isVersionOf:sha256:{record.source_sha256}"]
    packet = xmp_packet(data)
    assert b'="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"' in packet and b":DigitalSourceType" in packet
    ElementTree.fromstring(packet)  # well-formed XML


@pytest.mark.parametrize("format", SUFFIXES)
def test_hostile_and_long_strings_survive_escaped(tmp_path, format, signing):
    record = make_record(source_name=HOSTILE, model_repo="r" * 5_000, model_revision=HOSTILE,
                         style="preset:" + HOSTILE, settings={"note": HOSTILE, "long": "é" * 10_000, "nested": [HOSTILE]})
    path = save_with_provenance(gradient(), tmp_path / f"result{SUFFIXES[format]}", record, signing=signing)
    assert read_provenance(path) == record
    assert json.loads(sidecar_path(path).read_text(encoding="utf-8")) == record.to_dict()
    packet = xmp_packet(path.read_bytes())
    assert b"<script>" not in packet and b"&lt;script&gt;" in packet
    description = ElementTree.fromstring(packet).find(".//{http://purl.org/dc/elements/1.1/}description")
    assert "".join(description.itertext()).strip() == \
        f"AI-generated derivative of {HOSTILE}; not a work by the original artist".strip()


def test_a_record_too_big_for_jpeg_xmp_is_refused_clearly(signing):
    record = make_record(settings={"notes": "x" * 100_000})
    with pytest.raises(ValueError, match="cannot embed this provenance in JPEG"):
        encode_image(gradient(), record, "JPEG", signing=signing)
    for format in ("PNG", "WEBP", "TIFF"):
        assert read_provenance(encode_image(gradient(), record, format, signing=signing)) == record


def test_existing_xmp_is_replaced_and_caller_options_are_untouched(signing):
    stale = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
             '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator><rdf:Seq>'
             '<rdf:li>Katsushika Hokusai</rdf:li></rdf:Seq></dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>')
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", stale)
    info.add_text("Software", "scanner 2.0")
    chunks_before = list(info.chunks)
    data = encode_image(gradient(), make_record(), "PNG", pnginfo=info, signing=signing)
    assert info.chunks == chunks_before
    xmp = read_xmp(data)
    assert "Xmp.dc.creator" not in xmp and b"Hokusai" not in data
    assert Image.open(io.BytesIO(data)).info["Software"] == "scanner 2.0"
    with pytest.raises(ValueError, match="writes the XMP itself"):
        encode_image(gradient(), make_record(), "WEBP", xmp=b"<x:xmpmeta/>", signing=signing)


def test_signing_refuses_an_original_the_record_does_not_name(signing):
    with pytest.raises(ValueError, match="the provenance record names source"):
        encode_image(gradient(), make_record(), "PNG", signing=Signing(signing.identity, b"another file"))


def test_unencodable_images_and_formats_are_refused(signing):
    with pytest.raises(ValueError, match="RGBA image as JPEG"):
        encode_image(gradient().convert("RGBA"), make_record(), "JPEG", signing=signing)
    with pytest.raises(ValueError, match="cannot embed provenance in 'GIF'"):
        encode_image(gradient(), make_record(), "GIF", signing=signing)


def test_files_without_provenance_read_as_none():
    assert read_provenance(SOURCE) is None
    assert read_provenance(encode(gradient(), "JPEG")) is None
    with pytest.raises(ValueError, match="cannot read metadata"):
        read_provenance(b"not an image")
    wrong_shape = encode(gradient(), "PNG", pnginfo=_png_info(provenance='["not", "a", "record"]'))
    with pytest.raises(ValueError, match="malformed provenance JSON"):
        read_provenance(wrong_shape)


# --- writing files -------------------------------------------------------------------------------

def test_atomic_write_leaves_exactly_the_file_and_its_sidecar(tmp_path, signing):
    path = save_with_provenance(gradient(), tmp_path / "page.stylized.png", make_record(), signing=signing)
    assert path == tmp_path / "page.stylized.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.stylized.png", "page.stylized.png.json"]


def test_failed_writes_leave_nothing_behind(tmp_path, monkeypatch, signing):
    with pytest.raises(ValueError):
        save_with_provenance(gradient().convert("RGBA"), tmp_path / "result.jpg", make_record(), signing=signing)
    assert list(tmp_path.iterdir()) == []

    real_link = os.link

    def failing_link(source, destination):
        if str(destination).endswith(".png"):
            raise OSError(28, "No space left on device")
        return real_link(source, destination)

    monkeypatch.setattr(os, "link", failing_link)
    with pytest.raises(OSError, match="No space left"):
        save_with_provenance(gradient(), tmp_path / "result.png", make_record(), signing=signing)
    assert list(tmp_path.iterdir()) == []  # no temporary file, no orphaned sidecar


def test_refuses_to_overwrite_unless_asked(tmp_path, signing):
    first, second = make_record(seed=1), make_record(seed=2)
    path = save_with_provenance(gradient(), tmp_path / "result.webp", first, signing=signing)
    before = path.read_bytes(), sidecar_path(path).read_bytes()
    with pytest.raises(FileExistsError, match="result.webp already exists"):
        save_with_provenance(gradient(), path, second, signing=signing)
    assert (path.read_bytes(), sidecar_path(path).read_bytes()) == before

    lone_sidecar = tmp_path / "other.png.json"
    lone_sidecar.write_text("{}")
    with pytest.raises(FileExistsError, match="other.png.json already exists"):
        save_with_provenance(gradient(), tmp_path / "other.png", second, signing=signing)
    assert not (tmp_path / "other.png").exists() and lone_sidecar.read_text() == "{}"

    save_with_provenance(gradient(), path, second, overwrite=True, signing=signing)
    assert read_provenance(path) == second
    assert json.loads(sidecar_path(path).read_text())["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.png.json", "result.webp", "result.webp.json"]


def test_format_comes_from_the_suffix(tmp_path, signing):
    path = save_with_provenance(gradient(), tmp_path / "RESULT.JPEG", make_record(), quality=90, signing=signing)
    assert Image.open(path).format == "JPEG"
    with pytest.raises(ValueError, match="cannot tell the format"):
        save_with_provenance(gradient(), tmp_path / "result.bmp", make_record(), signing=signing)


# --- the record ----------------------------------------------------------------------------------

def test_new_record_fills_version_time_and_model(signing):
    model = ModelInfo(repo="bundled", revision="5f1c0a2b9d3e", weights_sha256=sha256_bytes(b"w"), path="/models/x")
    record = new_record(source_sha256=sha256_bytes(SOURCE), source_name="scan.png", model_info=model,
                        style="preset:wave", style_strength=1, settings={"mode": "feedforward"}, seed=None)
    assert record.library_version == stylegan.__version__
    assert (record.model_repo, record.model_revision, record.weights_sha256) == (model.repo, model.revision,
                                                                                 model.weights_sha256)
    created = datetime.fromisoformat(record.created)
    assert abs((datetime.now(UTC) - created).total_seconds()) < 60
    assert record.style_strength == 1.0 and isinstance(record.style_strength, float)
    assert record.digital_source_type == TRAINED_ALGORITHMIC_MEDIA
    assert read_provenance(encode_image(gradient(), record, "JPEG", signing=signing)) == record  # seed None survives XMP


def test_describe_style():
    image_hash = sha256_bytes(b"style image")
    assert describe_style("preset:wave") == "preset:wave"
    assert describe_style([("preset:wave", 1.0)]) == "preset:wave"
    assert describe_style([(f"sha256:{image_hash}", 0.5)]) == f"sha256:{image_hash}"
    blend = describe_style([("preset:wave", 2), (f"sha256:{image_hash}", 1)])
    assert blend.startswith("blend:")
    assert json.loads(blend.removeprefix("blend:")) == [["preset:wave", 2.0], [f"sha256:{image_hash}", 1.0]]
    make_record(style=blend)  # a valid record style
    with pytest.raises(ValueError):
        describe_style([("The Great Wave", 1.0)])
    with pytest.raises(ValueError, match="no style"):
        describe_style([])


@pytest.mark.parametrize("changes", [
    {"source_sha256": "abc"},
    {"source_sha256": "A" * 64},
    {"weights_sha256": "not-a-hash"},
    {"style": "hokusai"},
    {"style": "sha256:1234"},
    {"style": 'blend:[["preset:a", -1]]'},
    {"style": "blend:not json"},
    {"style_strength": 1.5},
    {"style_strength": float("nan")},
    {"style_strength": True},
    {"seed": "7"},
    {"created": "2026-11-26 01:02:03"},
    {"created": "2026-11-26T01:02:03+01:00"},
    {"settings": {"bad": object()}},
    {"settings": {"bad": float("inf")}},
    {"settings": [1, 2]},
    {"source_name": "scan\x00.png"},
    {"source_name": "scan\x1b[31m.png"},
    {"library_version": 1},
])
def test_invalid_records_are_refused(changes):
    with pytest.raises((ValueError, TypeError), match="provenance"):
        make_record(**changes)


def test_record_is_detached_from_callers_settings_and_from_dict_is_strict():
    settings = {"post_processing": {"contrast": 1.1}}
    record = make_record(settings=settings)
    settings["post_processing"]["contrast"] = 9.0
    assert record.settings == {"post_processing": {"contrast": 1.1}}
    record.to_dict()["settings"]["post_processing"]["contrast"] = 9.0
    assert record.settings == {"post_processing": {"contrast": 1.1}}
    data = record.to_dict()
    with pytest.raises(ValueError, match="unknown fields \\['extra'\\]"):
        ProvenanceRecord.from_dict(data | {"extra": 1})
    with pytest.raises(ValueError, match="missing \\['seed'\\]"):
        ProvenanceRecord.from_dict({k: v for k, v in data.items() if k != "seed"})
    data.pop("digital_source_type")
    assert ProvenanceRecord.from_dict(data) == record


def test_sha256_and_sidecar_path():
    assert sha256_bytes(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert str(sidecar_path("out/page.stylized.png")) == os.path.join("out", "page.stylized.png.json")


def test_png_chunk_helper_matches_pillow():
    # tests.helpers.imagegen.png_chunk crafts the PNG headers test_images refuses; check it against Pillow's writer.
    data = encode(Image.new("RGB", (1, 1)), "PNG")
    assert data[8:33] == png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
