"""Export the EMA generator the Hugging Face way: config.json, model.safetensors, presets, card."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image

from stylegan.bands import band_signature
from stylegan.features import VGG19Features
from stylegan.images import mean_chroma, resize_long_side, to_tensor
from stylegan.optimize import REFINE_STYLE_LAYERS, image_grams
from stylegan.palette import palette_of
from stylegan.presets import PRESET_GRAM_LONG_SIDE, Preset, save_preset_bands, save_preset_grams, save_presets

from .config import TrainConfig
from .trainer import TRAINING_RECORD_FILE

if TYPE_CHECKING:
    from .trainer import TrainResult


def read_attribution(sources_md: Path) -> dict[str, Preset]:
    """Preset attribution from a SOURCES.md table: | `file` | title - artist, year | source | licence | ..."""
    presets: dict[str, Preset] = {}
    if not sources_md.exists():
        return presets
    for line in sources_md.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([^`]+)\.\w+`", cells[0]) if len(cells) >= 4 else None
        if not match:
            continue
        name = match.group(1)
        title, _, byline = cells[1].partition(" - ")
        artist, _, year = byline.rpartition(", ")
        if not re.search(r"\d", year):
            artist, year = byline, ""
        presets[name] = Preset(name=name, title=title.strip(), artist=artist.strip(), year=year.strip(),
                               source=cells[2].replace("`", ""), license=cells[3])
    return presets


def preset_grams(images: dict[str, torch.Tensor], vgg: VGG19Features) -> dict[str, dict[str, torch.Tensor]]:
    """{name: Grams at REFINE_STYLE_LAYERS} of (3, H, W) uint8 style images read at long side PRESET_GRAM_LONG_SIDE."""
    device = next(vgg.parameters()).device
    return {name: {layer: gram.cpu() for layer, gram in image_grams(
                resize_long_side(image[None].float().to(device) / 255, PRESET_GRAM_LONG_SIDE), vgg,
                REFINE_STYLE_LAYERS).items()}
            for name, image in images.items()}


def preset_bands(paths: dict[str, Path]) -> dict[str, torch.Tensor]:
    """{name: band signature} of each style image file, read at its own resolution (`stylegan.bands`)."""
    signatures = {}
    for name, path in paths.items():
        with Image.open(path) as image:
            signatures[name] = band_signature(to_tensor(image.convert("RGB")))[0]
    return signatures


def export_model(result: TrainResult, config: TrainConfig, run_dir: Path, *, sources: Path | None = None,
                 out_dir: Path | None = None, preset_dir: Path | None = None,
                 vgg: VGG19Features | None = None) -> Path:
    """Write the EMA generator, presets and a model card to `run_dir/export`. The presets are the
    training styles under `preset_dir` (default: all of them), each with its code, palette, chroma,
    band signature and Grams (best quality's targets, measured with `vgg`, default the pretrained VGG19)."""
    out_dir = out_dir or run_dir / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    generator = result.export_generator.cpu().eval()
    generator.save_pretrained(out_dir)
    attribution = read_attribution(sources) if sources else {}
    bank = result.style_bank
    chosen = [index for index, path in enumerate(bank.paths)
              if preset_dir is None or Path(preset_dir).resolve() in path.resolve().parents]
    names = [bank.names[index] for index in chosen]
    with torch.no_grad():
        codes = generator.encode_style(bank.full_statistics[chosen].cpu())
    size = generator.config.style_image_size
    pixels = [resize_long_side(bank.images[index][None].float().cpu() / 255, size) for index in chosen]
    presets = [dataclasses.replace(attribution.get(name, Preset(name=name, title=name.replace("_", " ").title())),
                                   chroma=round(mean_chroma(image), 5))
               for name, image in zip(names, pixels)]
    save_presets(out_dir, presets, dict(zip(names, codes)), {name: palette_of(image)[0] for name, image in zip(names, pixels)})
    save_preset_bands(out_dir, preset_bands({name: bank.paths[index] for name, index in zip(names, chosen)}))
    save_preset_grams(out_dir, preset_grams({name: bank.images[index] for name, index in zip(names, chosen)},
                                            vgg or VGG19Features.pretrained()))
    record = {"steps": result.step, "wall_seconds": round(result.wall_seconds, 1), "device": result.device,
              "crop_size": config.crop_size, "batch_size": config.batch_size,
              "initialized_from": result.initialized_from}
    (out_dir / TRAINING_RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    from .model_card import write_model_card
    write_model_card(out_dir, result, config, run_dir, presets)
    return out_dir
