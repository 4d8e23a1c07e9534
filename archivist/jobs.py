"""One stylisation, from an uploaded file to an archive entry: the app's work without its UI.

    choice = StyleChoice(preset="bruegel_the_harvesters")
    job = stylize_and_archive(stylizer, archive, data, "scan.tif", choice, Settings(strength=0.7), Catalogue(...))

`run` and `run_best` let the caller supply the functions that touch the device (the app wraps
them for ZeroGPU); by default `stylizer.stylize` and `stylizer.stylize_iter` are called directly.
`stylize_progressively` yields best quality's results on the way (`Draft`s) before the archived `Job`.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import PurePath

from PIL import Image

from stylegan.images import ImageError, open_image
from stylegan.inference import (
    DEFAULT_TEXTURE_SIDE,
    MIN_TEXTURE_SIDE,
    QUALITIES,
    ProgressCallback,
    Style,
    Stylizer,
    refine_working_size,
)
from stylegan.optimize import REFINE_STEPS

from .archive import Archive, ArchiveError, Catalogue, Entry
from .batch import BatchItem, Refusal, UnreadableMember
from .credentials import CredentialsError, Ingredient, preset_ingredient
from .postprocess import PostProcess
from .provenance import new_record, sha256_bytes
from .thumbnails import downscale_rgb

MIN_LONG_SIDE = 16
MAX_LONG_SIDE = 30_000
# (content, style, strength, preserve_color, max_long_side, texture_side, seed, progress) -> stylised image
RunFunction = Callable[[Image.Image, Style, float, bool, "int | None", "int | None", int, "ProgressCallback | None"],
                       Image.Image]
# (content, style, strength, preserve_color, max_long_side, texture_side, steps, progress) -> best quality's
# results as they improve (`Stylizer.stylize_iter`); closing it stops the work
BestRunFunction = Callable[[Image.Image, Style, float, bool, "int | None", "int | None", int,
                            "ProgressCallback | None"], Iterator[Image.Image]]
MAX_REFINE_STEPS = 1000


@dataclass(frozen=True)
class StyleImage:
    data: bytes  # the uploaded file, as uploaded (its SHA-256 identifies it in the provenance)
    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class StyleChoice:
    """A preset, or one or more uploaded style images blended by weight."""
    preset: str | None = None
    images: tuple[StyleImage, ...] = ()

    def __post_init__(self) -> None:
        if (self.preset is None) == (not self.images):
            raise ValueError("choose either a preset or at least one style image")
        weights = [image.weight for image in self.images]
        if any(not math.isfinite(weight) or weight < 0 for weight in weights) or (weights and sum(weights) <= 0):
            raise ValueError(f"style image weights must be 0 or more with at least one above 0, got {weights}")

    def resolve(self, stylizer: Stylizer) -> tuple[Style, list[tuple[str, float]]]:
        """(a style for `Stylizer.stylize`, its description for `provenance.new_record`)."""
        if self.preset is not None:
            if self.preset not in stylizer.presets:
                raise ValueError(f"{self.preset!r} is not a preset of this model")
            return self.preset, [(f"preset:{self.preset}", 1.0)]
        used = [image for image in self.images if image.weight > 0]
        decoded = [(open_image(image.data, name=f"style image {image.name}"), image.weight) for image in used]
        description = [(f"sha256:{sha256_bytes(image.data)}", image.weight) for image in used]
        return (decoded[0][0] if len(decoded) == 1 else decoded), description

    def ingredients(self, stylizer: Stylizer) -> tuple[Ingredient, ...]:
        """The styles as a result's Content Credentials name them."""
        if self.preset is not None:
            return (preset_ingredient(self.preset, stylizer.presets.get(self.preset)),)
        return tuple(Ingredient(image.name, image.data, weight=image.weight) for image in self.images
                     if image.weight > 0)


@dataclass(frozen=True)
class Settings:
    strength: float = 0.8  # 0 reproduces the content, 1 is the full style
    preserve_color: bool = False
    max_long_side: int | None = None  # None: full resolution
    texture_side: int | None = DEFAULT_TEXTURE_SIDE  # style painted at ~side² px; None: at full resolution
    post: PostProcess = field(default_factory=PostProcess)
    seed: int = 0  # recorded; the network itself is deterministic
    quality: str = "fast"  # fast: the network; best: its result refined by optimisation
    steps: int = REFINE_STEPS  # best quality's loss evaluations

    def __post_init__(self) -> None:
        if not (math.isfinite(self.strength) and 0.0 <= self.strength <= 1.0):
            raise ValueError(f"style strength must be between 0 and 1, got {self.strength}")
        if self.max_long_side is not None and not MIN_LONG_SIDE <= self.max_long_side <= MAX_LONG_SIDE:
            raise ValueError(f"the output long side must be between {MIN_LONG_SIDE} and {MAX_LONG_SIDE} px, "
                             f"got {self.max_long_side}")
        if self.texture_side is not None and not MIN_TEXTURE_SIDE <= self.texture_side <= MAX_LONG_SIDE:
            raise ValueError(f"the texture side must be between {MIN_TEXTURE_SIDE} and {MAX_LONG_SIDE} px, "
                             f"got {self.texture_side}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"the seed must be a whole number from 0 to 2^63-1, got {self.seed}")
        if self.quality not in QUALITIES:
            raise ValueError(f"quality must be one of {QUALITIES}, got {self.quality!r}")
        if not 1 <= self.steps <= MAX_REFINE_STEPS:
            raise ValueError(f"best quality's steps must be between 1 and {MAX_REFINE_STEPS}, got {self.steps}")

    def record_settings(self, content_size: tuple[int, int]) -> dict:
        """What the provenance keeps besides model, style, strength and seed; best quality adds its steps
        and the (width, height) it optimised at."""
        settings = {"mode": "feedforward", "quality": self.quality, "preserve_color": self.preserve_color,
                    "max_long_side": self.max_long_side, "texture_side": self.texture_side, **self.post.settings()}
        if self.quality == "best":
            settings["steps"] = self.steps
            settings["working_size"] = list(refine_working_size(content_size, self.max_long_side, self.texture_side))
        return settings


@dataclass(frozen=True)
class Draft:
    """A result on the way (best quality: the network's, then refined ones), shown but not archived."""
    content: Image.Image  # the decoded original
    result: Image.Image  # stylised, then post-processed
    settings: Settings

    def comparison(self, long_side: int) -> tuple[Image.Image, Image.Image]:
        """RGB previews (before, after) of equal size: the original framed like the result."""
        before = downscale_rgb(self.content, long_side)
        before = PostProcess(crop=self.settings.post.crop).apply(before)
        after = downscale_rgb(self.result, long_side)
        return before.resize(after.size), after


@dataclass(frozen=True)
class Job(Draft):
    """The archived result."""
    entry: Entry


def stylize_progressively(stylizer: Stylizer, archive: Archive, original: bytes, original_name: str,
                          style: StyleChoice, settings: Settings, catalogue: Catalogue, *,
                          run: RunFunction | None = None, run_best: BestRunFunction | None = None,
                          progress: ProgressCallback | None = None) -> Iterator[Draft]:
    """Decode, stylise, post-process and archive one upload, yielding each result on the way: best
    quality's as `Draft`s, then the archived `Job` (the last item). Closing the iterator stops the work
    and archives nothing. Bad input raises a ValueError (`ImageError`, `ArchiveError`) whose message
    names the problem."""
    content = open_image(original, name=original_name)
    style_value, style_description = style.resolve(stylizer)
    result = None
    if settings.quality == "best":
        run_best = run_best or _run_best_directly(stylizer)
        results = run_best(content, style_value, settings.strength, settings.preserve_color, settings.max_long_side,
                           settings.texture_side, settings.steps, progress)
        with closing(results):
            for stylized in results:
                result = settings.post.apply(stylized)
                yield Draft(content, result, settings)
    else:
        run = run or _run_directly(stylizer)
        result = settings.post.apply(run(content, style_value, settings.strength, settings.preserve_color,
                                         settings.max_long_side, settings.texture_side, settings.seed, progress))
    record = new_record(source_sha256=sha256_bytes(original), source_name=original_name,
                        model_info=stylizer.model_info, style=style_description, style_strength=settings.strength,
                        settings=settings.record_settings(content.size), seed=settings.seed)
    entry = archive.add(original, result, record, catalogue, style.ingredients(stylizer))
    yield Job(content, result, settings, entry)


def stylize_and_archive(stylizer: Stylizer, archive: Archive, original: bytes, original_name: str,
                        style: StyleChoice, settings: Settings, catalogue: Catalogue, *,
                        run: RunFunction | None = None, run_best: BestRunFunction | None = None,
                        progress: ProgressCallback | None = None) -> Job:
    """`stylize_progressively` to the end: the archived `Job`."""
    for job in stylize_progressively(stylizer, archive, original, original_name, style, settings, catalogue,
                                     run=run, run_best=run_best, progress=progress):
        pass
    return job


def _run_directly(stylizer: Stylizer) -> RunFunction:
    def run(content, style, strength, preserve_color, max_long_side, texture_side, seed, progress):
        return stylizer.stylize(content, style, strength, preserve_color=preserve_color, max_long_side=max_long_side,
                                texture_side=texture_side, seed=seed, progress=progress)
    return run


def _run_best_directly(stylizer: Stylizer) -> BestRunFunction:
    def run_best(content, style, strength, preserve_color, max_long_side, texture_side, steps, progress):
        return stylizer.stylize_iter(content, style, strength, preserve_color=preserve_color,
                                     max_long_side=max_long_side, texture_side=texture_side, steps=steps,
                                     progress=progress)
    return run_best


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


def stylize_batch(stylizer: Stylizer, archive: Archive, items: Sequence[BatchItem], style: StyleChoice,
                  settings: Settings, catalogue: Catalogue, *, run: RunFunction | None = None,
                  run_best: BestRunFunction | None = None, progress: ProgressCallback | None = None) -> BatchReport:
    """Each item with one style and settings; titled by its file name. Items that fail are
    refused with the reason and the batch goes on."""
    entries: list[Entry] = []
    refused: list[Refusal] = []
    for index, item in enumerate(items):
        item_progress = progress and ScaledProgress(progress, index / len(items), 1 / len(items),
                                                    f"{index + 1}/{len(items)} {item.name}: ")
        item_catalogue = dataclasses.replace(catalogue, title=PurePath(item.name).stem)
        try:
            job = stylize_and_archive(stylizer, archive, item.read(), PurePath(item.name).name, style, settings,
                                      item_catalogue, run=run, run_best=run_best, progress=item_progress)
        except (ImageError, ArchiveError, UnreadableMember, CredentialsError, OSError) as error:
            refused.append(Refusal(item.name, str(error)))
            continue
        entries.append(job.entry)
    return BatchReport(entries, refused)
