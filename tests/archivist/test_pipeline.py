"""The one pipeline: the same job kept in a folder (the command line's way) and in the archive (the app's
and batches' way) is made and recorded alike; best quality's drafts come first, and stopping keeps nothing."""
from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from archivist.archive import Archive
from archivist.credentials import local_identity
from archivist.pipeline import (
    Draft,
    Job,
    Result,
    StyleChoice,
    StyleImage,
    ToArchive,
    ToFolder,
    stylize,
    stylize_progressively,
)
from archivist.postprocess import PostProcess
from archivist.provenance import read_provenance, sha256_bytes
from stylegan.inference import ModelInfo, StylizeSettings

MODEL = ModelInfo("org/model", "0" * 40, "cd" * 32, "")
STYLIZER = SimpleNamespace(presets={"waves": None}, model_info=MODEL, style_image_features="VGG19 int8")  # `mirror` stands in for the network


def png(seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def mirror(content, style, settings, progress):
    """The network's stand-in: best quality yields three results on the way, as refinement does."""
    seen.append((style, settings))
    for _ in range(3 if settings.quality == "best" else 1):
        yield content.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)


seen: list = []


@pytest.fixture
def job() -> Job:
    style = StyleChoice((("waves", 2.0), (StyleImage(png(7, (24, 24)), "style.png"), 1.0)))
    return Job(style, StylizeSettings(strength=0.6, seed=5), PostProcess(contrast=1.2, crop=(0.1, 0, 0, 0)))


def test_a_job_kept_in_a_folder_and_in_the_archive_is_made_and_recorded_alike(tmp_path, job):
    original = png(1)
    (tmp_path / "out").mkdir()
    archived = stylize(STYLIZER, original, "scan.png", job, ToArchive(Archive(tmp_path / "archive")), run=mirror)
    written = stylize(STYLIZER, original, "scans/scan.png", job,
                      ToFolder(tmp_path / "out", "png", local_identity(tmp_path / "identity")), run=mirror)
    assert written.kept == tmp_path / "out" / "scan.stylized.png"
    entry = archived.kept
    in_folder, in_archive = read_provenance(written.kept).to_dict(), entry.record.to_dict()
    assert in_folder.pop("created") and in_archive.pop("created")
    assert in_folder == in_archive
    assert in_folder["source_sha256"] == sha256_bytes(original) and in_folder["source_name"] == "scan.png"
    assert in_folder["style_strength"] == 0.6 and in_folder["seed"] == 5
    assert in_folder["settings"]["styles"] == ["waves", "style.png"] and in_folder["settings"]["contrast"] == 1.2
    assert in_folder["settings"]["style_code_read_by"] == "VGG19 int8"  # a style image was read for the code
    assert in_folder["style"].startswith("blend:")
    with Image.open(written.kept) as from_folder, Image.open(Archive(tmp_path / "archive").path(entry.result_file)) as kept:
        assert from_folder.size == kept.size == (36, 30)  # cropped by a tenth on the left
        assert np.array_equal(np.asarray(from_folder), np.asarray(kept))
    assert seen[-1][1] is job.settings and [weight for _, weight in seen[-1][0]] == [2.0, 1.0]


def test_best_quality_shows_drafts_first_and_stopping_keeps_nothing(tmp_path, job):
    archive = Archive(tmp_path / "archive")
    image_only = StyleChoice(((StyleImage(png(7, (24, 24)), "style.png"), 1.0),))  # presets' Grams: the model's
    best = Job(image_only, StylizeSettings(strength=0.6, quality="best"), job.post)
    results = list(stylize_progressively(STYLIZER, png(2), "scan.png", best, ToArchive(archive), run=mirror))
    assert [type(result) for result in results] == [Draft, Draft, Draft, Result]
    assert [entry.id for entry in archive.search()] == [results[-1].kept.id]
    assert results[-1].kept.record.settings["steps"] > 0
    assert results[-1].kept.record.settings["style_code_read_by"] == "VGG19 int8"

    stopped = stylize_progressively(STYLIZER, png(3), "other.png", best, ToArchive(archive), run=mirror)
    assert isinstance(next(stopped), Draft)
    stopped.close()
    assert len(archive.search()) == 1
    fast = list(stylize_progressively(STYLIZER, png(4), "fast.png", job, ToArchive(archive), run=mirror))
    assert [type(result) for result in fast] == [Result]
    preset_only = Job(StyleChoice.preset("waves"), job.settings, job.post)
    kept = list(stylize_progressively(STYLIZER, png(5), "preset.png", preset_only, ToArchive(archive), run=mirror))
    assert "style_code_read_by" not in kept[-1].kept.record.settings  # presets carry stored codes


def test_a_folder_refuses_a_result_its_format_cannot_hold(tmp_path, job):
    rgba = io.BytesIO()
    Image.new("RGBA", (20, 20), (10, 20, 30, 128)).save(rgba, "PNG")

    def keep_mode(content, style, settings, progress):
        yield content

    with pytest.raises(ValueError, match="cannot be saved as jpg without losing alpha"):
        stylize(STYLIZER, rgba.getvalue(), "a.png", job, ToFolder(tmp_path, "jpg", local_identity(tmp_path / "id")),
                run=keep_mode)
    assert not list(tmp_path.glob("*.jpg"))
    with pytest.raises(ValueError, match="format must be one of"):
        ToFolder(tmp_path, "gif", local_identity(tmp_path / "id"))
