"""`Stylizer`: the public API. Loads a model once and stylises PIL images of any size.

    stylizer = Stylizer.from_pretrained()                          # the bundled default model
    stylizer = Stylizer.from_pretrained("org/name", revision="v1")   # the Hub, strict loading
    result = stylizer.stylize(content, style="hokusai_great_wave_off_kanagawa", strength=0.8)

The style is painted at about `texture_side`² pixels (default 640²) and enlarged with the
original's luminance detail restored (`stylegan.images.upscale_with_detail`), so large scans cost
about one 640² pass. With `texture_side=None` the network runs at full resolution instead: images
larger than `whole_image_pixels` then go through overlapping tiles blended with linear
ramps; every tile is normalised with statistics measured once on the whole image
(downscaled), so tiles agree and no seams show. Memory stays bounded by the tile size.

`quality="best"` then optimises the network's result against the style's Gram matrices
(`stylegan.optimize.refine`) before the detail is restored; `stylize_iter` yields it as it improves.
"""
from __future__ import annotations

import hashlib
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .bands import band_signature, blend_signatures, transfer_bands
from .features import VGG19Features
from .generator import MIN_SIDE, Generator, NormStats, style_statistics
from .images import (
    MAX_SIDE,
    limit_chroma_,
    mean_chroma,
    pad_to_multiple,
    preserve_colors,
    resize_long_side,
    resize_to_area,
    to_pil,
    to_tensor,
    upscale_with_detail,
)
from .int8_features import DEEPEST as INT8_DEEPEST
from .int8_features import Int8StyleFeatures, can_read
from .optimize import (
    OPTIMIZE_STEPS,
    OPTIMIZE_STYLE_LAYERS,
    OPTIMIZE_STYLE_LONG_SIDE,
    REFINE_PREVIEW_EVERY,
    REFINE_STEPS,
    REFINE_STYLE_LAYERS,
    image_grams,
    mix_grams,
    optimize_stylize,
    refine,
)
from .palette import apply_lut, blend_palettes, fit_lut, palette_of
from .presets import (
    PRESET_BANDS_FILE,
    PRESET_CODES_FILE,
    PRESET_GRAMS_FOLDER,
    PRESET_INFO_FILE,
    PRESET_PALETTES_FILE,
    Preset,
    load_preset_bands,
    load_preset_grams,
    load_presets,
    preset_gram_files,
)
from .progress import ProgressCallback
from .strength import blend_fraction, strength_curve

DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"
BUNDLED_REPO = "bundled"
WEIGHTS_FILE = "model.safetensors"
MODEL_FILES = ["config.json", WEIGHTS_FILE, PRESET_CODES_FILE, PRESET_PALETTES_FILE, PRESET_BANDS_FILE,
               PRESET_INFO_FILE, "README.md",
               "training.json", "*.png", f"{PRESET_GRAMS_FOLDER}/*.safetensors"]

# A style: a preset name, a style image, or a list of (preset name or image, weight).
StyleSource = str | Image.Image
Style = StyleSource | Sequence[tuple[StyleSource, float]]
STYLIZE_MODES = ("feedforward", "optimize")
# fast: the network alone; best: the network's result refined by optimisation (stylegan.optimize.refine).
QUALITIES = ("fast", "best")
BACKENDS = ("torch", "onnx")  # onnx: onnxruntime on the CPU, see stylegan/onnx_backend.py
# The style is painted on the image shrunk to about this² pixels, then enlarged with the original's
# full-resolution detail added back: the texture is sized relative to the picture, not to its pixels,
# so a 600-dpi and a 300-dpi scan of one print look alike. None paints at the image's own resolution.
DEFAULT_TEXTURE_SIDE = 640
MIN_TEXTURE_SIDE = 64
MIN_LONG_SIDE = 16  # smallest `max_long_side`
PALETTE_BAND_ROWS = 256  # rows per band when a palette table is applied to a large image
# Best quality refines at the texture side; with texture_side=None at most at this side² (VGG19's
# backward pass at full resolution would take minutes per step on a CPU and gigabytes on a GPU).
REFINE_MAX_SIDE = 1024
MIN_REFINE_STYLE_SIDE = 128  # style images are read at least this large (relu4_1 at 1/8 of it)


@dataclass(frozen=True)
class StyleEntry:
    """What stylising needs of a style: its code, colourfulness (None: not measured), palette and band
    signature (None: a preset saved without one, so the network's own colours or detail are kept)."""
    code: Tensor
    chroma: float | None
    palette: Tensor | None
    bands: Tensor | None = None


@dataclass(frozen=True)
class ModelInfo:
    """Where the weights came from: recorded in every result's provenance."""
    repo: str  # Hub repo id, or "bundled"
    revision: str  # Hub commit hash, or the bundled model's weights hash prefix
    weights_sha256: str
    path: str


@dataclass(frozen=True)
class StylizeSettings:
    """How to stylise, validated here once: what `Stylizer.stylize`'s keywords describe.

    `strength` ∈ [0, 1] blends the style's statistics with a learned identity (0 returns the content
    itself), at the fraction where the result changes about `strength` of its full change
    (`stylegan.strength`); `max_long_side` optionally downsizes the result; `texture_side`: the style is painted at
    about that² pixels and the full-resolution detail restored (None: at the image's own resolution,
    texture in pixels); `mode="optimize"`: per-image optimisation from the content instead of the
    network; `quality="best"`: the network's result refined by optimisation; `steps`: the loss
    evaluations of either (None: REFINE_STEPS or OPTIMIZE_STEPS); `seed`: the optimisation's initial
    noise (the network is deterministic; callers record it)."""
    strength: float = 0.8
    preserve_color: bool = False
    max_long_side: int | None = None
    texture_side: int | None = DEFAULT_TEXTURE_SIDE
    mode: str = "feedforward"
    quality: str = "fast"
    steps: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.strength, bool) or not isinstance(self.strength, (int, float)) \
                or not (math.isfinite(self.strength) and 0.0 <= self.strength <= 1.0):
            raise ValueError(f"strength must be in [0, 1], got {self.strength!r}")
        object.__setattr__(self, "strength", float(self.strength))
        if self.mode not in STYLIZE_MODES:
            raise ValueError(f"mode must be one of {STYLIZE_MODES}, got {self.mode!r}")
        if self.quality not in QUALITIES:
            raise ValueError(f"quality must be one of {QUALITIES}, got {self.quality!r}")
        if self.quality == "best" and self.mode != "feedforward":
            raise ValueError("quality='best' refines the network's result; mode='optimize' has none to refine")
        for name, value, low in (("max_long_side", self.max_long_side, MIN_LONG_SIDE),
                                 ("texture_side", self.texture_side, MIN_TEXTURE_SIDE)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not low <= value <= MAX_SIDE):
                raise ValueError(f"{name} must be between {low} and {MAX_SIDE} px (or None), got {value!r}")
        if self.steps is not None:
            if self.mode != "optimize" and self.quality != "best":
                raise ValueError("steps only apply to quality='best' and mode='optimize'")
            if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
                raise ValueError(f"steps must be ≥ 1 (a whole number), got {self.steps!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not 0 <= self.seed < 2**63):
            raise ValueError(f"the seed must be a whole number from 0 to 2^63-1, got {self.seed!r}")

    @property
    def step_count(self) -> int:
        """The loss evaluations that best quality or optimisation runs."""
        if self.steps is not None:
            return self.steps
        return OPTIMIZE_STEPS if self.mode == "optimize" else REFINE_STEPS


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def image_sha256(image: Image.Image) -> str:
    """Hash of the decoded pixels (mode, size, bytes): the identity of a style or content image."""
    digest = hashlib.sha256(f"{image.mode}:{image.size}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Stylizer:
    """A loaded generator, its presets and the VGG19 style encoder. Safe to call from threads."""

    tile_size = 512  # tile side in px
    tile_context = 64  # px at a tile's inner edges used only as context (≥ the receptive field's reach)
    tile_blend = 32  # px over which neighbouring tiles cross-fade, past the context
    whole_image_pixels = 1024 * 1024  # above this, tile
    stats_long_side = 1024  # long side at which normalisation statistics are measured

    def __init__(self, generator: Generator, presets: dict[str, Preset] | None = None,
                 preset_codes: dict[str, Tensor] | None = None, preset_palettes: dict[str, Tensor] | None = None,
                 *, model_info: ModelInfo | None = None,
                 vgg: VGG19Features | None = None, device: torch.device | str | None = None,
                 backend: str = "torch", preset_grams: Mapping[str, Path] | None = None,
                 preset_bands: Mapping[str, Tensor] | None = None,
                 int8_style_features: bool | None = None) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "onnx" and self.device.type != "cpu":
            raise ValueError(f"backend='onnx' runs on the CPU (onnxruntime's CPU build), not on {self.device}; "
                             "pass device='cpu' or use backend='torch'")
        self.backend = backend
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        # Channels-last weights: the convolutions then run in that layout, 20-25 % faster on the CPU.
        self.generator = generator.eval().requires_grad_(False).to(self.device, self.dtype,
                                                                    memory_format=torch.channels_last)
        self.vgg = (vgg or VGG19Features.pretrained()).to(self.device)
        # A new style image is read by VGG19 in int8 on the CPU (`stylegan.int8_features`: ~2× faster, its
        # statistics within 2 %); `int8_style_features=False` reads it in float32, None = int8 where it can run.
        int8_possible = self.device.type == "cpu" and can_read(generator.config.style_layers)
        if int8_style_features and not int8_possible:
            raise ValueError("int8 style features need the CPU, an x86 quantised engine and style layers up to "
                             f"{INT8_DEEPEST}")
        self._style_features = (Int8StyleFeatures(self.vgg) if int8_possible and int8_style_features is not False
                                else self.vgg)
        self.presets = dict(presets or {})
        self._preset_codes = {name: code.to(self.device, torch.float32) for name, code in (preset_codes or {}).items()}
        self._preset_palettes = dict(preset_palettes or {})
        self._preset_grams = dict(preset_grams or {})  # name -> stored Grams file (best quality's targets)
        self._preset_bands = dict(preset_bands or {})  # name -> band signature (`stylegan.bands`)
        self.model_info = model_info or ModelInfo("unsaved", "none", "", "")
        self._onnx = None
        if backend == "onnx":
            from .onnx_backend import OnnxGenerator  # exports and opens each graph on first use

            self._onnx = OnnxGenerator(self.generator, self.model_info.weights_sha256 or None)
        self._code_cache: OrderedDict[str, StyleEntry] = OrderedDict()  # pixel hash -> entry
        self._curve_cache: OrderedDict[bytes, Tensor] = OrderedDict()  # style code -> `strength_curve`
        self._cache_lock = threading.Lock()

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, repo_or_path: str | os.PathLike | None = None, *, revision: str | None = None,
                        device: torch.device | str | None = None, cache_dir: str | os.PathLike | None = None,
                        local_files_only: bool = False, token: str | bool | None = None,
                        backend: str = "torch", int8_style_features: bool | None = None) -> Stylizer:
        """Load the bundled model (no argument), a local folder, or a Hub repo at a pinned revision.

        Weights are read from safetensors only, with strict key checking. `backend="onnx"` runs
        the generator in onnxruntime on the CPU (exported once per weights, then cached).
        `int8_style_features`: see `Stylizer.__init__`.
        """
        if repo_or_path is None:
            folder, repo = DEFAULT_MODEL_DIR, BUNDLED_REPO
        elif Path(repo_or_path).is_dir():
            folder, repo = Path(repo_or_path), str(repo_or_path)
        else:
            from huggingface_hub import snapshot_download
            folder = Path(snapshot_download(str(repo_or_path), revision=revision, cache_dir=cache_dir,
                                            allow_patterns=MODEL_FILES, local_files_only=local_files_only,
                                            token=token))
            repo = str(repo_or_path)
        return cls.from_folder(folder, repo=repo, device=device, backend=backend,
                               int8_style_features=int8_style_features)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, *, repo: str, device: torch.device | str | None = None,
                    backend: str = "torch", int8_style_features: bool | None = None) -> Stylizer:
        folder = Path(folder)
        weights = folder / WEIGHTS_FILE
        if not weights.exists():
            pickles = sorted(p.name for p in folder.glob("*") if p.suffix in {".bin", ".pt", ".pth", ".ckpt", ".pkl"})
            hint = f" (found {pickles}: pickle-based weights are refused, convert them to safetensors)" if pickles else ""
            raise ValueError(f"{folder}: no {WEIGHTS_FILE}{hint}")
        generator = Generator.from_pretrained(folder, strict=True)
        presets, codes, palettes = load_presets(folder)
        weights_sha256 = sha256_file(weights)
        # A Hub snapshot folder is named after the commit it holds.
        revision = folder.name if folder.parent.name == "snapshots" else weights_sha256[:12]
        return cls(generator, presets, codes, palettes,
                   model_info=ModelInfo(repo, revision, weights_sha256, str(folder)),
                   device=device, backend=backend, preset_grams=preset_gram_files(folder, presets),
                   preset_bands=load_preset_bands(folder, presets), int8_style_features=int8_style_features)

    # -- styles ------------------------------------------------------------------------------
    def style_code(self, style: StyleSource) -> Tensor:
        """(style_dim,) code of a preset name or a style image (cached by pixel hash)."""
        return self._style_entry(style).code

    def style_chroma(self, style: Style) -> float | None:
        """Colourfulness (`mean_chroma`) of a style, or the weighted mean of a blend's; None where a
        preset was saved without it."""
        return self._blended(style).chroma

    @property
    def style_image_features(self) -> str:
        """What reads a new style image for its code, as provenance records it (the code moves by 1-5 %
        between the two)."""
        return "VGG19 int8" if isinstance(self._style_features, Int8StyleFeatures) else "VGG19 float32"

    @torch.inference_mode()
    def _style_entry(self, style: StyleSource) -> StyleEntry:
        if isinstance(style, str):
            if style not in self._preset_codes:
                raise ValueError(f"unknown preset {style!r}; known presets: {sorted(self.presets)}")
            return StyleEntry(self._preset_codes[style], self.presets[style].chroma if style in self.presets else None,
                              self._preset_palettes.get(style), self._preset_bands.get(style))
        if not isinstance(style, Image.Image):
            raise TypeError(f"a style is a preset name or a PIL image, got {type(style).__name__}")
        key = image_sha256(style)
        with self._cache_lock:
            if key in self._code_cache:
                self._code_cache.move_to_end(key)
                return self._code_cache[key]
        config = self.generator.config
        full = to_tensor(style)
        pixels = resize_long_side(full, config.style_image_size)
        statistics = style_statistics(self._style_features(pixels.to(self.device), config.style_layers),
                                      config.style_layers)
        entry = StyleEntry(self.generator.encode_style(statistics.to(self.dtype))[0].float(), mean_chroma(pixels),
                           palette_of(pixels)[0], band_signature(full)[0])
        with self._cache_lock:
            self._code_cache[key] = entry
            while len(self._code_cache) > 64:
                self._code_cache.popitem(last=False)
        return entry

    def blended_code(self, style: Style) -> Tensor:
        """One code for a style or a weighted list of styles (weights ≥ 0, normalised to sum 1)."""
        return self._blended(style).code

    def _blended(self, style: Style) -> StyleEntry:
        """The entry of a style or a blend, each style image looked up once."""
        if isinstance(style, (str, Image.Image)):
            return self._style_entry(style)
        if not style:
            raise ValueError("no style given")
        weights = torch.tensor([float(weight) for _, weight in style])
        if (weights < 0).any() or weights.sum() <= 0 or not torch.isfinite(weights).all():
            raise ValueError(f"style weights must be ≥ 0 with a positive sum, got {weights.tolist()}")
        weights = weights / weights.sum()
        entries = [self._style_entry(source) for source, _ in style]
        code = weights.to(entries[0].code) @ torch.stack([entry.code for entry in entries])
        chromas = [entry.chroma for entry in entries]
        chroma = None if None in chromas else float(sum(w * c for w, c in zip(weights.tolist(), chromas)))
        palettes = [entry.palette for entry in entries]
        palette = None if any(p is None for p in palettes) else blend_palettes(torch.stack(palettes), weights)
        signatures = [entry.bands for entry in entries]
        bands = None if any(b is None for b in signatures) else blend_signatures(signatures, weights)
        return StyleEntry(code, chroma, palette, bands)

    @torch.inference_mode()
    def blend_fraction(self, style: Style, strength: float) -> float:
        """The code-blend fraction at which `style` is run for `strength` (`stylegan.strength`: the result
        changes about `strength` of its full change); measured once per style on a probe image."""
        return self._blend_fraction(self._blended(style), strength)

    def _blend_fraction(self, entry: StyleEntry, strength: float) -> float:
        if strength <= 0 or strength >= 1:
            return strength
        key = entry.code.float().cpu().numpy().tobytes()
        with self._cache_lock:
            curve = self._curve_cache.get(key)
        if curve is None:  # torch's generator whatever the backend: one batch, ONNX graphs take one image
            curve = strength_curve(lambda probes, fractions: self.generator(
                probes.to(self.device, self.dtype, memory_format=torch.channels_last),
                self.generator.blend(entry.code[None], fractions.to(self.device)).to(self.dtype)))
            with self._cache_lock:
                self._curve_cache[key] = curve
                while len(self._curve_cache) > 64:
                    self._curve_cache.popitem(last=False)
        return blend_fraction(curve, strength)

    def _finished_tensor(self, pixels: Tensor, entry: StyleEntry, fraction: float, *,
                         texture_side: int | None = None, progress: ProgressCallback | None = None) -> Tensor:
        """The fast path's result at code-blend `fraction`: network, palette, bands, chroma limit."""
        code = self.generator.blend(entry.code[None], fraction).to(self.dtype)
        result = self.stylize_tensor(pixels, code, progress=progress, texture_side=texture_side,
                                     palette=entry.palette, bands=entry.bands, strength=fraction)
        if entry.chroma is not None:
            # No more colourful than the style (at strength 1): a guarantee on top of the palette
            # transfer, which matches the style's colours closely but not exactly.
            limit_chroma_(result, entry.chroma, fraction)
        return result

    def preset_grams(self, name: str, layers: Sequence[str] = REFINE_STYLE_LAYERS,
                     purpose: str = "quality='best'") -> dict[str, Tensor]:
        """A preset's stored Grams at `layers` (its style image at long side PRESET_GRAM_LONG_SIDE); a
        ValueError naming `purpose` if the model has none for it."""
        if name not in self._preset_codes:
            raise ValueError(f"unknown preset {name!r}; known presets: {sorted(self.presets)}")
        grams = load_preset_grams(self._preset_grams[name]) if name in self._preset_grams else {}
        if not set(layers) <= set(grams):
            raise ValueError(f"preset {name!r} has no Gram matrices at {list(layers)} stored with this model, and "
                             f"{purpose} needs them: upload the artwork as a style image, or use a model exported "
                             "with its presets' Grams (stylegan.presets.save_preset_grams)")
        return {layer: grams[layer] for layer in layers}

    def _style_grams(self, style: Style, purpose: str, long_side: int, layers: Sequence[str]) -> dict[str, Tensor]:
        """The Grams optimisation matches for a style or blend: each style image's read at `long_side`,
        each preset's stored ones (read at PRESET_GRAM_LONG_SIDE), mixed by weight."""
        sources = [(style, 1.0)] if isinstance(style, (str, Image.Image)) else list(style)
        grams = []
        for source, weight in sources:
            if isinstance(source, str):
                grams.append((self.preset_grams(source, layers, purpose), weight))
            elif isinstance(source, Image.Image):
                grams.append((image_grams(resize_long_side(to_tensor(source), long_side), self.vgg, layers), weight))
            else:
                raise TypeError(f"a style is a preset name or a PIL image, got {type(source).__name__}")
        return mix_grams(grams)

    # -- stylising ---------------------------------------------------------------------------
    def stylize(self, content: Image.Image, style: Style, strength: float = 0.8, *, preserve_color: bool = False,
                seed: int | None = None, max_long_side: int | None = None,
                progress: ProgressCallback | None = None, mode: str = "feedforward",
                steps: int | None = None, texture_side: int | None = DEFAULT_TEXTURE_SIDE,
                quality: str = "fast") -> Image.Image:
        """Stylise `content` (any mode) -> a PIL image of the same size and mode. The keywords are
        `StylizeSettings`' (see there).

        `quality="best"` refines the network's result by optimisation (`stylize_iter`, `steps` loss
        evaluations, default REFINE_STEPS: seconds on a GPU, about a minute on a CPU).

        `mode="optimize"` runs per-image optimisation (`stylegan.optimize`, `steps` loss
        evaluations, default OPTIMIZE_STEPS, minutes on a CPU) from the content instead of the network.
        Both match the style's Gram matrices: presets need theirs stored with the model (`preset_grams`).
        """
        settings = StylizeSettings(strength, preserve_color, max_long_side, texture_side, mode, quality, steps, seed)
        for result in self.run(content, style, settings, progress):
            pass
        return result

    def stylize_iter(self, content: Image.Image, style: Style, strength: float = 0.8, *, preserve_color: bool = False,
                     max_long_side: int | None = None, progress: ProgressCallback | None = None,
                     steps: int | None = None, texture_side: int | None = DEFAULT_TEXTURE_SIDE,
                     every: int = REFINE_PREVIEW_EVERY) -> Iterator[Image.Image]:
        """Best quality as it improves: yields the network's result, then the refined result every
        `every` loss evaluations, each finished like `stylize`'s; the last is `stylize(..., quality="best")`.
        Closing the iterator early stops the work. See `_refined`."""
        settings = StylizeSettings(strength, preserve_color, max_long_side, texture_side, quality="best", steps=steps)
        return self.run(content, style, settings, progress, every=every)

    def run(self, content: Image.Image, style: Style, settings: StylizeSettings,
            progress: ProgressCallback | None = None, *, every: int = REFINE_PREVIEW_EVERY) -> Iterator[Image.Image]:
        """One stylisation as `settings` describe it, its results as they come: best quality's network result
        and refined ones every `every` loss evaluations, otherwise the one result. The last is the result."""
        if settings.quality == "best":
            yield from self._refined(content, style, settings, progress, every)
        else:
            yield self._stylized(content, style, settings, progress)

    @torch.inference_mode()
    def _stylized(self, content: Image.Image, style: Style, settings: StylizeSettings,
                  progress: ProgressCallback | None) -> Image.Image:
        """The network's result (or optimisation's, with `mode="optimize"`)."""
        strength, max_long_side = settings.strength, settings.max_long_side
        pixels = to_tensor(content)
        if max_long_side is not None and max(pixels.shape[-2:]) > max_long_side:
            pixels = resize_long_side(pixels, max_long_side)
        if strength == 0:
            # Strength 0 is the content, by definition. The network at its identity code only comes near it
            # (the bundled model: a mean 4/255 off, up to 52/255), so it is not run.
            return _finished(pixels.clone(), pixels, content, False, max_long_side)
        if settings.mode == "optimize":
            targets = self._style_grams(style, "mode='optimize'", OPTIMIZE_STYLE_LONG_SIDE, OPTIMIZE_STYLE_LAYERS)
            result = optimize_stylize(pixels, targets, self.vgg, strength=strength, steps=settings.step_count,
                                      seed=settings.seed, progress=progress)
        else:
            entry = self._blended(style)
            result = self._finished_tensor(pixels, entry, self._blend_fraction(entry, strength),
                                           texture_side=settings.texture_side, progress=progress)
        return _finished(result, pixels, content, settings.preserve_color, max_long_side)

    @torch.inference_mode()
    def _refined(self, content: Image.Image, style: Style, settings: StylizeSettings,
                 progress: ProgressCallback | None, every: int) -> Iterator[Image.Image]:
        """Best quality: the network's result at the texture side (at most REFINE_MAX_SIDE² px when
        `texture_side` is None: see `refine_working_size`) is optimised against the content's VGG19
        features and the style images' Grams (`stylegan.optimize.refine`), `strength` weighting the style
        terms as it weights the network's code and the palette (0: nothing to refine, the network's result
        is all); then the full-resolution detail is restored, the chroma limited, as on the fast path."""
        strength, max_long_side, texture_side = settings.strength, settings.max_long_side, settings.texture_side
        pixels = to_tensor(content)
        if max_long_side is not None and max(pixels.shape[-2:]) > max_long_side:
            pixels = resize_long_side(pixels, max_long_side)
        if strength == 0:  # the content (see `_stylized`): nothing to run or refine
            yield _finished(pixels.clone(), pixels, content, False, max_long_side)
            return
        entry = self._blended(style)
        strength = self._blend_fraction(entry, strength)  # the style terms weighted as the code is blended
        small = resize_to_area(pixels, texture_side or REFINE_MAX_SIDE)
        # The style read at the picture's scale: its texture comes out as large relative to the picture
        # as it is in the style image (at the evaluation's 512 px, what its Gram metric compares).
        style_side = max(max(small.shape[-2:]), MIN_REFINE_STYLE_SIDE)
        targets = self._style_grams(style, "quality='best'", style_side, REFINE_STYLE_LAYERS)
        code = self.generator.blend(entry.code[None], strength).to(self.dtype)
        start = self.stylize_tensor(small, code, palette=entry.palette, bands=entry.bands, strength=strength)

        def finished(stylized: Tensor) -> Image.Image:
            result = upscale_with_detail(stylized, small, pixels) if small is not pixels else stylized.clone()
            if entry.chroma is not None:
                limit_chroma_(result, entry.chroma, strength)
            return _finished(result, pixels, content, settings.preserve_color, max_long_side)

        yield finished(start)
        for _, refined in refine(start, small, targets, self.vgg, strength=strength, steps=settings.step_count,
                                 palette=entry.palette, every=every, progress=progress):
            yield finished(refined)

    def stylize_tensor(self, pixels: Tensor, code: Tensor, *, progress: ProgressCallback | None = None,
                       tile_size: int | None = None, texture_side: int | None = None,
                       palette: Tensor | None = None, bands: Tensor | None = None, strength: float = 1.0) -> Tensor:
        """(1, 3, H, W) in [0, 1] on the CPU -> stylised (1, 3, H, W) float32 on the CPU.

        `texture_side`: run the network on the image shrunk to about that² pixels and restore the
        detail (None: at full resolution, tiled above `whole_image_pixels` or at `tile_size`).
        `palette` (`stylegan.palette.palette_of` the style): the network's result is moved onto the style's
        colour distribution at strength 1 and, below it, onto the 1-D Wasserstein barycentre of the content's
        and the style's (their quantile functions averaged along each basis's axes, `strength` of the way: the
        displacement interpolation, McCann 1997), so that the colours go straight from the content's to the
        style's whatever tint the network gives at a partial code; `bands` (`stylegan.bands.band_signature`
        the style): then its detail at every scale onto the style's."""
        height, width = pixels.shape[-2:]
        if texture_side is not None and height * width > texture_side ** 2:
            small = resize_to_area(pixels, texture_side)
            stylized = self.stylize_tensor(small, code, palette=palette, bands=bands, strength=strength)
            if progress:
                progress(0.9, "restoring full-resolution detail")
            result = upscale_with_detail(stylized, small, pixels)
            if progress:
                progress(1.0, "done")
            return result
        if tile_size is None:  # whole images up to `whole_image_pixels`, tiles beyond
            whole, tile_size = height * width <= self.whole_image_pixels, self.tile_size
        else:
            whole = tile_size >= max(height, width)
        if whole:
            result = self._run(pixels, code, None)
        else:
            result = self._tiled(pixels, code, self._measure_stats(pixels, code), tile_size, progress)
        if palette is not None and strength > 0:
            if strength < 1:  # the way from the content's colours to the style's: their barycentre at strength
                palette = blend_palettes(torch.stack([palette_of(pixels)[0], palette.float()]),
                                         torch.tensor([1 - strength, strength]))
            _transfer_palette_(result, palette)
        if bands is not None and strength > 0:
            result = transfer_bands(result, bands, strength)
        if progress and whole:
            progress(1.0, "done")
        return result

    def _run(self, pixels: Tensor, code: Tensor, stats: NormStats | None) -> Tensor:
        height, width = pixels.shape[-2:]
        # Channels-last like the weights: otherwise the whole network runs in the slower NCHW kernels.
        padded = pad_to_multiple(pixels, 4, min_size=MIN_SIDE).to(self.device, self.dtype,
                                                                   memory_format=torch.channels_last)
        output = (self.generator if self._onnx is None else self._onnx)(padded, code, stats)
        return output[..., :height, :width].float().cpu()

    def _measure_stats(self, pixels: Tensor, code: Tensor) -> NormStats:
        small = resize_long_side(pixels, min(self.stats_long_side, max(pixels.shape[-2:])))
        small = pad_to_multiple(small, 4, min_size=MIN_SIDE)
        return self.generator.measure_norm_stats(small.to(self.device, self.dtype), code)

    def _tiled(self, pixels: Tensor, code: Tensor, stats: NormStats, tile_size: int,
               progress: ProgressCallback | None) -> Tensor:
        height, width = pixels.shape[-2:]
        context, blend = self.tile_context, self.tile_blend
        stride = tile_size - 2 * context - blend
        if stride < tile_size // 4:
            raise ValueError(f"tile_size {tile_size} is too small for {context} px of context")
        tops = _tile_starts(height, tile_size, stride)
        lefts = _tile_starts(width, tile_size, stride)
        output = np.zeros((3, height, width), np.float32)
        weight_sum = np.zeros((height, width), np.float32)
        total, done = len(tops) * len(lefts), 0
        for top in tops:
            for left in lefts:
                bottom = height if top == tops[-1] else top + tile_size
                right = width if left == lefts[-1] else left + tile_size
                tile = self._run(pixels[..., top:bottom, left:right], code, stats)[0].numpy()
                weights = np.outer(_ramp(bottom - top, context, blend, top > 0, bottom < height),
                                   _ramp(right - left, context, blend, left > 0, right < width))
                output[:, top:bottom, left:right] += tile * weights
                weight_sum[top:bottom, left:right] += weights
                done += 1
                if progress:
                    progress(done / total, f"tile {done}/{total}")
        return torch.from_numpy(output / weight_sum)[None]


def _transfer_palette_(result: Tensor, palette: Tensor) -> None:
    """Move (1, 3, H, W) `result` in place onto `palette`, a band of rows at a time."""
    table = fit_lut(result, palette[None])
    for top in range(0, result.shape[-2], PALETTE_BAND_ROWS):
        rows = result[:, :, top:top + PALETTE_BAND_ROWS]
        rows.copy_(apply_lut(rows, table))


def _finished(result: Tensor, pixels: Tensor, content: Image.Image, preserve_color: bool,
              max_long_side: int | None) -> Image.Image:
    """A stylised (1, 3, H, W) as the caller's image: colours kept if asked, the content's mode and size."""
    if preserve_color:
        result = preserve_colors(result, pixels)
    output = to_pil(result, like=content)
    return output if output.size == content.size or max_long_side else output.resize(content.size)


def refine_working_size(size: tuple[int, int], max_long_side: int | None = None,
                        texture_side: int | None = DEFAULT_TEXTURE_SIDE) -> tuple[int, int]:
    """(width, height) at which best quality optimises an image of `size` (recorded in provenance)."""
    pixels = torch.empty(1, 1, size[1], size[0], device="meta")
    if max_long_side is not None and max(size) > max_long_side:
        pixels = resize_long_side(pixels, max_long_side)
    height, width = resize_to_area(pixels, texture_side or REFINE_MAX_SIDE).shape[-2:]
    return width, height


def _tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile offsets, multiples of 4 so every tile shares the whole image's downsampling grid."""
    if length <= tile:
        return [0]
    stride -= stride % 4
    starts = list(range(0, length - tile, stride))
    last = (length - tile) // 4 * 4
    return starts + [last] if last > starts[-1] else starts


def _ramp(length: int, context: int, blend: int, fade_in: bool, fade_out: bool) -> np.ndarray:
    """1-D tile weights: ~0 over `context` px at a side shared with a neighbour, then a linear
    ramp over `blend` px, then 1. Sides on the image border keep weight 1."""
    distance = np.arange(length, dtype=np.float32)
    weights = np.ones(length, np.float32)
    if fade_in:
        weights = np.minimum(weights, (distance - context + 0.5) / blend)
    if fade_out:
        weights = np.minimum(weights, (length - 1 - distance - context + 0.5) / blend)
    return np.clip(weights, 1e-6, 1.0)
