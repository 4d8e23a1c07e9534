"""Named style presets: style codes and palettes (safetensors) with attribution (JSON), stored with the model,
and optionally each preset's band signature (`bands.safetensors`, `stylegan.bands`) and style Gram matrices
(`preset_grams/<name>.safetensors`): best quality (`Stylizer.stylize(..., quality="best")`) matches a style's
Grams, which a code cannot give back. A model folder carries statistics of its training styles, never the images."""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

PRESET_CODES_FILE = "presets.safetensors"
PRESET_INFO_FILE = "presets.json"
PRESET_PALETTES_FILE = "palettes.safetensors"  # each preset's `stylegan.palette.palette_of` its style image
PRESET_BANDS_FILE = "bands.safetensors"  # each preset's `stylegan.bands.band_signature` its style image
PRESET_GRAMS_FOLDER = "preset_grams"  # <name>.safetensors: {layer: upper triangle of the (C, C) Gram}
PRESET_GRAM_LONG_SIDE = 512  # the style image's long side for its stored Grams: the evaluation's scale
# bfloat16 keeps the Grams' range (caffe-scale VGG19 Grams reach 1e5) at half the bytes: ~350 kB a preset
# for relu1_1-relu4_1; the rounding (2⁻⁸ relative) is far below the Gram distances between styles.
PRESET_GRAM_DTYPE = torch.bfloat16


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


def save_preset_bands(directory: str | Path, signatures: Mapping[str, Tensor]) -> None:
    """Store each preset's band signature ({name: `stylegan.bands.band_signature` of its image}) in PRESET_BANDS_FILE."""
    save_file({name: signature.detach().float().cpu().contiguous() for name, signature in signatures.items()},
              Path(directory) / PRESET_BANDS_FILE)


def load_preset_bands(directory: str | Path, presets: Mapping[str, Preset]) -> dict[str, Tensor]:
    """The stored band signatures ({} for models saved without them: results then keep the network's
    detail). A signature for a name that is not a preset means the folder is inconsistent, and is refused."""
    path = Path(directory) / PRESET_BANDS_FILE
    signatures = load_file(path) if path.exists() else {}
    unknown = sorted(set(signatures) - set(presets))
    if unknown:
        raise ValueError(f"{path}: band signatures of unknown presets: {unknown}")
    return signatures


def save_preset_grams(directory: str | Path, grams: Mapping[str, Mapping[str, Tensor]]) -> None:
    """Store each preset's Grams ({name: {layer: (C, C) symmetric}}, e.g. `stylegan.optimize.image_grams`
    of its style image at long side PRESET_GRAM_LONG_SIDE) as `preset_grams/<name>.safetensors`."""
    folder = Path(directory) / PRESET_GRAMS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, layers in grams.items():
        if not name or Path(name).name != name or name.startswith("."):
            raise ValueError(f"a preset name must be a plain file name, got {name!r}")
        triangles = {}
        for layer, gram in layers.items():
            if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
                raise ValueError(f"preset {name!r}, {layer}: a Gram is (C, C), got {tuple(gram.shape)}")
            rows, columns = torch.triu_indices(*gram.shape)
            triangles[layer] = gram.detach().float().cpu()[rows, columns].to(PRESET_GRAM_DTYPE).contiguous()
        save_file(triangles, folder / f"{name}.safetensors")


def load_preset_grams(path: str | Path) -> dict[str, Tensor]:
    """{layer: (C, C) float32 symmetric Gram} from a file `save_preset_grams` wrote."""
    grams = {}
    for layer, triangle in load_file(path).items():
        channels = round(((8 * triangle.numel() + 1) ** 0.5 - 1) / 2)  # numel = C (C + 1) / 2
        if triangle.ndim != 1 or channels * (channels + 1) // 2 != triangle.numel():
            raise ValueError(f"{path}: {layer} is not the upper triangle of a square matrix")
        rows, columns = torch.triu_indices(channels, channels)
        gram = torch.zeros(channels, channels)
        gram[rows, columns] = triangle.float()
        grams[layer] = gram + gram.triu(1).T
    return grams


def preset_gram_files(directory: str | Path, presets: Mapping[str, Preset]) -> dict[str, Path]:
    """The stored Grams of each preset that has them ({} for models saved without them). A file for a
    name that is not a preset means the folder is inconsistent, and is refused."""
    folder = Path(directory) / PRESET_GRAMS_FOLDER
    files = {path.stem: path for path in sorted(folder.glob("*.safetensors"))} if folder.is_dir() else {}
    unknown = sorted(set(files) - set(presets))
    if unknown:
        raise ValueError(f"{folder}: Grams of unknown presets: {unknown}")
    return files
