"""What a person looks at during training: probe sample grids and loss curves."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image
from torch import Tensor

from stylegan.bands import band_signature, transfer_bands
from stylegan.generator import Generator
from stylegan.images import open_image, pad_to_multiple, resize_long_side, to_pil, to_tensor
from stylegan.palette import palette_of, transfer_palette

if TYPE_CHECKING:
    from .batches import StyleBank
    from .config import TrainConfig

PROBE_LONG_SIDE = 256


@dataclass
class ProbeSet:
    """Held-out contents × a few training styles, rendered the same way at every sample step."""
    contents: list[Tensor]  # (1, 3, H, W), H and W multiples of 4
    style_names: list[str]
    style_thumbnails: list[Tensor]
    style_statistics: Tensor  # (S, D)
    style_palettes: Tensor  # (S, K, 3, Q), so the grid shows what `Stylizer` gives, colours included
    style_bands: Tensor  # (S, L, W) band signatures, likewise (`stylegan.bands`)

    @classmethod
    def build(cls, content_paths: list[Path], bank: StyleBank, config: TrainConfig) -> ProbeSet:
        wanted = list(config.probe_styles) or bank.names[:4]
        unknown = set(wanted) - set(bank.names)
        if unknown:
            raise ValueError(f"probe_styles not among the styles: {sorted(unknown)}")
        indices = [bank.names.index(name) for name in wanted]
        contents = [pad_to_multiple(resize_long_side(to_tensor(open_image(path)), PROBE_LONG_SIDE), 4)
                    for path in content_paths]
        styles = [bank.images[i][None].float().cpu() / 255 for i in indices]
        thumbnails = [resize_long_side(style, PROBE_LONG_SIDE) for style in styles]
        palettes = torch.cat([palette_of(resize_long_side(style, config.generator.style_image_size)) for style in styles])
        bands = torch.cat([band_signature(style) for style in styles])
        return cls(contents, wanted, thumbnails, bank.full_statistics[indices].cpu(), palettes, bands)

    @torch.no_grad()
    def render(self, generator: Generator, path: Path, device: torch.device) -> None:
        """A grid: first row the style images, then per content: content, then each style (network, palette,
        bands, as `Stylizer` finishes a result)."""
        codes = generator.encode_style(self.style_statistics.to(device))
        rows = [[None, *self.style_thumbnails]]
        for content in self.contents:
            content = content.to(device)
            rows.append([content, *(transfer_bands(transfer_palette(generator(content, code[None]), palette[None]), bands)
                                    for code, palette, bands in zip(codes, self.style_palettes, self.style_bands))])
        cell = PROBE_LONG_SIDE
        grid = Image.new("RGB", (cell * len(rows[0]), cell * len(rows)), "white")
        for r, row in enumerate(rows):
            for c, image in enumerate(row):
                if image is not None:
                    grid.paste(to_pil(image.cpu()), (c * cell, r * cell))
        path.parent.mkdir(parents=True, exist_ok=True)
        grid.save(path)


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_losses(metrics_path: Path, out_path: Path) -> None:
    """Loss curves (log scale) from metrics.jsonl."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    if not records:
        return
    keys = [k for k in ("g_total", "content", "style", "contrastive", "network_flattening", "strength_linearity",
                        "g_adv", "d_loss", "identity") if k in records[-1]]
    figure, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3))
    for axis, key in zip(axes if len(keys) > 1 else [axes], keys):
        points = [(r["step"], r[key]) for r in records if key in r and r[key] > 0]
        if points:
            axis.plot(*zip(*points), linewidth=0.8)
            axis.set_yscale("log")
        axis.set_title(key)
        axis.set_xlabel("step")
    figure.tight_layout()
    figure.savefig(out_path, dpi=80)
    plt.close(figure)
