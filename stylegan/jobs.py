"""One stylisation, from an uploaded file to an archive entry: the app's work without its UI.

    choice = StyleChoice(preset="bruegel_the_harvesters")
    job = stylize_and_archive(stylizer, archive, data, "scan.tif", choice, Settings(strength=0.7), Catalogue(...))

`run` lets the caller supply the function that touches the device (the app wraps
`Stylizer.stylize` for ZeroGPU); by default `stylizer.stylize` is called directly.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath

from PIL import Image

from .archive import Archive, ArchiveError, Catalogue, Entry
from .batch import BatchItem, Refusal, UnreadableMember
from .credentials import CredentialsError, Ingredient, preset_ingredient
from .images import ImageError, open_image
from .inference import DEFAULT_TEXTURE_SIDE, MIN_TEXTURE_SIDE, ProgressCallback, Style, Stylizer
from .postprocess import PostProcess
from .provenance import new_record, sha256_bytes
from .thumbnails import downscale_rgb

MIN_LONG_SIDE = 16
MAX_LONG_SIDE = 30_000
# (content, style, strength, preserve_color, max_long_side, texture_side, seed, progress) -> stylised image
RunFunction = Callable[[Image.Image, Style, float, bool, "int | None", "int | None", int, "ProgressCallback | None"],
                       Image.Image]


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

    def record_settings(self) -> dict:
        """What the provenance keeps besides model, style, strength and seed."""
        return {"mode": "feedforward", "preserve_color": self.preserve_color,
                "max_long_side": self.max_long_side, "texture_side": self.texture_side, **self.post.settings()}


@dataclass(frozen=True)
class Job:
    entry: Entry
    content: Image.Image  # the decoded original
    result: Image.Image  # what was archived: stylised, then post-processed
    settings: Settings

    def comparison(self, long_side: int) -> tuple[Image.Image, Image.Image]:
        """RGB previews (before, after) of equal size: the original framed like the result."""
        before = downscale_rgb(self.content, long_side)
        before = PostProcess(crop=self.settings.post.crop).apply(before)
        after = downscale_rgb(self.result, long_side)
        return before.resize(after.size), after


def stylize_and_archive(stylizer: Stylizer, archive: Archive, original: bytes, original_name: str,
                        style: StyleChoice, settings: Settings, catalogue: Catalogue, *,
                        run: RunFunction | None = None, progress: ProgressCallback | None = None) -> Job:
    """Decode, stylise, post-process and archive one upload. Bad input raises a ValueError
    (`ImageError`, `ArchiveError`) whose message names the problem."""
    content = open_image(original, name=original_name)
    style_value, style_description = style.resolve(stylizer)
    run = run or _run_directly(stylizer)
    stylized = run(content, style_value, settings.strength, settings.preserve_color, settings.max_long_side,
                   settings.texture_side, settings.seed, progress)
    result = settings.post.apply(stylized)
    record = new_record(source_sha256=sha256_bytes(original), source_name=original_name,
                        model_info=stylizer.model_info, style=style_description, style_strength=settings.strength,
                        settings=settings.record_settings(), seed=settings.seed)
    entry = archive.add(original, result, record, catalogue, style.ingredients(stylizer))
    return Job(entry, content, result, settings)


def _run_directly(stylizer: Stylizer) -> RunFunction:
    def run(content, style, strength, preserve_color, max_long_side, texture_side, seed, progress):
        return stylizer.stylize(content, style, strength, preserve_color=preserve_color, max_long_side=max_long_side,
                                texture_side=texture_side, seed=seed, progress=progress)
    return run


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
                  progress: ProgressCallback | None = None) -> BatchReport:
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
                                      item_catalogue, run=run, progress=item_progress)
        except (ImageError, ArchiveError, UnreadableMember, CredentialsError, OSError) as error:
            refused.append(Refusal(item.name, str(error)))
            continue
        entries.append(job.entry)
    return BatchReport(entries, refused)
