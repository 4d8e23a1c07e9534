"""Hostile inputs through every surface: the library (`archivist.pipeline.stylize`: `open_image`,
`Stylizer.stylize` and `Archive.add`), the CLI (`python -m archivist stylize`) and the app's API
(gradio_client against the app served in-process on loopback).

Every hostile file is made here, by the test (no binary junk is committed). Each one gets a
clear error naming the file and the problem, or a correct result; the app keeps serving; nothing
is written outside the archive (or the CLI's --out); exports neutralise spreadsheet formulas,
keep the strings intact in the IIIF manifest, and the app's HTML shows metadata as text.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from gradio.utils import get_upload_folder
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from PIL import Image

from archivist.archive import Archive, ArchiveError, Catalogue
from archivist.batch import UnreadableMember, collect_batch
from archivist.pipeline import Job, StyleChoice, ToArchive, stylize, stylize_batch
from archivist.provenance import read_provenance, sha256_bytes
from stylegan.images import MAX_FILE_BYTES
from tests.helpers.appserver import PRESET, bundled_stylizer, one_torch_thread, raw_call, serve, tree
from tests.helpers.imagegen import (
    animation,
    encode,
    gradient,
    gray16,
    noise,
    palette_with_transparency,
    png_header_only,
    png_with_text,
    with_exif_orientation,
)
from tests.helpers.required import required_import

gradio_client = required_import("gradio_client")
pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)
ROOT = Path(__file__).resolve().parents[2]
SYSTEM_TMP = "system-tmp"  # Python's temporary folder while this module runs
PREVIEW = re.compile(r"(draft-[0-9a-f]{32}|[0-9a-f]{16})-(before|after)\.webp")
RIGHTS = "http://rightsstatements.org/vocab/NoC-US/1.0/"


@dataclass(frozen=True)
class Result:
    """What a good input must give: the stylised result's size (EXIF orientation applied) and mode."""
    size: tuple[int, int]
    mode: str


def _truncated(data: bytes, fraction: float = 0.6) -> bytes:
    return data[: int(len(data) * fraction)]


FORMULA_NAME = '=HYPERLINK("evil") <script>.png'  # a legal file name on Linux
# name -> (the file's bytes, a pattern its refusal must match or the Result it must give)
FILES: dict[str, tuple[Callable[[], bytes], str | Result]] = {
    "noise.png": (lambda: noise(256, 1, 1).tobytes(), "not a recognised image"),
    "page.png": (lambda: b"<!DOCTYPE html><html><script>alert(1)</script></html>", r"text \(HTML, SVG"),
    "drawing.png": (lambda: b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', r"text \(HTML, SVG"),
    "empty.png": (lambda: b"", r"empty \(0 bytes\)"),
    "cut-jpeg.jpg": (lambda: _truncated(encode(gradient(), "JPEG")), "JPEG data is truncated"),
    "cut-png.png": (lambda: _truncated(encode(gradient(), "PNG")), "PNG data is truncated"),
    "bomb.png": (lambda: png_header_only(30_000, 30_000), "30000×30000 pixels is over the limit"),
    # 85 MP: over this library's limit of 80 MP, under Pillow's own (about 89.5 MP)
    "bomb-85mp.png": (lambda: png_header_only(10_000, 8_500), "10000×8500 pixels is over the limit of 80,000,000"),
    "dot.png": (lambda: encode(gradient(1, 1), "PNG"), Result((1, 1), "RGB")),
    "sliver.png": (lambda: encode(gradient(2, 20_000), "PNG"), Result((2, 20_000), "RGB")),
    "depth16.tif": (lambda: encode(gray16(24, 16), "TIFF"), Result((24, 16), "I;16")),
    "print.jpg": (lambda: encode(gradient().convert("CMYK"), "JPEG", quality=95), Result((24, 16), "RGB")),
    "map.png": (lambda: encode(palette_with_transparency(), "PNG"), Result((16, 12), "RGBA")),
    "animated-gif.gif": (lambda: animation("GIF", [(200, 30, 30), (30, 200, 30)]), Result((12, 8), "RGB")),
    "animated-webp.webp": (lambda: animation("WEBP", [(200, 30, 30), (30, 200, 30)]), Result((12, 8), "RGB")),
    "rotated.jpg": (lambda: with_exif_orientation(gradient(24, 16), 6, "JPEG"), Result((16, 24), "RGB")),
    "annotated.png": (lambda: png_with_text(gradient(), plain_bytes=3_000_000, compressed_bytes=1_000_000),
                      Result((24, 16), "RGB")),
    FORMULA_NAME: (lambda: encode(gradient(20, 10), "PNG"), Result((20, 10), "RGB")),
}


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def zip_with_patched_first_member(members: dict[str, bytes], *, method: int | None = None,
                                  declared: tuple[int, int] | None = None, encrypted: bool = False) -> bytes:
    """A STORED ZIP whose first member claims another compression method, or other
    (compressed, uncompressed) sizes in the central directory, than it really has, or to be
    encrypted (flag bit 0, in its local header and its central directory record, as PKWARE
    encryption sets it: `zipfile` cannot write encrypted members)."""
    data = bytearray(zip_bytes(members, zipfile.ZIP_STORED))
    central = data.index(b"PK\x01\x02")  # the first member's central directory record
    if encrypted:
        data[6] |= 0x01
        data[central + 8] |= 0x01
    if method is not None:
        data[8:10] = data[central + 10:central + 12] = method.to_bytes(2, "little")
    if declared is not None:
        data[central + 20:central + 28] = declared[0].to_bytes(4, "little") + declared[1].to_bytes(4, "little")
    return bytes(data)


GOOD = encode(gradient(20, 12), "PNG")
ZIPS: dict[str, Callable[[], bytes]] = {
    "slip.zip": lambda: zip_bytes({"../../escape.png": GOOD, "/etc/cron.d/job.png": GOOD, "C:/evil.png": GOOD,
                                   "box/page.png": GOOD, "<img src=x onerror=alert(1)>.txt": b"hello"}),
    "bomb.zip": lambda: zip_bytes({"zeros.png": bytes(8 * 1024**2)}),  # ~1000:1
    "nested.zip": lambda: zip_bytes({"inner.zip": zip_bytes({"a.png": GOOD})}),
    "method.zip": lambda: zip_with_patched_first_member({"odd.png": GOOD, "fine.png": GOOD}, method=99),
    "declared.zip": lambda: zip_with_patched_first_member({"huge.tif": GOOD},
                                                          declared=(20 * 1024**2, 1536 * 1024**2)),
    "many.zip": lambda: zip_bytes({f"{index}.png": GOOD for index in range(101)}),
    "locked.zip": lambda: zip_with_patched_first_member({"secret.png": GOOD}, encrypted=True),
}
# batch item name -> the pattern of its refusal (the archived items are ARCHIVED)
ZIP_REFUSALS = {
    "slip.zip/../../escape.png": "zip slip", "slip.zip//etc/cron.d/job.png": "zip slip",
    "slip.zip/C:/evil.png": "zip slip", "slip.zip/<img src=x onerror=alert(1)>.txt": "not a recognised image",
    "bomb.zip/zeros.png": "possible zip bomb", "nested.zip/inner.zip": "nested archives are not expanded",
    "method.zip/odd.png": r"cannot be read from the ZIP \(NotImplementedError",
    "declared.zip/huge.tif": f"over the limit of {MAX_FILE_BYTES:,} bytes per file",
    "many.zip": "holds 101 files; a batch takes at most 100",
    "locked.zip/secret.png": "^encrypted ZIP member$",  # refused as such, before zipfile asks for a password
}
ARCHIVED = {"page.png", "fine.png"}

# Catalogue text a spreadsheet, a browser or a IIIF viewer could be made to run.
HOSTILE_TEXT = {"title": '<script>alert("title")</script>', "source_id": '=HYPERLINK("http://evil.example/","x")',
                "notes": "+cmd|' /C calc'!A0\n<img src=x onerror=alert(1)>", "tags": "@SUM(1+1), <b>bold</b>, -2+3"}
TOO_LONG = {"title": ("x" * 1_000_000, "title is 1,000,000 characters long; the limit is 500"),
            "notes": ("n" * 20_001, "notes is 20,001 characters long; the limit is 20,000"),
            "tags": ("t" * 65, "must have no commas and at most 64 characters")}


def refusal(name: str, pattern: str) -> str:
    """An error that names the file first, then the problem."""
    return rf"{re.escape(name)}: .*{pattern}"


def result_mode_of(path: str | Path) -> tuple[tuple[int, int], str]:
    with Image.open(path) as image:
        return image.size, image.mode


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Inputs written once; the module runs in an empty working directory, with Python's temporary
    folder (where Gradio keeps uploads and the app its previews) inside the workspace, so that
    anything written shows (see test_nothing_is_written_outside_the_archive)."""
    root = tmp_path_factory.mktemp("hostile")
    inputs = root / "inputs"
    inputs.mkdir()
    for name, (make, _) in FILES.items():
        (inputs / name).write_bytes(make())
    zips = root / "zips"
    zips.mkdir()
    for name, make in ZIPS.items():
        (zips / name).write_bytes(make())
    cwd = root / "cwd"
    cwd.mkdir()
    (root / SYSTEM_TMP).mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        patch.setattr(tempfile, "tempdir", str(root / SYSTEM_TMP))
        yield root, tree(root)


@pytest.fixture(scope="module")
def archive(workspace) -> Archive:
    root, _ = workspace
    return Archive(root / "archive")


@pytest.fixture(scope="module")
def served(workspace, archive):
    root, _ = workspace
    with serve(archive) as served:
        client = gradio_client.Client(served.url, analytics_enabled=False, verbose=False,
                                      download_files=str(root / "downloads"))
        yield served, client
        client.close()


def app_stylize(client, path: Path, **catalogue):
    return client.predict(content=gradio_client.handle_file(str(path)), style_source="preset", preset=PRESET,
                          api_name="/stylize", **catalogue)


# -- one file at a time: library and app ---------------------------------------------------------
@pytest.mark.parametrize("name", FILES)
def test_library(workspace, archive, name):
    root, _ = workspace
    data = (root / "inputs" / name).read_bytes()
    expected = FILES[name][1]

    def run():
        return stylize(bundled_stylizer(), data, name, Job(StyleChoice.preset(PRESET)), ToArchive(archive))

    if isinstance(expected, str):
        with pytest.raises(ValueError, match=refusal(name, expected)):
            run()
        return
    result = run()
    assert (result.result.size, result.result.mode) == (expected.size, expected.mode)
    assert archive.path(result.kept.original_file).read_bytes() == data
    assert result_mode_of(archive.path(result.kept.result_file)) == (expected.size, expected.mode)
    assert read_provenance(archive.path(result.kept.result_file)).source_name == name


@pytest.mark.parametrize("name", FILES)
def test_app(workspace, served, name):
    root, _ = workspace
    _, client = served
    expected = FILES[name][1]
    if isinstance(expected, str):
        with pytest.raises(gradio_client.exceptions.AppError, match=refusal(name, expected)):
            app_stylize(client, root / "inputs" / name)
        return
    _, result_file, entry, _ = app_stylize(client, root / "inputs" / name)
    assert result_mode_of(result_file) == (expected.size, expected.mode)
    assert (entry["width"], entry["height"]) == expected.size
    assert entry["provenance"]["source_sha256"] == sha256_bytes((root / "inputs" / name).read_bytes())


# -- every file in one CLI run -------------------------------------------------------------------
def test_cli(workspace, tmp_path):
    root, _ = workspace
    inputs, out, cwd, temporary = root / "inputs", tmp_path / "out", tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    temporary.mkdir()
    before = tree(inputs)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TMPDIR": str(temporary),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for variable in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(variable, None)
    zip_input = root / "zips" / "slip.zip"  # named explicitly: the CLI reads it as an image, never unpacks it
    completed = subprocess.run([sys.executable, "-m", "archivist", "stylize", str(inputs), str(zip_input),
                                "--style", PRESET, "--out", str(out)],
                               cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 1, completed.stderr
    failures = dict(line.strip().split(": ", 1) for line in completed.stderr.splitlines()
                    if line.startswith("  ") and ": " in line)
    assert re.match("not a recognised image", failures.pop(str(zip_input)))
    written = set()
    for name, (_, expected) in FILES.items():
        path = str(inputs / name)
        if isinstance(expected, str):
            assert re.search(expected, failures.pop(path)), name
            continue
        result = out / f"{Path(name).stem}.stylized.png"
        assert str(result) in completed.stdout
        assert result_mode_of(result) == (expected.size, expected.mode), name
        sidecar = json.loads(Path(f"{result}.json").read_text())
        assert json.dumps(name)[1:-1] in json.dumps(sidecar)  # the hostile name, intact in the JSON
        written |= {result.name, f"{result.name}.json"}
    assert failures == {}, failures
    assert set(tree(out)) == written
    assert tree(inputs) == before  # inputs untouched
    assert tree(cwd) == {} and tree(temporary) == {}  # nothing written beside --out


# -- batches of ZIPs: library and app ------------------------------------------------------------
def check_batch(archived_names: list[str], refusals: dict[str, str]) -> None:
    assert sorted(archived_names) == sorted(ARCHIVED)
    assert set(refusals) == set(ZIP_REFUSALS)
    for name, pattern in ZIP_REFUSALS.items():
        assert re.search(pattern, refusals[name]), (name, refusals[name])


def test_batch_library(workspace, archive):
    root, _ = workspace
    items, refused = collect_batch([(name, root / "zips" / name) for name in ZIPS])
    report = stylize_batch(bundled_stylizer(), archive, items, Job(StyleChoice.preset(PRESET)), Catalogue())
    check_batch([entry.record.source_name for entry in report.entries],
                {refusal.name: refusal.reason for refusal in [*refused, *report.refused]})


def test_batch_app(workspace, served):
    root, _ = workspace
    _, client = served
    summary, report, gallery = client.predict(
        files=[gradio_client.handle_file(str(root / "zips" / name)) for name in ZIPS], style_source="preset",
        preset=PRESET, api_name="/batch")
    check_batch([entry["provenance"]["source_name"] for entry in report["archived"]],
                {item["name"]: item["reason"] for item in report["refused"]})
    assert len(gallery) == len(ARCHIVED)
    html = MarkdownIt().render(summary)  # the summary is Markdown: names are shown as text
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


# -- catalogue text: exports and HTML ------------------------------------------------------------
def check_export(bundle_path: str | Path, entry_id: str) -> None:
    """CSV cells that a spreadsheet would run are neutralised; the IIIF manifest is valid JSON
    holding the strings exactly as entered."""
    with zipfile.ZipFile(bundle_path) as bundle:
        rows = list(csv.DictReader(io.StringIO(bundle.read("metadata.csv").decode())))
        manifest = json.loads(bundle.read("manifest.json"))
    (row,) = [row for row in rows if row["dc.identifier"] == entry_id]
    assert row["dc.title"] == HOSTILE_TEXT["title"]  # not a formula: kept as it is (CSV is not HTML)
    assert row["dc.source"] == "'" + HOSTILE_TEXT["source_id"]
    assert row["dc.description"].startswith("'" + HOSTILE_TEXT["notes"])
    assert row["dc.subject"] == "'@SUM(1+1); <b>bold</b>; -2+3"
    assert not [cell for row in rows for cell in row.values() if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
    (canvas,) = [canvas for canvas in manifest["items"] if canvas["id"].endswith(f"/canvas/{entry_id}")]
    assert canvas["label"] == {"none": [HOSTILE_TEXT["title"]]}
    values = {pair["label"]["en"][0]: pair["value"]["none"][0] for pair in canvas["metadata"]}
    assert values["Source"] == HOSTILE_TEXT["source_id"] and values["Notes"] == HOSTILE_TEXT["notes"]
    assert values["Tags"] == "@SUM(1+1); <b>bold</b>; -2+3"


def test_hostile_catalogue_text_library(workspace, archive):
    root, _ = workspace
    catalogue = Catalogue(**(HOSTILE_TEXT | {"tags": tuple(HOSTILE_TEXT["tags"].split(", "))}))
    entry = stylize(bundled_stylizer(), GOOD, "scan.png", Job(StyleChoice.preset(PRESET)),
                    ToArchive(archive, catalogue)).kept
    archive.export_zip(root / "archive" / "exports" / "library.zip", base_url="https://example.org/x/",
                       entry_ids=[entry.id], include_unapproved=True)
    check_export(root / "archive" / "exports" / "library.zip", entry.id)
    for field, (value, message) in TOO_LONG.items():
        with pytest.raises(ArchiveError, match=message):
            Catalogue(**{field: tuple(value.split(",")) if field == "tags" else value})


def test_hostile_catalogue_text_app(workspace, served):
    root, _ = workspace
    app_served, client = served
    _, _, entry, _ = app_stylize(client, root / "inputs" / "dot.png", rights=RIGHTS, **HOSTILE_TEXT)
    assert {field: entry[field] for field in ("title", "source_id", "notes")} == {
        field: HOSTILE_TEXT[field] for field in ("title", "source_id", "notes")}
    assert entry["tags"] == ["@SUM(1+1)", "<b>bold</b>", "-2+3"]
    assert client.predict(entry_id=entry["id"], api_name="/entry_get") == entry
    check_export(client.predict(entry_ids=[entry["id"]], include_unapproved=True, api_name="/export"), entry["id"])

    # The entry view (permalink): its header is the only HTML made from catalogue text.
    message = raw_call(app_served.url, "page_load", [], query=f"entry={entry['id']}")
    assert message["success"]
    (header,) = [value for value in message["output"]["data"]
                 if isinstance(value, (str, dict)) and "Entry `" in json.dumps(value)]
    html = MarkdownIt().render(header if isinstance(header, str) else header["value"])
    assert "<script" not in html and "&lt;script&gt;alert(&quot;title&quot;)&lt;/script&gt;" in html
    hostile_link = raw_call(app_served.url, "page_load", [], query="entry=%3Cscript%3Ealert(1)%3C/script%3E")
    assert hostile_link["success"]  # a warning toast (sanitised by Gradio), the page still loads

    for field, (value, message_pattern) in TOO_LONG.items():
        with pytest.raises(gradio_client.exceptions.AppError, match=message_pattern):
            app_stylize(client, root / "inputs" / "dot.png", **{field: value})
    long_notes = "n" * 20_000  # exactly at the limit: kept whole
    _, _, kept, _ = app_stylize(client, root / "inputs" / "dot.png", notes=long_notes)
    assert client.predict(entry_id=kept["id"], api_name="/entry_get")["notes"] == long_notes


# -- afterwards ----------------------------------------------------------------------------------
def test_the_app_keeps_serving(workspace, served):
    root, _ = workspace
    _, client = served
    assert client.predict(api_name="/presets")
    _, result_file, entry, status = app_stylize(client, root / "inputs" / "print.jpg", title="after the attacks")
    assert entry["title"] == "after the attacks" and entry["id"] in status and Path(result_file).exists()
    assert entry["id"] in [item["id"] for item in client.predict(text="after the attacks",
                                                                 api_name="/archive_search")]


def test_nothing_is_written_outside_the_archive(workspace, archive):
    root, before = workspace
    system_tmp = root / SYSTEM_TMP
    assert tree(root, skip=(root / "archive", root / "downloads", system_tmp)) == before  # inputs, zips, cwd
    # The temporary folder holds Gradio's uploads and cache, and the app's before/after previews: nothing else.
    assert Path(get_upload_folder()) == system_tmp / "gradio"
    (previews,) = [folder for folder in system_tmp.iterdir() if folder.name.startswith("archive-style-previews-")]
    assert tree(system_tmp, skip=(system_tmp / "gradio", previews)) == {}  # (gradio_client leaves empty folders)
    assert tree(previews) and all(PREVIEW.fullmatch(name) for name in tree(previews)), sorted(tree(previews))
    # The ZIPs were uploaded to Gradio's folder but never unpacked: no member escaped anywhere.
    assert not list(root.rglob("escape.png")) and not list(root.rglob("job.png"))
    for entry in archive.search():  # whatever was archived is whole
        assert sha256_bytes(archive.path(entry.original_file).read_bytes()) == entry.record.source_sha256


# -- fuzzing the ZIP reader ----------------------------------------------------------------------
ZIP_SEEDS = [zip_bytes({"a.png": GOOD, "d/b.jpg": b"x" * 300}, compression)
             for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)]


@st.composite
def mutated_zips(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(ZIP_SEEDS)))
    for position, value in draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)),
                                         min_size=1, max_size=8)):
        data[position] = value
    return bytes(data[:draw(st.one_of(st.just(len(data)), st.integers(1, len(data))))])  # whole or truncated


@settings(max_examples=200, deadline=None, database=None)
@given(st.one_of(st.binary(max_size=1024), st.builds(lambda tail: b"PK\x03\x04" + tail, st.binary(max_size=512)),
                 mutated_zips()))
def test_fuzzed_zips_give_items_or_refusals(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "fuzz.zip"
    path.write_bytes(data)
    items, refused = collect_batch([("fuzz.zip", path)])  # never raises
    assert all(refusal.name.startswith("fuzz.zip") and refusal.reason for refusal in refused)
    for item in items:
        try:
            assert isinstance(item.read(), bytes)
        except UnreadableMember as error:
            assert str(error).startswith("cannot be read from the ZIP (")


def test_a_zip_member_without_a_name_is_refused(tmp_path: Path) -> None:
    # Found by the fuzz test: zipfile's own ZipInfo.is_dir() raises IndexError on an empty name.
    path = tmp_path / "unnamed.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(zipfile.ZipInfo(""), b"not an image")
        archive.writestr("ok.txt", b"x")
    _, refused = collect_batch([("unnamed.zip", path)])
    assert any("without a file name" in refusal.reason for refusal in refused)
