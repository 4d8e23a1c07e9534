"""archive-style GAN: the Gradio app and Hugging Face Space over `stylegan` and its archive.

    python app.py        # http://127.0.0.1:7860 with the bundled model and ./archive

Environment: GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; ARCHIVE_DIR (default ./archive, or
/data/archive on a Space with persistent storage); STYLE_MODEL_REPO with STYLE_MODEL_REVISION
(a Hub model, pinned; the bundled model if the Hub cannot be reached); ARCHIVE_AUTH
("user:password,user2:password2") to require a login; CONTENT_CREDENTIALS_CERTS with
CONTENT_CREDENTIALS_KEY (an institution's signing identity; else the archive's self-issued one),
CONTENT_CREDENTIALS_TSA_URL and CONTENT_CREDENTIALS_TRUST_ANCHORS (see archivist/credentials.py).

This file is layout and wiring only: the work is in `archivist.pipeline` and `archivist.archive`.
(No `from __future__ import annotations` here: Gradio reads the API endpoints' types at run time.)
"""
import contextlib
import functools
import inspect
import logging
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import gradio as gr
import spaces
from gradio.utils import get_upload_folder, is_in_or_equal
from huggingface_hub.errors import LocalEntryNotFoundError
from PIL import Image

from archivist.archive import Archive, ArchiveError, Catalogue, DiskFull, Entry, parse_tags
from archivist.batch import collect_batch
from archivist.credentials import (
    ENV_CERTS,
    ENV_KEY,
    CredentialsError,
    CredentialsReport,
    identity_from_environment,
    read_credentials,
    trust_anchors_from_environment,
)
from archivist.pipeline import Job, Result, StyleChoice, StyleImage, ToArchive, stylize_batch, stylize_progressively
from archivist.postprocess import PostProcess
from archivist.thumbnails import render_preset_thumbnails
from stylegan import __version__
from stylegan.files import write_file
from stylegan.inference import DEFAULT_TEXTURE_SIDE, Style, Stylizer, StylizeSettings
from stylegan.optimize import REFINE_PREVIEW_EVERY, REFINE_STEPS, refine_step_seconds

log = logging.getLogger("archive-style-gan")

MAX_STYLE_IMAGES = 3
PREVIEW_SIDE = 1600  # px, long side of the before/after comparison
PREVIEW_MAX_AGE = 3600  # s; Gradio has copied a preview into its cache long before
MAX_UPLOAD_SIZE = "300mb"
QUEUE_SIZE = 32
ARCHIVE_CONCURRENCY = 4  # catalogue reads and edits need not wait behind a long stylisation
GPU_SECONDS = 120  # ZeroGPU allowance for one stylisation
# Best quality on ZeroGPU: the allowance grows with the steps. Not measured on a GPU yet: a generous guess
# (VGG19 forward and backward at 640² px take milliseconds on a data-centre GPU).
GPU_SECONDS_PER_REFINE_STEP = 1.0
REFINE_OVERHEAD_STEPS = 3  # the network's pass, the style's and the content's features, in refinement steps
# Best quality shows (and can be stopped after) every step on a CPU, where a step takes seconds; on a GPU a
# step takes milliseconds and previews every few steps are plenty.
PREVIEW_EVERY = {"cpu": 1}
OUTPUT_SIZES = [("Full resolution", 0), ("4096 px long side", 4096), ("2048 px long side", 2048),
                ("1024 px long side", 1024), ("512 px long side", 512)]
TEXTURE_SIDES = [("Fine (painted at 1024² px)", 1024), (f"Standard ({DEFAULT_TEXTURE_SIDE}² px)", DEFAULT_TEXTURE_SIDE),
                 ("Coarse (384² px)", 384), ("At full resolution (texture in pixels; slow on large scans)", 0)]
APPROVED_FILTERS = [("Any", "any"), ("Approved for sharing", "yes"), ("Not approved", "no")]
RIGHTS_EXAMPLES = ["http://rightsstatements.org/vocab/NoC-US/1.0/", "http://rightsstatements.org/vocab/InC/1.0/",
                   "http://rightsstatements.org/vocab/UND/1.0/", "http://rightsstatements.org/vocab/CNE/1.0/",
                   "https://creativecommons.org/publicdomain/mark/1.0/",
                   "https://creativecommons.org/publicdomain/zero/1.0/", "https://creativecommons.org/licenses/by/4.0/"]
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],  # no web fonts: nothing is fetched
                       font_mono=["ui-monospace", "monospace"])
CSS = "#model-info p { font-size: 0.85em; opacity: 0.8; }"


# -- configuration -------------------------------------------------------------------------------
def archive_dir() -> Path:
    if os.environ.get("ARCHIVE_DIR"):
        return Path(os.environ["ARCHIVE_DIR"])
    if os.environ.get("SPACE_ID") and Path("/data").is_dir():  # a Space with persistent storage
        return Path("/data/archive")
    return Path("archive")


def load_stylizer() -> tuple[Stylizer, str]:
    """The model to serve, and a notice for the UI when the configured one could not be loaded."""
    repo = os.environ.get("STYLE_MODEL_REPO", "").strip()
    if not repo:
        return Stylizer.from_pretrained(), ""
    revision = os.environ.get("STYLE_MODEL_REVISION", "").strip()
    if not revision:
        raise SystemExit("STYLE_MODEL_REPO is set without STYLE_MODEL_REVISION: pin the model to a commit hash")
    try:
        return Stylizer.from_pretrained(repo, revision=revision), ""
    except LocalEntryNotFoundError as error:  # the Hub is unreachable and this revision is not cached
        log.warning("cannot load %s@%s from the Hub: %s", repo, revision, error)
        return Stylizer.from_pretrained(), (f"The Hugging Face Hub could not be reached to load `{repo}` at "
                                            f"`{revision}`, so the bundled model is serving instead.")


def parse_auth(value: str) -> list[tuple[str, str]] | None:
    """ARCHIVE_AUTH="user:password,user2:password2" -> [(user, password), ...]; '' -> None (no login)."""
    if not value.strip():
        return None
    pairs = [item.strip().split(":", 1) for item in value.split(",") if item.strip()]
    if any(len(pair) != 2 or not pair[0] or not pair[1] for pair in pairs):
        raise SystemExit("ARCHIVE_AUTH must look like 'user:password,user2:password2'")
    return [(user, password) for user, password in pairs]


def launch_options(archive: Archive) -> dict:
    """Everything `demo.launch` needs besides host and port."""
    return {"max_file_size": MAX_UPLOAD_SIZE, "allowed_paths": [str(path) for path in archive.served_dirs],
            "auth": parse_auth(os.environ.get("ARCHIVE_AUTH", "")), "theme": THEME, "css": CSS}


# -- handlers --------------------------------------------------------------------------------------
def _as_gradio_error(error: ValueError) -> gr.Error:
    if isinstance(error, DiskFull):  # the archive logs it once; a traceback per request would say nothing new
        return gr.Error(str(error), title="The archive's disk is full", print_exception=False)
    return gr.Error(str(error), title="Refused")


def refusals_as_errors(function):
    """Input the library refuses (a ValueError naming the problem) reaches the user as gr.Error."""
    if inspect.isgeneratorfunction(function):
        @functools.wraps(function)
        def generator(*args, **kwargs):
            try:
                yield from function(*args, **kwargs)
            except ValueError as error:
                raise _as_gradio_error(error) from error
        return generator

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except ValueError as error:
            raise _as_gradio_error(error) from error
    return wrapper


def _file_path(value) -> str | None:
    """An upload as the handler receives it: a path (API) or Gradio's file dict (UI, unprocessed).

    Only a file in Gradio's upload folder is accepted: with preprocessing off, Gradio checks a file
    dict only when it carries `meta`, so without this a client could name any file on the server."""
    if value is None or value == "":
        return None
    path = Path(value["path"] if isinstance(value, dict) else str(value))
    if not is_in_or_equal(path, get_upload_folder()):
        raise ValueError(f"{path.name}: not a file uploaded to this app")
    return str(path)


def _file_name(value) -> str:
    if isinstance(value, dict) and value.get("orig_name"):
        return PurePath(value["orig_name"]).name
    return PurePath(_file_path(value)).name


# The inputs /stylize and /batch share, in the order they are wired, as the API names them, with their defaults.
SETTINGS_INPUTS = (("style_source", "preset"), ("preset", None),
                   *((name, default) for number in range(1, MAX_STYLE_IMAGES + 1)
                     for name, default in ((f"style_image_{number}", None), (f"style_weight_{number}", 1.0))),
                   ("strength", 0.8), ("preserve_color", False), ("max_long_side", 0), ("contrast", 1.0),
                   ("crop_left", 0), ("crop_top", 0), ("crop_right", 0), ("crop_bottom", 0), ("seed", 0))
CATALOGUE_INPUTS = (("title", ""), ("source_id", ""), ("rights", ""), ("notes", ""), ("tags", ""), ("approved", False))
# Texture scale and quality came last, after the catalogue fields, so the earlier inputs kept their positions.
LATE_SETTINGS_INPUTS = (("texture_side", DEFAULT_TEXTURE_SIDE), ("quality", "fast"))


def job_from_inputs(values: Mapping[str, Any]) -> Job:
    """The one place where the settings components become a job."""
    if values["style_source"] not in ("preset", "images"):
        raise ValueError(f"style_source must be 'preset' or 'images', got {values['style_source']!r}")
    if values["style_source"] == "preset":
        if not values["preset"]:
            raise ValueError("choose a preset, or switch the style to your own style images")
        style = StyleChoice.preset(values["preset"])
    else:
        images = [(StyleImage(Path(path).read_bytes(), _file_name(image)), float(values[f"style_weight_{number}"]))
                  for number in range(1, MAX_STYLE_IMAGES + 1)
                  for image in [values[f"style_image_{number}"]] if (path := _file_path(image))]
        if not images:
            raise ValueError("upload at least one style image, or switch the style to a preset")
        style = StyleChoice(tuple(images))
    settings = StylizeSettings(float(values["strength"]), bool(values["preserve_color"]),
                               int(values["max_long_side"]) or None, int(values["texture_side"] or 0) or None,
                               quality=values["quality"] or "fast", seed=int(values["seed"] or 0))
    crop = tuple(float(values[f"crop_{side}"]) / 100.0 for side in ("left", "top", "right", "bottom"))
    return Job(style, settings, PostProcess(contrast=float(values["contrast"]), crop=crop))


def catalogue_from_inputs(values: Mapping[str, Any]) -> Catalogue:
    return Catalogue(values.get("title", ""), values.get("source_id", ""), values["rights"], values["notes"],
                     parse_tags(values["tags"]), bool(values["approved"]))


def event_function(handler: Callable, first_input: str, catalogue_inputs: Sequence[tuple[str, Any]]) -> Callable:
    """`handler(first, job, catalogue, progress)` as a Gradio event function. Gradio passes the components
    positionally and names the API's parameters after the function's, so its signature lists them all:
    `first_input`, the settings, `catalogue_inputs`, texture side and quality, and the progress tracker."""
    inputs = ((first_input, inspect.Parameter.empty), *SETTINGS_INPUTS, *catalogue_inputs, *LATE_SETTINGS_INPUTS,
              ("progress", gr.Progress()))
    signature = inspect.Signature([inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
                                   for name, default in inputs])

    def arguments(args: tuple, kwargs: dict) -> tuple:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = bound.arguments
        return values[first_input], job_from_inputs(values), catalogue_from_inputs(values), values["progress"]

    if inspect.isgeneratorfunction(handler):
        def event(*args, **kwargs):
            yield from handler(*arguments(args, kwargs))
    else:
        def event(*args, **kwargs):
            return handler(*arguments(args, kwargs))
    event.__signature__ = signature
    event.__name__ = event.__qualname__ = handler.__name__
    return refusals_as_errors(event)


def gpu_seconds(content, style, settings: StylizeSettings, progress) -> int:
    """ZeroGPU allowance for one stylisation (called with the device function's arguments): best quality's
    grows with its steps."""
    return round(GPU_SECONDS + (GPU_SECONDS_PER_REFINE_STEP * settings.step_count if settings.quality == "best" else 0))


def quality_choices(stylizer: Stylizer) -> list[tuple[str, str]]:
    """Fast / Best, each with the time it takes an image here. On a CPU best quality's time is measured
    (one refinement step at 256² px, scaled to the standard texture side); GPUs take seconds."""
    if stylizer.device.type == "cpu":
        per_step = refine_step_seconds(stylizer.vgg) * (DEFAULT_TEXTURE_SIDE / 256) ** 2
        best = f"about {per_step * (REFINE_STEPS + REFINE_OVERHEAD_STEPS):.0f} s an image on this machine's CPU"
    else:
        best = f"seconds on this machine's {stylizer.device.type.upper()}"
    return [("Fast (the network: about a second)", "fast"), (f"Best (refined by optimisation: {best})", "best")]


@dataclass(frozen=True)
class GradioProgress:
    """`gr.Progress` as a (fraction, message) callback. Picklable (no closure): on ZeroGPU the
    stylisation runs in a worker process, whose progress calls Gradio relays back."""
    progress: gr.Progress

    def __call__(self, fraction: float, message: str) -> None:
        self.progress(fraction, desc=message)


def _approved_filter(value: str) -> bool | None:
    choices = {"any": None, "yes": True, "no": False}
    if value not in choices:
        raise ValueError(f"approved must be one of {sorted(choices)}, got {value!r}")
    return choices[value]


def _markdown_text(text: str) -> str:
    """User text shown literally inside Markdown (no links, images or formatting of its own)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~])", r"\\\1", text)


def _credentials_markdown(report: CredentialsReport) -> str:
    """A credentials report as Markdown; every text from the file is shown literally."""
    heading = {"none": "No Content Credentials", "unreadable": "Unreadable Content Credentials"}.get(
        report.state, f"Content Credentials: {report.state}")
    lines = [f"**{heading}**", "", _markdown_text(report.summary), ""]
    lines += [f"- {_markdown_text(line)}" for line in report.details]
    lines += [f"- problem: {_markdown_text(problem)}" for problem in report.problems]
    return "\n".join(lines)


def _caption(entry: Entry) -> str:
    mark = "✓ " if entry.catalogue.approved else ""
    return f"{mark}{entry.catalogue.title or entry.record.source_name} · {entry.created[:10]}"


class Handlers:
    """Event handlers: convert between components and the library. Nothing here is stateful."""

    def __init__(self, stylizer: Stylizer, archive: Archive, trust_anchors: bytes | None = None) -> None:
        self.stylizer = stylizer
        self.archive = archive
        self.trust_anchors = trust_anchors  # roots that verification trusts (PEM); None: none
        self.preview_dir = Path(tempfile.mkdtemp(prefix="archive-style-previews-"))

        @spaces.GPU(duration=gpu_seconds)
        def run_on_device(content: Image.Image, style: Style, settings: StylizeSettings, progress):
            # Best quality shows its steps on the way, every step on a CPU.
            yield from stylizer.run(content, style, settings, progress,
                                    every=PREVIEW_EVERY.get(stylizer.device.type, REFINE_PREVIEW_EVERY))

        @spaces.GPU(duration=60)
        def render_presets():
            return render_preset_thumbnails(stylizer, archive.preset_thumbnail_dir)

        self.run_on_device = run_on_device
        self.render_presets = render_presets

    # Stylize tab
    def stylize(self, content, job: Job, catalogue: Catalogue, progress: gr.Progress):
        """Yields (previews, result file, entry, status): best quality's results on the way first, each
        replacing the last, then the archived one. Cancelling the event stops the work; nothing is archived."""
        path = _file_path(content)
        if path is None:
            raise ValueError("upload a scan or photo to stylise first")
        progress(0.0, desc="stylising")
        results = stylize_progressively(self.stylizer, Path(path).read_bytes(), _file_name(content), job,
                                        ToArchive(self.archive, catalogue), run=self.run_on_device,
                                        progress=GradioProgress(progress))
        with contextlib.closing(results):
            for number, result in enumerate(results):
                if not isinstance(result, Result):
                    shown = "the network's result" if number == 0 else f"refined result {number}"
                    status = (f"Best quality: showing {shown}, refining for up to {job.settings.step_count} steps. "
                              "The result is archived when refining ends; Stop keeps nothing.")
                    yield (self.preview_files(result.comparison(PREVIEW_SIDE), f"draft-{uuid.uuid4().hex}"), None,
                           None, status)
        entry = result.kept
        status = (f"Archived as entry `{entry.id}` ({entry.width}×{entry.height}) · "
                  f"[permalink](?entry={entry.id}) · the download carries the provenance and signed Content "
                  "Credentials")
        yield (self.preview_files(result.comparison(PREVIEW_SIDE), entry.id), str(self.archive.path(entry.result_file)),
               entry.to_dict(), status)

    def preview_files(self, images: tuple[Image.Image, Image.Image], name: str) -> tuple[str, str]:
        """The before/after previews as files, each written under a temporary name and renamed.

        Returned as PIL images, Gradio would cache each by rewriting one content-addressed file
        in place: two requests showing the same picture (the same scan stylised twice) truncated
        it under the other's download (seen once in 160 requests of benchmarks/load_app.py). A
        returned path is copied into its cache atomically. Old previews are swept here."""
        cutoff = time.time() - PREVIEW_MAX_AGE
        for old in self.preview_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):  # another request's sweep got there first
                if old.stat().st_mtime < cutoff:
                    old.unlink()
        paths = []
        for label, image in zip(("before", "after"), images):
            path = self.preview_dir / f"{name}-{label}.webp"
            write_file(path, functools.partial(image.save, format="WEBP", quality=90))
            paths.append(str(path))
        return paths[0], paths[1]

    def preset_selected(self, event: gr.SelectData):
        name = list(self.stylizer.presets)[event.index]
        return name, "preset"

    def preset_attribution(self, name):
        preset = self.stylizer.presets.get(name)
        if preset is None:
            return ""
        details = " · ".join(part for part in (preset.license, preset.source and f"source: {preset.source}") if part)
        return f"**{preset.label}**  \n{details}"

    # Batch tab
    def batch(self, files, job: Job, catalogue: Catalogue, progress: gr.Progress):
        uploads = [(_file_name(file), _file_path(file)) for file in (files or [])]
        if not uploads:
            raise ValueError("upload images or a ZIP of images first")
        items, refused = collect_batch(uploads)
        report = stylize_batch(self.stylizer, self.archive, items, job, catalogue, run=self.run_on_device,
                               progress=GradioProgress(progress))
        refused += report.refused
        lines = [f"**{len(report.entries)} archived, {len(refused)} refused.**"]
        lines += [f"- {_markdown_text(refusal.name)}: {_markdown_text(refusal.reason)}" for refusal in refused]
        summary = {"archived": [entry.to_dict() for entry in report.entries],
                   "refused": [{"name": refusal.name, "reason": refusal.reason} for refusal in refused]}
        gallery = [(str(self.archive.path(entry.thumbnail_file)), _caption(entry)) for entry in report.entries]
        return "\n".join(lines), summary, gallery

    # Archive tab
    @refusals_as_errors
    def search_gallery(self, text, tag, style, date_from, date_to, approved):
        entries = self.archive.search(text or "", tag=tag or "", style=style or "", date_from=date_from or None,
                                      date_to=date_to or None, approved=_approved_filter(approved))
        gallery = [(str(self.archive.path(entry.thumbnail_file)), _caption(entry)) for entry in entries]
        choices = [(f"{entry.catalogue.title or entry.record.source_name} ({entry.id})", entry.id) for entry in entries]
        count = f"{len(entries)} {'entry' if len(entries) == 1 else 'entries'}"
        return gallery, [entry.id for entry in entries], count, gr.Dropdown(choices=choices)

    @refusals_as_errors
    def entry_selected(self, ids, event: gr.SelectData):
        return self.detail(ids[event.index])

    def detail(self, entry_id):
        """The entry view's components for one entry (hidden when `entry_id` is None)."""
        if entry_id is None:
            return (gr.Group(visible=False), "", "", None, None, None, "", "", "", "", "", False, None, None,
                    gr.Row(visible=False))
        entry = self.archive.get(entry_id)
        catalogue = entry.catalogue
        header = (f"### {_markdown_text(catalogue.title or entry.record.source_name)}\n"
                  f"Entry `{entry.id}` · {entry.created} · {entry.width}×{entry.height} · "
                  f"[permalink](?entry={entry.id})")
        report = read_credentials(self.archive.path(entry.result_file).read_bytes(), trust_anchors=self.trust_anchors)
        return (gr.Group(visible=True), header, _credentials_markdown(report),
                str(self.archive.path(entry.thumbnail_file)),
                str(self.archive.path(entry.result_file)), str(self.archive.path(entry.original_file)),
                catalogue.title, catalogue.source_id, catalogue.rights, catalogue.notes, ", ".join(catalogue.tags),
                catalogue.approved, entry.to_dict(), entry.id, gr.Row(visible=False))

    @refusals_as_errors
    def save_entry(self, entry_id, title, source_id, rights, notes, tags, approved):
        if entry_id is None:
            raise ValueError("select an entry first")
        self.archive.update(entry_id, title=title, source_id=source_id, rights=rights, notes=notes,
                            tags=parse_tags(tags), approved=bool(approved))
        gr.Info("Saved.")
        return self.detail(entry_id)

    @refusals_as_errors
    def delete_selected(self, entry_id):
        if entry_id is None:
            raise ValueError("select an entry first")
        removed = self.archive.delete(entry_id)
        gr.Info(f"Deleted entry {entry_id} ({len(removed)} files removed).")
        return self.detail(None)

    @refusals_as_errors
    def export(self, entry_ids, include_originals, include_unapproved, base_url, request: gr.Request):
        """ZIP of the given entries (all approved ones when none are given), with Dublin Core CSV and IIIF manifest."""
        destination = self.archive.new_export_path()
        if not base_url:
            headers = request.headers
            host = headers.get("x-forwarded-host") or headers.get("host", "localhost")
            base_url = f"{headers.get('x-forwarded-proto', 'http')}://{host}/iiif/{destination.stem}/"
        self.archive.export_zip(destination, base_url=base_url, entry_ids=list(entry_ids or []),
                                include_originals=bool(include_originals),
                                include_unapproved=bool(include_unapproved))
        return str(destination)

    def page_load(self, request: gr.Request):
        """The archive gallery, and the entry of a permalink (?entry=<id>) in the Archive tab."""
        entry_id = request.query_params.get("entry")
        detail = self.detail(None)
        if entry_id:
            try:
                detail = self.detail(entry_id)
            except ArchiveError as error:
                gr.Warning(str(error))
        return (*self.search_gallery("", "", "", "", "", "any"), *detail,
                gr.Tabs(selected="archive" if entry_id else "stylize"))

    # Content Credentials tab
    @refusals_as_errors
    def credentials(self, file) -> tuple[str, dict]:
        """The Content Credentials of an uploaded image: validation state in words, and the manifest store."""
        path = _file_path(file)
        if path is None:
            raise ValueError("upload an image to see its Content Credentials")
        report = read_credentials(Path(path).read_bytes(), trust_anchors=self.trust_anchors)
        return f"File: {_markdown_text(_file_name(file))}\n\n{_credentials_markdown(report)}", report.to_dict()

    def preset_gallery(self):
        """Preset thumbnails, rendered by the model on first use and cached in the archive."""
        paths = self.render_presets()
        return [(str(paths[name]), preset.label) for name, preset in self.stylizer.presets.items()]

    # API-only endpoints (gr.api): typed, JSON in and out
    @refusals_as_errors
    def api_search(self, text: str = "", tag: str = "", style: str = "", date_from: str = "", date_to: str = "",
                   approved: str = "any", limit: int = 100) -> list[dict]:
        """Search the archive, newest first. approved: 'any', 'yes' or 'no'; dates: YYYY-MM-DD (inclusive)."""
        entries = self.archive.search(text, tag=tag, style=style, date_from=date_from or None,
                                      date_to=date_to or None, approved=_approved_filter(approved), limit=limit)
        return [entry.to_dict() for entry in entries]

    @refusals_as_errors
    def api_entry_get(self, entry_id: str) -> dict:
        """One archive entry: catalogue fields, files and the provenance record."""
        return self.archive.get(entry_id).to_dict()

    @refusals_as_errors
    def api_entry_update(self, entry_id: str, title: str | None = None, source_id: str | None = None,
                         rights: str | None = None, notes: str | None = None, tags: str | None = None,
                         approved: bool | None = None) -> dict:
        """Change catalogue fields; fields left out (None) keep their value. tags: comma-separated."""
        changes = {"title": title, "source_id": source_id, "rights": rights, "notes": notes,
                   "tags": None if tags is None else parse_tags(tags), "approved": approved}
        entry = self.archive.update(entry_id, **{name: value for name, value in changes.items() if value is not None})
        return entry.to_dict()

    @refusals_as_errors
    def api_entry_delete(self, entry_id: str, confirm: bool = False) -> dict:
        """Delete an entry and its files (confirm=True is required)."""
        if not confirm:
            raise ValueError("deleting is permanent: call again with confirm=True")
        return {"deleted": entry_id, "removed_files": self.archive.delete(entry_id)}

    def api_presets(self) -> list[dict]:
        """The model's presets with attribution."""
        return [{"name": name, "label": preset.label, "title": preset.title, "artist": preset.artist,
                 "year": preset.year, "source": preset.source, "license": preset.license}
                for name, preset in self.stylizer.presets.items()]


# -- layout --------------------------------------------------------------------------------------
def _model_line(stylizer: Stylizer, archive: Archive) -> str:
    info = stylizer.model_info
    return (f"Model `{info.repo}` at revision `{info.revision}` (weights SHA-256 `{info.weights_sha256[:16]}…`) "
            f"on {stylizer.device.type} · archive-style GAN {__version__} · results signed with Content Credentials "
            f"by {_markdown_text(archive.identity.describe())}")


def _credentials_intro(archive: Archive) -> str:
    intro = ("Upload a result, or any image signed with C2PA Content Credentials, to see what its credentials say "
             f"and whether they hold. This archive signs with {_markdown_text(archive.identity.describe())}.")
    if archive.identity.self_issued:
        intro += (" Outside verifiers can check that its results are unchanged since they were signed, not who signed "
                  f"them; an institution signs with its own certificate by setting `{ENV_CERTS}` and `{ENV_KEY}` "
                  "(see the README).")
    return intro


def _catalogue_fields(with_title: bool) -> list[gr.components.Component]:
    fields = []
    if with_title:
        fields += [gr.Textbox("", label="Title", max_length=500),
                   gr.Textbox("", label="Accession number or source identifier", max_length=500)]
    fields += [gr.Dropdown(RIGHTS_EXAMPLES, value="", allow_custom_value=True, label="Rights statement of the source",
                           info="A RightsStatements.org or Creative Commons URI, as the source states it"),
               gr.Textbox("", label="Notes", lines=2),
               gr.Textbox("", label="Tags", info="comma-separated"),
               gr.Checkbox(label="Approved for sharing")]
    return fields


def build_demo(stylizer: Stylizer, archive: Archive, *, model_notice: str = "",
               trust_anchors: bytes | None = None) -> gr.Blocks:
    handlers = Handlers(stylizer, archive, trust_anchors)
    archive_events = {"concurrency_limit": ARCHIVE_CONCURRENCY, "concurrency_id": "archive"}
    private = {"api_visibility": "private", **archive_events}
    # No analytics: Gradio then sends nothing and turns off huggingface_hub's telemetry too.
    with gr.Blocks(title="archive-style GAN", delete_cache=(3600, 3600), analytics_enabled=False) as demo:
        gr.Markdown("# archive-style GAN\nStyle transfer for digitised archive images. Every result is archived "
                    "with its untouched original and a record of how it was made.")
        gr.Markdown(_model_line(stylizer, archive), elem_id="model-info")
        if model_notice:
            gr.Markdown(f"⚠️ {model_notice}", elem_id="model-notice")
        with gr.Tabs(selected="stylize") as tabs:
            with gr.Tab("Stylize", id="stylize"), gr.Row():
                with gr.Column():
                    content = gr.Image(label="Scan or photo (drop, paste or click)", type="filepath",
                                       image_mode=None, sources=["upload", "clipboard"], elem_id="content-image")
                    style_source = gr.Radio([("Preset", "preset"), ("My style images", "images")], value="preset",
                                            label="Style from", elem_id="style-source")
                    preset_gallery = gr.Gallery(label="Presets (rendered by the model)", columns=6, height=280,
                                                allow_preview=False, object_fit="cover", elem_id="preset-gallery")
                    preset = gr.Dropdown(list(stylizer.presets), value=next(iter(stylizer.presets), None),
                                         label="Preset", elem_id="preset")
                    attribution = gr.Markdown(handlers.preset_attribution(preset.value))
                    with gr.Accordion("My style images (blended by weight)", open=False):
                        style_inputs = []
                        for number in range(1, MAX_STYLE_IMAGES + 1):
                            with gr.Row():
                                image = gr.Image(label=f"Style image {number}", type="filepath", image_mode=None,
                                                 sources=["upload", "clipboard"], height=160,
                                                 elem_id=f"style-image-{number}")
                                weight = gr.Slider(0, 1, value=1, step=0.05, label="Weight")
                            style_inputs += [image, weight]
                            image.upload(lambda: "images", None, style_source, **private)
                    strength = gr.Slider(0, 1, value=0.8, step=0.05, label="Style strength", elem_id="strength")
                    preserve_color = gr.Checkbox(label="Keep the original's colours")
                    max_long_side = gr.Dropdown(OUTPUT_SIZES, value=0, label="Output size")
                    texture_side = gr.Dropdown(
                        TEXTURE_SIDES, value=DEFAULT_TEXTURE_SIDE, label="Texture scale", elem_id="texture-side",
                        info="how large the brushwork is relative to the picture; the original's fine detail is "
                             "kept at full resolution")
                    quality = gr.Radio(quality_choices(stylizer), value="fast", label="Quality", elem_id="quality",
                                       info="Best shows the network's result at once, then refines it towards the "
                                            "style image's textures, showing each improvement; Stop ends it")
                    with gr.Accordion("Post-processing", open=False):
                        contrast = gr.Slider(0, 2, value=1, step=0.05, label="Contrast (1 = unchanged)")
                        crops = [gr.Slider(0, 45, value=0, step=1, label=f"Crop {side} (%)")
                                 for side in ("left", "top", "right", "bottom")]
                        seed = gr.Number(0, precision=0, minimum=0, label="Seed (recorded)")
                    with gr.Accordion("Catalogue record", open=True):
                        catalogue = _catalogue_fields(with_title=True)
                    with gr.Row():
                        run = gr.Button("Stylize and archive", variant="primary", elem_id="stylize-button", scale=3)
                        stop = gr.Button("Stop", variant="stop", elem_id="stop-button", scale=1)
                with gr.Column():
                    comparison = gr.ImageSlider(label="Before / after", type="pil", elem_id="comparison")
                    result_file = gr.File(label="Full-resolution result (PNG with embedded provenance and signed "
                                                "Content Credentials)", elem_id="result-file")
                    status = gr.Markdown(label="Status", elem_id="stylize-status")
                    result_entry = gr.JSON(label="Archive entry", open=False)
            with gr.Tab("Batch", id="batch"):
                gr.Markdown("Several images, or ZIPs of images, with the style and settings of the Stylize tab. "
                            "Each result is archived, titled by its file name.")
                batch_files = gr.File(file_count="multiple", file_types=["image", ".zip"], label="Images or ZIPs",
                                      elem_id="batch-files")
                batch_catalogue = _catalogue_fields(with_title=False)
                batch_run = gr.Button("Stylize batch", variant="primary")
                batch_summary = gr.Markdown(label="Summary")
                batch_report = gr.JSON(label="Report", open=False)
                batch_gallery = gr.Gallery(label="Archived", columns=6, allow_preview=False, fit_columns=False)
            with gr.Tab("Archive", id="archive"):
                with gr.Row():
                    search_text = gr.Textbox("", label="Search", placeholder="title, identifier, notes, tags…",
                                             elem_id="search-text", scale=3)
                    search_tag = gr.Textbox("", label="Tag")
                    search_style = gr.Textbox("", label="Style", placeholder="e.g. hokusai")
                    date_from = gr.Textbox("", label="From", placeholder="YYYY-MM-DD")
                    date_to = gr.Textbox("", label="To", placeholder="YYYY-MM-DD")
                    approved_filter = gr.Radio(APPROVED_FILTERS, value="any", label="Approval")
                search_button = gr.Button("Search")
                count = gr.Markdown()
                gallery = gr.Gallery(label="Entries", columns=6, height=420, allow_preview=False, fit_columns=False,
                                     elem_id="archive-gallery")
                ids = gr.State([])
                selected = gr.State(None)
                with gr.Group(visible=False, elem_id="entry-detail") as detail_group:
                    detail_header = gr.Markdown(elem_id="entry-header")
                    detail_credentials = gr.Markdown(elem_id="entry-credentials")
                    with gr.Row():
                        detail_image = gr.Image(label="Result", interactive=False, height=360)
                        with gr.Column():
                            result_download = gr.DownloadButton("Download result (PNG, full resolution)")
                            original_download = gr.DownloadButton("Download original (as uploaded)")
                            edit_fields = _catalogue_fields(with_title=True)
                            with gr.Row():
                                save = gr.Button("Save changes", variant="primary")
                                delete = gr.Button("Delete…", variant="stop")
                            with gr.Row(visible=False) as confirm_row:
                                gr.Markdown("Delete this entry, its result and thumbnail (and its original unless "
                                            "another entry uses it)? This cannot be undone.")
                                confirm = gr.Button("Delete permanently", variant="stop")
                                cancel = gr.Button("Keep")
                    provenance = gr.JSON(label="Entry and provenance", open=False, elem_id="entry-json")
                with gr.Accordion("Export", open=False):
                    export_ids = gr.Dropdown([], multiselect=True, allow_custom_value=True,
                                             label="Entries (none: every approved entry)")
                    include_originals = gr.Checkbox(label="Include originals")
                    include_unapproved = gr.Checkbox(label="Include entries not approved for sharing")
                    base_url = gr.Textbox("", label="IIIF base URL",
                                          info="where the unpacked ZIP will be published (default: this app)")
                    export_button = gr.Button("Export ZIP")
                    export_file = gr.File(label="Export")
            with gr.Tab("Content Credentials", id="credentials"):
                gr.Markdown(_credentials_intro(archive))
                credentials_file = gr.File(label="Image to check", file_types=["image"], elem_id="credentials-file")
                credentials_summary = gr.Markdown(elem_id="credentials-summary")
                credentials_report = gr.JSON(label="Report and manifest store", open=False)

        settings_inputs = [style_source, preset, *style_inputs, strength, preserve_color, max_long_side, contrast,
                           *crops, seed]
        detail_outputs = [detail_group, detail_header, detail_credentials, detail_image, result_download,
                          original_download, *edit_fields, provenance, selected, confirm_row]
        gallery_outputs = [gallery, ids, count, export_ids]
        search_inputs = [search_text, search_tag, search_style, date_from, date_to, approved_filter]

        preset_gallery.select(handlers.preset_selected, None, [preset, style_source], **private)
        preset.change(handlers.preset_attribution, preset, attribution, **private)
        # Uploads reach the handlers unprocessed so that a bad file gets the library's own message.
        # Texture scale and quality come last, after the catalogue fields, so the earlier inputs keep their positions.
        stylizing = run.click(event_function(handlers.stylize, "content", CATALOGUE_INPUTS),
                              [content, *settings_inputs, *catalogue, texture_side, quality],
                              [comparison, result_file, result_entry, status], api_name="stylize", preprocess=False)
        stylizing.success(handlers.search_gallery, search_inputs, gallery_outputs, **private)
        stop.click(None, None, None, cancels=[stylizing])
        batch_run.click(event_function(handlers.batch, "files", CATALOGUE_INPUTS[2:]),
                        [batch_files, *settings_inputs, *batch_catalogue, texture_side, quality],
                        [batch_summary, batch_report, batch_gallery], api_name="batch", preprocess=False
                        ).success(handlers.search_gallery, search_inputs, gallery_outputs, **private)
        for trigger in (search_button.click, search_text.submit, search_tag.submit, search_style.submit,
                        date_from.submit, date_to.submit, approved_filter.change):
            trigger(handlers.search_gallery, search_inputs, gallery_outputs, **private)
        gallery.select(handlers.entry_selected, ids, detail_outputs, **private)
        save.click(handlers.save_entry, [selected, *edit_fields], detail_outputs, **private
                   ).success(handlers.search_gallery, search_inputs, gallery_outputs, **private)
        delete.click(lambda: gr.Row(visible=True), None, confirm_row, **private)
        cancel.click(lambda: gr.Row(visible=False), None, confirm_row, **private)
        confirm.click(handlers.delete_selected, selected, detail_outputs, **private
                      ).success(handlers.search_gallery, search_inputs, gallery_outputs, **private)
        credentials_file.upload(handlers.credentials, credentials_file, [credentials_summary, credentials_report],
                                api_name="credentials", preprocess=False, **archive_events)
        export_button.click(handlers.export, [export_ids, include_originals, include_unapproved, base_url],
                            export_file, api_name="export", **archive_events)
        demo.load(handlers.page_load, None, [*gallery_outputs, *detail_outputs, tabs],
                  api_name="page_load", api_visibility="undocumented", **archive_events
                  ).then(handlers.preset_gallery, None, preset_gallery, **private)
        gr.api(handlers.api_search, api_name="archive_search", **archive_events)
        gr.api(handlers.api_entry_get, api_name="entry_get", **archive_events)
        gr.api(handlers.api_entry_update, api_name="entry_update", **archive_events)
        gr.api(handlers.api_entry_delete, api_name="entry_delete", **archive_events)
        gr.api(handlers.api_presets, api_name="presets", **archive_events)
    # One stylisation at a time per device; everything else says so in its own event.
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    return demo


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up checks, one line per request
    try:  # a bad signing identity or trust list stops the app here, before it serves anything
        identity, trust_anchors = identity_from_environment(os.environ), trust_anchors_from_environment(os.environ)
        archive = Archive(archive_dir(), identity=identity)
    except CredentialsError as error:
        raise SystemExit(f"Content Credentials: {error}") from error
    stylizer, notice = load_stylizer()
    log.info("serving %s@%s on %s; archive in %s; signing as %s", stylizer.model_info.repo,
             stylizer.model_info.revision, stylizer.device, archive.root, archive.identity.describe())
    build_demo(stylizer, archive, model_notice=notice, trust_anchors=trust_anchors).launch(**launch_options(archive))


if __name__ == "__main__":
    main()
