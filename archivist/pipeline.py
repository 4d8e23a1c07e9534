"""The one way through: resolve the style, stylise, post-process, record the provenance and keep the
result, in a folder (the command line) or in the archive (the app, single images and batches alike).

    job = Job(StyleChoice.preset("bruegel_the_harvesters"), StylizeSettings(strength=0.7))
    result = stylize(stylizer, data, "scan.tif", job, ToArchive(archive, Catalogue(title="Harvest")))
    result = stylize(stylizer, data, "scan.tif", job, ToFolder(Path("stylized"), "png", identity))

`stylize_progressively` yields best quality's results on the way (`Draft`s) before the kept `Result`.
`run` lets a caller supply the function that touches the device (the app wraps it for ZeroGPU); by
default it is `Stylizer.run`.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Protocol

from PIL import Image

from stylegan.images import ImageError, open_image
from stylegan.inference import Style, Stylizer, StylizeSettings, refine_working_size
from stylegan.optimize import OPTIMIZE_STYLE_LAYERS, REFINE_STYLE_LAYERS
from stylegan.progress import ProgressCallback

from .archive import Archive, ArchiveError, Catalogue, Entry
from .batch import BatchItem, Refusal, UnreadableMember
from .credentials import CredentialsError, Ingredient, Signing, SigningIdentity, preset_ingredient
from .postprocess import PostProcess
from .provenance import ProvenanceRecord, new_record, save_with_provenance, sha256_bytes
from .thumbnails import downscale_rgb

# (content, style, settings, progress) -> the results as they come (`Stylizer.run`); closing it stops the work
Runner = Callable[[Image.Image, Style, StylizeSettings, "ProgressCallback | None"], Iterator[Image.Image]]


@dataclass(frozen=True)
class StyleImage:
    data: bytes  # the file, as uploaded or read (its SHA-256 identifies it in the provenance)
    name: str


@dataclass(frozen=True)
class ResolvedStyle:
    value: Style  # what `Stylizer.run` takes
    description: list[tuple[str, float]]  # ("preset:<name>" or "sha256:<hex>", weight): the record's style
    names: list[str]  # preset names and style image file names, as the record's settings list them
    ingredients: tuple[Ingredient, ...]  # the styles as a result's Content Credentials name them
    code_read_by: str | None = None  # what read the style images for the network's code, if any were given


@dataclass(frozen=True)
class StyleChoice:
    """One style or a weighted blend: preset names and style images, each with a weight ≥ 0 (those
    at 0 are left out)."""
    sources: tuple[tuple[str | StyleImage, float], ...]

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("choose a preset or at least one style image")
        weights = [weight for _, weight in self.sources]
        if any(not math.isfinite(weight) or weight < 0 for weight in weights) or sum(weights) <= 0:
            raise ValueError(f"style weights must be 0 or more with at least one above 0, got {weights}")

    @classmethod
    def preset(cls, name: str) -> StyleChoice:
        return cls(((name, 1.0),))

    def resolve(self, stylizer: Stylizer, settings: StylizeSettings) -> ResolvedStyle:
        """The style as `Stylizer.run`, the provenance and the Content Credentials need it; a ValueError naming
        the problem for an unknown preset, an unreadable style image, or a preset whose Gram matrices `settings`
        need (best quality, optimisation) but the model does not store."""
        values: list[tuple[str | Image.Image, float]] = []
        description, names, ingredients = [], [], []
        reads_images = False
        for source, weight in self.sources:
            if weight == 0:
                continue
            if isinstance(source, StyleImage):
                values.append((open_image(source.data, name=f"style image {source.name}"), weight))
                description.append((f"sha256:{sha256_bytes(source.data)}", weight))
                names.append(source.name)
                ingredients.append(Ingredient(source.name, source.data, weight=weight))
                reads_images = True
                continue
            if source not in stylizer.presets:
                raise ValueError(f"{source!r} is not a preset of this model")
            if settings.mode == "optimize" or settings.quality == "best":  # both match the preset's stored Grams
                layers, purpose = ((OPTIMIZE_STYLE_LAYERS, "mode='optimize'") if settings.mode == "optimize"
                                   else (REFINE_STYLE_LAYERS, "quality='best'"))
                stylizer.preset_grams(source, layers, purpose)
            values.append((source, weight))
            description.append((f"preset:{source}", weight))
            names.append(source)
            ingredients.append(preset_ingredient(source, stylizer.presets[source], weight))
        value = values[0][0] if len(values) == 1 else values
        return ResolvedStyle(value, description, names, tuple(ingredients),
                             stylizer.style_image_features if reads_images else None)


@dataclass(frozen=True)
class Job:
    """What to make of an original: the style, how to stylise it (the library's settings, validated once
    there) and the post-processing. One type for the command line, the app and batches."""
    style: StyleChoice
    settings: StylizeSettings = field(default_factory=StylizeSettings)
    post: PostProcess = field(default_factory=PostProcess)

    def record_settings(self, style: ResolvedStyle, content_size: tuple[int, int]) -> dict[str, object]:
        """What the provenance keeps besides model, style, strength and seed; best quality and optimisation
        add their steps, best quality the (width, height) it optimised an image of `content_size` at."""
        settings = self.settings
        record: dict[str, object] = {"mode": settings.mode, "quality": settings.quality,
                                     "preserve_color": settings.preserve_color,
                                     "max_long_side": settings.max_long_side, "texture_side": settings.texture_side,
                                     "styles": style.names, **self.post.settings()}
        if style.code_read_by is not None and settings.mode != "optimize":  # optimisation reads them in float32
            record["style_code_read_by"] = style.code_read_by
        if settings.mode == "optimize" or settings.quality == "best":
            record["steps"] = settings.step_count
        if settings.quality == "best":
            record["working_size"] = list(refine_working_size(content_size, settings.max_long_side,
                                                              settings.texture_side))
        return record


class Destination(Protocol):
    """Where a result is kept, with its record and signed Content Credentials."""

    def keep(self, original: bytes, name: str, result: Image.Image, record: ProvenanceRecord,
             styles: Sequence[Ingredient]) -> Entry | Path: ...


@dataclass(frozen=True)
class ToArchive:
    """Into the archive, beside the untouched original, with this catalogue record."""
    archive: Archive
    catalogue: Catalogue = field(default_factory=Catalogue)

    def keep(self, original: bytes, name: str, result: Image.Image, record: ProvenanceRecord,
             styles: Sequence[Ingredient]) -> Entry:
        return self.archive.add(original, result, record, self.catalogue, styles)


FORMAT_SUFFIXES = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tif"}
SAVE_OPTIONS: dict[str, dict[str, object]] = {"jpg": {"quality": 95}, "webp": {"quality": 95}}
# Image modes each output format can hold as they are; anything else fails with a hint rather
# than losing alpha or bit depth without a word.
FORMAT_MODES = {"jpg": {"L", "RGB"}, "webp": {"L", "RGB", "LA", "RGBA"}}


def output_name(source: str | PurePath, number: int, suffix: str) -> str:
    """`page.stylized.png`, then `page.stylized-1.png`, `page.stylized-2.png`, ..."""
    stem = PurePath(source).stem
    return f"{stem}.stylized{suffix}" if number == 0 else f"{stem}.stylized-{number}{suffix}"


@dataclass(frozen=True)
class ToFolder:
    """A new file in the existing `folder` (nothing is overwritten: `page.stylized.png`, `page.stylized-1.png`,
    ...) with a JSON sidecar, signed by `identity`."""
    folder: Path
    format: str  # a key of FORMAT_SUFFIXES
    identity: SigningIdentity

    def __post_init__(self) -> None:
        if self.format not in FORMAT_SUFFIXES:
            raise ValueError(f"format must be one of {sorted(FORMAT_SUFFIXES)}, got {self.format!r}")

    def keep(self, original: bytes, name: str, result: Image.Image, record: ProvenanceRecord,
             styles: Sequence[Ingredient]) -> Path:
        allowed = FORMAT_MODES.get(self.format)
        if allowed is not None and result.mode not in allowed:
            lost = "alpha" if "A" in result.mode else "bit depth"
            raise ValueError(f"a {result.mode} result cannot be saved as {self.format} without losing {lost}; "
                             "use --format png or tiff")
        number = 0
        while True:
            candidate = self.folder / output_name(name, number, FORMAT_SUFFIXES[self.format])
            number += 1
            if candidate.exists():
                continue
            try:
                return save_with_provenance(result, candidate, record, overwrite=False,
                                            signing=Signing(self.identity, original, tuple(styles)),
                                            **SAVE_OPTIONS.get(self.format, {}))
            except FileExistsError:
                continue  # taken meanwhile (another process), or its sidecar exists: try the next name


@dataclass(frozen=True)
class Draft:
    """A result on the way (best quality: the network's, then refined ones), shown but not kept."""
    content: Image.Image  # the decoded original
    result: Image.Image  # stylised, then post-processed
    job: Job

    def comparison(self, long_side: int) -> tuple[Image.Image, Image.Image]:
        """RGB previews (before, after) of equal size: the original framed like the result."""
        before = downscale_rgb(self.content, long_side)
        before = PostProcess(crop=self.job.post.crop).apply(before)
        after = downscale_rgb(self.result, long_side)
        return before.resize(after.size), after


@dataclass(frozen=True)
class Result(Draft):
    """The kept result: an archive `Entry`, or the file written."""
    kept: Entry | Path


def stylize_progressively(stylizer: Stylizer, original: bytes, name: str, job: Job, destination: Destination, *,
                          run: Runner | None = None, progress: ProgressCallback | None = None
                          ) -> Iterator[Draft | Result]:
    """Decode, stylise, post-process, record and keep one original named `name`, yielding each result on
    the way: best quality's as `Draft`s, then the kept `Result` (the last item). Closing the iterator stops
    the work and keeps nothing. Bad input raises a ValueError (`ImageError`, `ArchiveError`, ...) whose
    message names the problem."""
    content = open_image(original, name=name)
    style = job.style.resolve(stylizer, job.settings)
    run = run or stylizer.run
    result = None
    with closing(run(content, style.value, job.settings, progress)) as results:
        for stylized in results:
            result = job.post.apply(stylized)
            if job.settings.quality == "best":
                yield Draft(content, result, job)
    record = new_record(source_sha256=sha256_bytes(original), source_name=PurePath(name).name,
                        model_info=stylizer.model_info, style=style.description,
                        style_strength=job.settings.strength, settings=job.record_settings(style, content.size),
                        seed=job.settings.seed)
    yield Result(content, result, job, destination.keep(original, name, result, record, style.ingredients))


def stylize(stylizer: Stylizer, original: bytes, name: str, job: Job, destination: Destination, *,
            run: Runner | None = None, progress: ProgressCallback | None = None) -> Result:
    """`stylize_progressively` to the end: the kept `Result`."""
    for result in stylize_progressively(stylizer, original, name, job, destination, run=run, progress=progress):
        pass
    return result


@dataclass(frozen=True)
class ScaledProgress:
    """One part of a longer task's progress: [0, 1] maps to [start, start + span]. A plain object
    rather than a closure, so it can be pickled into a worker process (as ZeroGPU does)."""
    callback: ProgressCallback
    start: float
    span: float
    prefix: str = ""

    def __call__(self, fraction: float, message: str) -> None:
        self.callback(self.start + self.span * fraction, self.prefix + message)


@dataclass(frozen=True)
class BatchReport:
    entries: list[Entry]
    refused: list[Refusal]


def stylize_batch(stylizer: Stylizer, archive: Archive, items: Sequence[BatchItem], job: Job, catalogue: Catalogue,
                  *, run: Runner | None = None, progress: ProgressCallback | None = None) -> BatchReport:
    """Each item into the archive with one job; titled by its file name. Items that fail are refused
    with the reason and the batch goes on."""
    entries: list[Entry] = []
    refused: list[Refusal] = []
    for index, item in enumerate(items):
        item_progress = progress and ScaledProgress(progress, index / len(items), 1 / len(items),
                                                    f"{index + 1}/{len(items)} {item.name}: ")
        destination = ToArchive(archive, dataclasses.replace(catalogue, title=PurePath(item.name).stem))
        try:
            result = stylize(stylizer, item.read(), PurePath(item.name).name, job, destination, run=run,
                             progress=item_progress)
        except (ImageError, ArchiveError, UnreadableMember, CredentialsError, OSError) as error:
            refused.append(Refusal(item.name, str(error)))
            continue
        entries.append(result.kept)
    return BatchReport(entries, refused)
