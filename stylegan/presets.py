"""Named style presets: style codes (safetensors) with attribution (JSON), stored with the model."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import Tensor

PRESET_CODES_FILE = "presets.safetensors"
PRESET_INFO_FILE = "presets.json"


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


def save_presets(directory: str | Path, presets: list[Preset], codes: dict[str, Tensor]) -> None:
    missing = {preset.name for preset in presets} - set(codes)
    if missing:
        raise ValueError(f"presets without a style code: {sorted(missing)}")
    directory = Path(directory)
    save_file({preset.name: codes[preset.name].detach().float().cpu().contiguous() for preset in presets},
              directory / PRESET_CODES_FILE)
    (directory / PRESET_INFO_FILE).write_text(
        json.dumps([asdict(preset) for preset in presets], indent=2, ensure_ascii=False) + "\n")


def load_presets(directory: str | Path) -> tuple[dict[str, Preset], dict[str, Tensor]]:
    """Presets in a model folder ({} when it has none); every preset must have a code."""
    directory = Path(directory)
    if not (directory / PRESET_INFO_FILE).exists():
        return {}, {}
    presets = {entry["name"]: Preset(**entry) for entry in json.loads((directory / PRESET_INFO_FILE).read_text())}
    codes = load_file(directory / PRESET_CODES_FILE)
    if set(codes) != set(presets):
        raise ValueError(f"{directory}: presets.json and {PRESET_CODES_FILE} disagree: "
                         f"{sorted(set(codes) ^ set(presets))}")
    return presets, codes
