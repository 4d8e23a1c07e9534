"""Named style presets: style codes and palettes (safetensors) with attribution (JSON), stored with the model,
and optionally each preset's style image, downsized (`preset_styles/<name>.jpg`): best quality
(`Stylizer.stylize(..., quality="best")`) matches the style image's Gram matrices, which a code cannot give back."""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image
from safetensors.torch import load_file, save_file
from torch import Tensor

from .images import resize_long_side, to_pil, to_tensor

PRESET_CODES_FILE = "presets.safetensors"
PRESET_INFO_FILE = "presets.json"
PRESET_PALETTES_FILE = "palettes.safetensors"  # each preset's `stylegan.palette.palette_of` its style image
PRESET_STYLES_FOLDER = "preset_styles"  # <name>.jpg: each preset's style image, long side PRESET_STYLE_LONG_SIDE
PRESET_STYLE_LONG_SIDE = 512  # the scale at which best quality and the evaluation read a style's Grams
PRESET_STYLE_QUALITY = 95  # JPEG; the Grams of a q95 copy differ from the original's by well under 1 %


@dataclass(frozen=True)
class Preset:
    name: str  # identifier, e.g. "hokusai_great_wave_off_kanagawa"
    title: str
    artist: str = ""
    year: str = ""
    source: str = ""
    license: str = ""
    chroma: float | None = None  # the style image's `stylegan.images.mean_chroma` (None: not measured)

    @property
    def label(self) -> str:
        parts = [self.title, self.artist, self.year]
        return ", ".join(part for part in parts if part)


def save_presets(directory: str | Path, presets: list[Preset], codes: dict[str, Tensor],
                 palettes: dict[str, Tensor]) -> None:
    for kind, values in (("style code", codes), ("palette", palettes)):
        missing = {preset.name for preset in presets} - set(values)
        if missing:
            raise ValueError(f"presets without a {kind}: {sorted(missing)}")
    directory = Path(directory)
    for values, file in ((codes, PRESET_CODES_FILE), (palettes, PRESET_PALETTES_FILE)):
        save_file({preset.name: values[preset.name].detach().float().cpu().contiguous() for preset in presets},
                  directory / file)
    (directory / PRESET_INFO_FILE).write_text(
        json.dumps([asdict(preset) for preset in presets], indent=2, ensure_ascii=False) + "\n")


def load_presets(directory: str | Path) -> tuple[dict[str, Preset], dict[str, Tensor], dict[str, Tensor]]:
    """(presets, codes, palettes) of a model folder (all {} when it has none). Every preset must have a
    code; palettes may be missing altogether (models exported before palettes), then results keep
    the network's own colours."""
    directory = Path(directory)
    if not (directory / PRESET_INFO_FILE).exists():
        return {}, {}, {}
    presets = {entry["name"]: Preset(**entry) for entry in json.loads((directory / PRESET_INFO_FILE).read_text())}
    codes = load_file(directory / PRESET_CODES_FILE)
    palettes = load_file(directory / PRESET_PALETTES_FILE) if (directory / PRESET_PALETTES_FILE).exists() else {}
    for file, values in ((PRESET_CODES_FILE, codes), (PRESET_PALETTES_FILE, palettes or presets)):
        if set(values) != set(presets):
            raise ValueError(f"{directory}: presets.json and {file} disagree: {sorted(set(values) ^ set(presets))}")
    return presets, codes, palettes


def save_preset_styles(directory: str | Path, images: Mapping[str, Image.Image]) -> None:
    """Store each preset's style image (RGB, shrunk to long side PRESET_STYLE_LONG_SIDE if larger) as
    `preset_styles/<name>.jpg` in a model folder; about 50-150 kB a preset."""
    folder = Path(directory) / PRESET_STYLES_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in images.items():
        if not name or Path(name).name != name or name.startswith("."):
            raise ValueError(f"a preset name must be a plain file name, got {name!r}")
        pixels = to_tensor(image.convert("RGB"))
        if max(pixels.shape[-2:]) > PRESET_STYLE_LONG_SIDE:
            pixels = resize_long_side(pixels, PRESET_STYLE_LONG_SIDE)
        to_pil(pixels).save(folder / f"{name}.jpg", format="JPEG", quality=PRESET_STYLE_QUALITY)


def preset_style_files(directory: str | Path, presets: Mapping[str, Preset]) -> dict[str, Path]:
    """The stored style image of each preset that has one ({} for models saved without them). A file
    for a name that is not a preset means the folder is inconsistent, and is refused."""
    folder = Path(directory) / PRESET_STYLES_FOLDER
    files = {path.stem: path for path in sorted(folder.glob("*.jpg"))} if folder.is_dir() else {}
    unknown = sorted(set(files) - set(presets))
    if unknown:
        raise ValueError(f"{folder}: style images of unknown presets: {unknown}")
    return files
