"""The archive, batch reading, post-processing and jobs, without a model or a browser."""
from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import time
import zipfile
from datetime import date, timedelta
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from archivist.archive import (
    DUBLIN_CORE_COLUMNS,
    Archive,
    ArchiveError,
    Catalogue,
    EntryNotFound,
    csv_cell,
    parse_tags,
    validate_rights,
)
from archivist.batch import MAX_COMPRESSION_RATIO, BatchItem, collect_batch
from archivist.pipeline import Job, StyleChoice, StyleImage, stylize_batch
from archivist.postprocess import PostProcess
from archivist.provenance import new_record, read_provenance, sha256_bytes
from stylegan.inference import ModelInfo, StylizeSettings

MODEL = ModelInfo("org/model", "0123456789abcdef0123456789abcdef01234567", "ab" * 32, "")
BASE_URL = "https://iiif.example.org/exports/one/"


def image_bytes(seed: int, size: tuple[int, int] = (40, 30), format: str = "PNG", mode: str = "RGB") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").convert(mode).save(buffer, format)
    return buffer.getvalue()


def result_image(seed: int = 99, size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.open(io.BytesIO(image_bytes(seed, size))).convert("RGB")


def record_for(original: bytes, *, style: str = "preset:waves", name: str = "scan.png", strength: float = 0.7):
    return new_record(source_sha256=sha256_bytes(original), source_name=name, model_info=MODEL, style=style,
                      style_strength=strength, settings={"preserve_color": False, "contrast": 1.2}, seed=7)


def add(archive: Archive, seed: int = 1, *, original: bytes | None = None, **catalogue):
    original = original if original is not None else image_bytes(seed)
    return archive.add(original, result_image(seed + 100), record_for(original, **catalogue.pop("record", {})),
                       Catalogue(**catalogue))


@pytest.fixture
def archive(tmp_path):
    return Archive(tmp_path / "archive")


FULL = {"title": "Letter to the Board, 1917", "source_id": "MS 42/7",
        "rights": "http://rightsstatements.org/vocab/NoC-US/1.0/", "notes": "Ink on paper; stained lower left.",
        "tags": ("letters", "1917"), "approved": True}


def test_add_records_every_field_and_stores_the_files(archive):
    original = image_bytes(1, format="JPEG")
    entry = add(archive, original=original, **FULL)
    stored = archive.get(entry.id)
    assert stored == entry
    assert stored.catalogue == Catalogue(**FULL)
    assert stored.record.style == "preset:waves" and stored.record.style_strength == 0.7
    assert stored.record.settings == {"preserve_color": False, "contrast": 1.2} and stored.record.seed == 7
    assert (stored.record.model_repo, stored.record.model_revision, stored.record.weights_sha256) == (
        MODEL.repo, MODEL.revision, MODEL.weights_sha256)
    assert stored.created.endswith("Z") and (stored.width, stored.height) == (40, 30)
    # The original byte for byte, named by its hash; the result carries its provenance.
    digest = sha256_bytes(original)
    assert stored.original_file == f"originals/{digest[:2]}/{digest}.jpg"
    assert archive.path(stored.original_file).read_bytes() == original
    assert read_provenance(archive.path(stored.result_file)) == stored.record
    with Image.open(archive.path(stored.thumbnail_file)) as thumbnail:
        assert thumbnail.mode == "RGB" and max(thumbnail.size) <= 512
    # The catalogue's columns are generated from the record: they cannot disagree.
    with sqlite3.connect(archive.database) as connection:
        row = connection.execute("SELECT style, style_strength, seed, model_revision, weights_sha256, created, "
                                 "original_sha256 FROM entries WHERE id = ?", (entry.id,)).fetchone()
        # A rollback journal kept allocated between transactions (see test_disk_full.py), not WAL.
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal"
    assert (archive.root / "archive.sqlite3-journal").is_file()
    assert row == ("preset:waves", 0.7, 7, MODEL.revision, MODEL.weights_sha256, stored.created, digest)


def test_add_refuses_a_record_of_another_original(archive):
    with pytest.raises(ArchiveError, match="hash to"):
        archive.add(image_bytes(1), result_image(), record_for(image_bytes(2)))


def test_a_failed_add_leaves_no_row_and_no_file(archive, monkeypatch):
    import archivist.archive as archive_module

    def fail(*args):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(archive_module, "_insert_tags", fail)
    with pytest.raises(sqlite3.OperationalError):
        add(archive, **FULL)
    assert archive.search() == []
    assert not [path for folder in ("originals", "results", "thumbnails", "tmp")
                for path in (archive.root / folder).rglob("*") if path.is_file()]


def test_search_by_text_tag_style_date_and_approval(archive):
    letter = add(archive, 1, **FULL)
    map_ = add(archive, 2, title="Survey map", source_id="MAP-9", tags=("maps",), approved=False,
               record={"style": "preset:hokusai_great_wave_off_kanagawa", "name": "map_9.tif"})
    assert [entry.id for entry in archive.search("letter")] == [letter.id]
    assert [entry.id for entry in archive.search("ms 42")] == [letter.id]  # source id, any case
    assert [entry.id for entry in archive.search("map_9")] == [map_.id]  # original file name
    assert [entry.id for entry in archive.search("1917")] == [letter.id]  # title and tag
    assert archive.search("100%") == []  # LIKE wildcards are literal
    assert [entry.id for entry in archive.search(tag="LETTERS")] == [letter.id]
    assert archive.search(tag="lett") == []  # a tag filter is one whole tag
    assert [entry.id for entry in archive.search(style="hokusai")] == [map_.id]
    assert [entry.id for entry in archive.search(approved=True)] == [letter.id]
    assert [entry.id for entry in archive.search(approved=False)] == [map_.id]
    today = date.fromisoformat(letter.created[:10])
    assert {entry.id for entry in archive.search(date_from=today, date_to=today.isoformat())} == {letter.id, map_.id}
    assert archive.search(date_to=today - timedelta(days=1)) == []
    assert archive.search(date_from=(today + timedelta(days=1)).isoformat()) == []
    assert {entry.id for entry in archive.search()} == {letter.id, map_.id}
    assert len(archive.search(limit=1)) == 1
    assert archive.styles() == ["preset:hokusai_great_wave_off_kanagawa", "preset:waves"]
    assert archive.tags() == ["1917", "letters", "maps"]
    with pytest.raises(ArchiveError, match="date_from must be a date"):
        archive.search(date_from="31/05/2024")


def test_edits_persist_across_reopening(archive):
    entry = add(archive, **FULL)
    archive.update(entry.id, title="Letter (draft)", rights="https://creativecommons.org/publicdomain/zero/1.0/",
                   tags=parse_tags("drafts, Letters, drafts"), approved=False, notes="")
    reopened = Archive(archive.root).get(entry.id)
    assert reopened.catalogue == Catalogue("Letter (draft)", "MS 42/7",
                                           "https://creativecommons.org/publicdomain/zero/1.0/", "",
                                           ("drafts", "Letters"), False)
    assert reopened.record == entry.record  # how it was made does not change
    with pytest.raises(ArchiveError, match="cannot edit"):
        archive.update(entry.id, style="preset:other")
    with pytest.raises(ArchiveError, match="not a RightsStatements.org URI"):
        archive.update(entry.id, rights="https://example.org/my-licence")
    assert archive.get(entry.id).catalogue.title == "Letter (draft)"


def test_delete_removes_the_entry_and_its_files(archive):
    entry = add(archive, **FULL)
    files = [archive.path(name) for name in (entry.result_file, entry.thumbnail_file, entry.original_file)]
    assert all(path.exists() for path in files)
    removed = archive.delete(entry.id)
    assert sorted(removed) == sorted([entry.result_file, entry.thumbnail_file, entry.original_file])
    assert not any(path.exists() for path in files)
    with pytest.raises(EntryNotFound):
        archive.get(entry.id)
    with sqlite3.connect(archive.database) as connection:
        assert connection.execute("SELECT count(*) FROM tags").fetchone()[0] == 0
    assert not [path for path in archive.root.rglob("*") if path.is_file() and path.suffix in (".png", ".jpg", ".tmp")]
    with pytest.raises(EntryNotFound):
        archive.delete(entry.id)
    with pytest.raises(EntryNotFound, match="not an entry id"):
        archive.get("../archive.sqlite3")


def test_an_original_shared_by_two_entries_stays_until_the_last_goes(archive):
    original = image_bytes(5)
    first = add(archive, 5, original=original, title="first")
    second = add(archive, 6, original=original, title="second")
    assert first.original_file == second.original_file
    archive.delete(first.id)
    assert archive.path(second.original_file).read_bytes() == original
    assert archive.get(second.id).catalogue.title == "second"
    archive.delete(second.id)
    assert not archive.path(second.original_file).exists()


def test_export_zip_holds_files_csv_and_iiif_manifest(archive, tmp_path):
    approved = add(archive, 1, **FULL)
    add(archive, 2, title="not yet", approved=False)
    destination = tmp_path / "export.zip"
    exported = archive.export_zip(destination, base_url=BASE_URL, include_originals=True)
    assert [entry.id for entry in exported] == [approved.id]  # approved entries only, by default
    with zipfile.ZipFile(destination) as bundle:
        names = set(bundle.namelist())
        original_name = f"originals/{approved.record.source_sha256}.png"
        assert names == {approved.result_file, approved.result_file + ".json", original_name, "metadata.csv",
                         "manifest.json"}
        assert read_provenance(bundle.read(approved.result_file)) == approved.record
        assert bundle.read(original_name) == archive.path(approved.original_file).read_bytes()
        sidecar = json.loads(bundle.read(approved.result_file + ".json"))
        assert sidecar["provenance"] == approved.record.to_dict() and sidecar["title"] == FULL["title"]
        rows = list(csv.DictReader(io.StringIO(bundle.read("metadata.csv").decode("utf-8"))))
        manifest = json.loads(bundle.read("manifest.json"))
    assert len(rows) == 1 and set(DUBLIN_CORE_COLUMNS) <= set(rows[0])
    row = rows[0]
    assert row["dc.title"] == FULL["title"] and row["dc.source"] == "MS 42/7"
    assert row["dc.rights"] == FULL["rights"] and row["dc.type"] == "StillImage"
    assert row["dc.relation.isVersionOf"] == f"urn:sha256:{approved.record.source_sha256}"
    assert row["dc.date"] == approved.created and row["dc.subject"] == "letters; 1917"
    assert "org/model@" in row["dc.creator"] and "preset:waves" in row["dc.description"]
    assert row["file"] == approved.result_file and row["original_file"] == original_name

    assert manifest["@context"] == "http://iiif.io/api/presentation/3/context.json"
    assert manifest["type"] == "Manifest" and manifest["id"] == BASE_URL + "manifest.json"
    assert manifest["label"]["en"] and manifest["requiredStatement"]["value"]["en"]
    assert manifest["rights"] == FULL["rights"]
    (canvas,) = manifest["items"]
    assert canvas["type"] == "Canvas" and canvas["id"].startswith(BASE_URL)
    assert (canvas["width"], canvas["height"]) == (40, 30) and canvas["rights"] == FULL["rights"]
    assert canvas["label"] == {"none": [FULL["title"]]}
    assert {"label", "value"} <= set(canvas["metadata"][0]) and "MS 42/7" in json.dumps(canvas["requiredStatement"])
    (page,) = canvas["items"]
    (annotation,) = page["items"]
    assert page["type"] == "AnnotationPage" and annotation["type"] == "Annotation"
    assert annotation["motivation"] == "painting" and annotation["target"] == canvas["id"]
    assert annotation["body"] == {"id": BASE_URL + approved.result_file, "type": "Image", "format": "image/png",
                                  "width": 40, "height": 30}


def test_export_of_unapproved_entries_only_when_asked(archive, tmp_path):
    approved = add(archive, 1, title="yes", approved=True)
    draft = add(archive, 2, title="no", approved=False)
    with pytest.raises(ArchiveError, match="not approved for sharing"):
        archive.export_zip(tmp_path / "a.zip", base_url=BASE_URL, entry_ids=[draft.id])
    assert not (tmp_path / "a.zip").exists()
    chosen = archive.export_zip(tmp_path / "b.zip", base_url=BASE_URL, entry_ids=[draft.id], include_unapproved=True)
    assert [entry.id for entry in chosen] == [draft.id]
    everything = archive.export_zip(tmp_path / "c.zip", base_url=BASE_URL, include_unapproved=True)
    assert {entry.id for entry in everything} == {approved.id, draft.id}
    with zipfile.ZipFile(tmp_path / "c.zip") as bundle:
        assert not any(name.startswith("originals/") for name in bundle.namelist())  # only when asked
        assert "rights" not in json.loads(bundle.read("manifest.json"))  # no rights recorded, none claimed
    archive.delete(approved.id)
    with pytest.raises(ArchiveError, match="nothing to export"):
        archive.export_zip(tmp_path / "d.zip", base_url=BASE_URL)
    with pytest.raises(ArchiveError, match="base URL"):
        archive.export_zip(tmp_path / "e.zip", base_url="iiif/", include_unapproved=True)


def test_csv_cells_that_spreadsheets_would_run_are_escaped(archive, tmp_path):
    entry = add(archive, 1, title='=HYPERLINK("http://evil.example","x")', source_id="+SUM(A1)", notes="@cmd",
                tags=("-2+3", "\tTab"), approved=True)
    archive.export_zip(tmp_path / "export.zip", base_url=BASE_URL)
    with zipfile.ZipFile(tmp_path / "export.zip") as bundle:
        (row,) = csv.DictReader(io.StringIO(bundle.read("metadata.csv").decode("utf-8")))
    assert row["dc.title"] == "'" + entry.catalogue.title
    assert row["dc.source"] == "'+SUM(A1)"
    assert row["dc.description"].startswith("'@cmd")
    assert row["dc.subject"] == "'-2+3; Tab"  # tags are trimmed, so the tab is gone
    for text in ("=1", "+1", "-1", "@A", "\t1", "\r1"):
        assert csv_cell(text) == "'" + text
    assert csv_cell("plain = text") == "plain = text" and csv_cell(None) == ""


@pytest.mark.parametrize("uri", [
    "http://rightsstatements.org/vocab/InC/1.0/", "https://rightsstatements.org/vocab/NoC-OKLR/1.0/",
    "http://rightsstatements.org/vocab/InC-OW-EU/1.0/", "https://creativecommons.org/licenses/by-nc-sa/4.0/",
    "http://creativecommons.org/licenses/by/3.0/de/", "https://creativecommons.org/publicdomain/zero/1.0/",
    "https://creativecommons.org/publicdomain/mark/1.0/", "  http://rightsstatements.org/vocab/UND/1.0/ ", ""])
def test_rights_statements_and_creative_commons_uris_are_accepted(uri):
    assert validate_rights(uri) == uri.strip()


@pytest.mark.parametrize("uri", [
    "http://rightsstatements.org/vocab/Free/1.0/", "http://rightsstatements.org/vocab/InC/2.0/",
    "http://rightsstatements.org/vocab/InC/1.0", "https://creativecommons.org/licenses/by/5.0/",
    "https://creativecommons.org/licenses/mine/4.0/", "https://example.org/licence", "Public domain", "CC BY 4.0",
    "javascript:alert(1)"])
def test_other_rights_are_refused(uri):
    with pytest.raises(ArchiveError, match="not a RightsStatements.org URI"):
        validate_rights(uri)


def test_catalogue_validation():
    assert Catalogue(title="  x  ", tags=(" a  b ", "A B", "c")).tags == ("a b", "c")
    with pytest.raises(ArchiveError, match="commas"):
        Catalogue(tags=("a,b",))
    with pytest.raises(ArchiveError, match="list of strings"):
        Catalogue(tags="a, b")
    with pytest.raises(ArchiveError, match="limit"):
        Catalogue(title="x" * 501)
    with pytest.raises(ArchiveError, match="true or false"):
        Catalogue(approved="yes")


def test_orphans_are_swept_when_the_archive_opens(archive):
    kept = add(archive, 1, **FULL)
    strays = [archive.root / "results" / "0123456789abcdef.png", archive.root / "thumbnails" / "junk.jpg",
              archive.root / "originals" / "ff" / ("f" * 64 + ".png"), archive.root / "tmp" / "old.tmp"]
    for path in strays:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"left by a crash")
    hour_ago = time.time() - 2 * 3600
    os.utime(archive.root / "tmp" / "old.tmp", (hour_ago, hour_ago))
    fresh = archive.root / "tmp" / "being-written.tmp"
    fresh.write_bytes(b"another writer's file")
    preset_thumbnail = archive.preset_thumbnail_dir / "model" / "waves.jpg"
    preset_thumbnail.parent.mkdir(parents=True)
    preset_thumbnail.write_bytes(b"jpeg")

    reopened = Archive(archive.root)
    assert not any(path.exists() for path in strays)
    assert not (archive.root / "originals" / "ff").exists()
    assert fresh.exists() and preset_thumbnail.exists()
    for name in (kept.result_file, kept.thumbnail_file, kept.original_file):
        assert reopened.path(name).exists()
    assert reopened.get(kept.id) == kept


def test_served_dirs_exclude_the_database_and_temporary_files(archive):
    served = archive.served_dirs
    assert all(archive.root in path.parents for path in served)
    assert not any(path in (archive.database, archive.root / "tmp") or path in archive.database.parents
                   for path in served)


# -- batch -------------------------------------------------------------------------------------
def make_zip(path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return path


def test_batch_reading_refuses_unsafe_zip_members(tmp_path):
    good = image_bytes(1)
    bundle = make_zip(tmp_path / "box.zip", {
        "scans/a.png": good, "../escape.png": good, "/etc/passwd.png": good, "C:/win.png": good,
        "inner.zip": b"PK", "bomb.txt": b"0" * (4 * 1024 * 1024)})
    loose = tmp_path / "loose.png"
    loose.write_bytes(image_bytes(2))
    items, refused = collect_batch([("box.zip", bundle), ("loose.png", loose)])
    assert [item.name for item in items] == ["box.zip/scans/a.png", "loose.png"]
    assert items[0].read() == good and items[1].read() == loose.read_bytes()
    reasons = {refusal.name: refusal.reason for refusal in refused}
    assert "zip slip" in reasons["box.zip/../escape.png"]
    assert "zip slip" in reasons["box.zip//etc/passwd.png"] and "zip slip" in reasons["box.zip/C:/win.png"]
    assert "nested" in reasons["box.zip/inner.zip"]
    assert f"over {MAX_COMPRESSION_RATIO}:1" in reasons["box.zip/bomb.txt"]


def test_batch_reading_limits_count_and_total_size(tmp_path):
    many = make_zip(tmp_path / "many.zip", {f"{index}.png": b"x" for index in range(5)})
    items, refused = collect_batch([("many.zip", many)], max_files=4)
    assert items == [] and "holds 5 files; a batch takes at most 4" in refused[0].reason
    big = make_zip(tmp_path / "big.zip", {"a.png": b"a" * 1000, "b.png": b"b" * 1000}, zipfile.ZIP_STORED)
    items, refused = collect_batch([("big.zip", big)], max_bytes=1500)
    assert items == [] and "would expand to 2,000 bytes" in refused[0].reason
    image = tmp_path / "scan.png"
    image.write_bytes(image_bytes(1))
    items, refused = collect_batch([(f"{index}.png", image) for index in range(3)], max_files=2)
    assert items == [BatchItem("0.png", image), BatchItem("1.png", image)]
    assert [refusal.name for refusal in refused] == ["2.png"] and "over the limit of 2 files" in refused[0].reason


def test_stylize_batch_archives_images_and_reports_the_rest(archive, tmp_path):
    bundle = make_zip(tmp_path / "box.zip", {"a.png": image_bytes(1), "notes.txt": b"not an image",
                                             "b.jpg": image_bytes(2, format="JPEG")})
    items, refused = collect_batch([("box.zip", bundle)])
    stylizer = SimpleNamespace(presets={"waves": None}, model_info=MODEL, style_image_features="VGG19 int8")
    calls = []

    def run(content, style, settings, progress):
        calls.append((style, settings.strength, settings.seed))
        progress(1.0, "done")
        yield content.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)

    updates = []
    job = Job(StyleChoice.preset("waves"), StylizeSettings(strength=0.4, seed=3))
    report = stylize_batch(stylizer, archive, items, job,
                           Catalogue(rights=FULL["rights"], tags=("batch",), approved=True), run=run,
                           progress=lambda fraction, message: updates.append(fraction))
    assert [entry.catalogue.title for entry in report.entries] == ["a", "b"]
    assert all(entry.catalogue.rights == FULL["rights"] and entry.catalogue.tags == ("batch",)
               for entry in report.entries)
    assert [refusal.name for refusal in report.refused] == ["box.zip/notes.txt"]
    assert "not" in report.refused[0].reason and refused == []
    assert calls == [("waves", 0.4, 3)] * 2 and updates and max(updates) <= 1.0
    assert {entry.record.source_name for entry in report.entries} == {"a.png", "b.jpg"}


def test_style_choice_describes_blends_for_provenance():
    stylizer = SimpleNamespace(presets={"waves": None}, style_image_features="VGG19 float32")
    settings = StylizeSettings()
    style = StyleChoice.preset("waves").resolve(stylizer, settings)
    assert (style.value, style.description, style.names) == ("waves", [("preset:waves", 1.0)], ["waves"])
    assert style.code_read_by is None  # a preset's code is stored, not read
    first = image_bytes(1)
    style = StyleChoice(((StyleImage(first, "a.png"), 2.0), ("waves", 1.0), (StyleImage(first, "c.png"), 0.0))
                        ).resolve(stylizer, settings)
    assert [weight for _, weight in style.value] == [2.0, 1.0] and style.value[1][0] == "waves"
    assert style.description == [(f"sha256:{sha256_bytes(first)}", 2.0), ("preset:waves", 1.0)]
    assert style.names == ["a.png", "waves"] and style.code_read_by == "VGG19 float32"
    assert [(ingredient.title, ingredient.weight) for ingredient in style.ingredients] == [
        ("a.png", 2.0), ("preset waves", 1.0)]
    with pytest.raises(ValueError, match="not a preset"):
        StyleChoice.preset("nope").resolve(stylizer, settings)
    with pytest.raises(ValueError, match="choose a preset or"):
        StyleChoice(())
    with pytest.raises(ValueError, match="weights"):
        StyleChoice(((StyleImage(first, "a.png"), 0.0),))
    with pytest.raises(ValueError, match="style image b.txt"):
        StyleChoice(((StyleImage(b"text", "b.txt"), 1.0),)).resolve(stylizer, settings)


# -- post-processing ---------------------------------------------------------------------------
def test_post_processing_crops_and_scales_contrast_in_the_images_mode():
    image = Image.fromarray(np.tile(np.linspace(0, 255, 100, dtype=np.uint8), (50, 1)), "L")
    cropped = PostProcess(crop=(0.1, 0.2, 0.3, 0.0)).apply(image)
    assert cropped.size == (60, 40) and cropped.mode == "L"
    assert np.array_equal(np.asarray(cropped), np.asarray(image)[10:50, 10:70])
    flat = np.asarray(PostProcess(contrast=0.0).apply(image), dtype=float)
    assert flat.std() < 1.0 and abs(flat.mean() - np.asarray(image).mean()) < 1.0
    stronger = np.asarray(PostProcess(contrast=1.5).apply(image), dtype=float)
    assert stronger.std() > np.asarray(image, dtype=float).std()
    assert PostProcess().apply(image) is not image
    with pytest.raises(ValueError, match="crop left"):
        PostProcess(crop=(0.5, 0, 0, 0))
    with pytest.raises(ValueError, match="contrast"):
        PostProcess(contrast=float("nan"))
    assert PostProcess(1.2, (0.1, 0, 0, 0)).settings() == {
        "contrast": 1.2, "crop": {"left": 0.1, "top": 0.0, "right": 0.0, "bottom": 0.0}}
