"""Named style presets: style codes and palettes (safetensors) with attribution (JSON), stored with the model."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import Tensor

PRESET_CODES_FILE = "presets.safetensors"
PRESET_INFO_FILE = "presets.json"
PRESET_PALETTES_FILE = "palettes.safetensors"  # each preset's `stylegan.palette.palette_of` its style image


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
