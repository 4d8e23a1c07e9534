"""Small RGB renderings: archive thumbnails, display previews and model-rendered preset thumbnails.

Preset thumbnails are the model's own rendering of each preset on one built-in content image
(generated here, so no image file or extra dependency is needed), cached on disk per model
weights hash: a different model renders its own set.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from stylegan.files import write_file
from stylegan.images import resize_long_side, to_pil, to_tensor

if TYPE_CHECKING:
    from stylegan.inference import Stylizer

PRESET_THUMBNAIL_SIDE = 128


def downscale_rgb(image: Image.Image, long_side: int) -> Image.Image:
    """An 8-bit RGB copy of `image` (any mode) whose long side is at most `long_side` px."""
    pixels = to_tensor(image)
    if max(pixels.shape[-2:]) > long_side:
        pixels = resize_long_side(pixels, long_side)
    return to_pil(pixels)


def sample_content(width: int = PRESET_THUMBNAIL_SIDE, height: int = PRESET_THUMBNAIL_SIDE * 3 // 4) -> Image.Image:
    """A seeded synthetic landscape (sky, sun, hills, a house, grain): the presets' test card."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / width, y / height
    sky = np.stack([0.45 + 0.4 * v, 0.65 + 0.25 * v, 0.95 - 0.1 * v], axis=-1)
    image = sky
    sun = (u - 0.75) ** 2 + ((v - 0.25) * height / width) ** 2 < 0.008
    image[sun] = (1.0, 0.85, 0.35)
    far_hill = v > 0.55 + 0.08 * np.sin(6.0 * u + 1.0)
    image[far_hill] = (0.35, 0.5, 0.4)
    near_hill = v > 0.7 + 0.06 * np.sin(9.0 * u)
    image[near_hill] = np.stack([0.3 + 0.2 * u, 0.55 - 0.1 * v, 0.2 + 0.0 * u], axis=-1)[near_hill]
    wall = (u > 0.18) & (u < 0.38) & (v > 0.5) & (v < 0.78)
    image[wall] = (0.85, 0.8, 0.7)
    roof = (v <= 0.5) & (v > 0.36) & (np.abs(u - 0.28) < (v - 0.36) * 0.85)
    image[roof] = (0.6, 0.2, 0.15)
    window = (((u > 0.22) & (u < 0.26)) | ((u > 0.3) & (u < 0.34))) & (v > 0.57) & (v < 0.65)
    image[window] = (0.15, 0.2, 0.3)
    image = image + rng.normal(0.0, 0.03, image.shape).astype(np.float32)
    return Image.fromarray((np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), "RGB")


def preset_thumbnail_paths(stylizer: Stylizer, directory: str | os.PathLike) -> dict[str, Path]:
    """Where each preset's thumbnail for this model lives (rendered or not)."""
    folder = Path(directory) / stylizer.model_info.weights_sha256[:16]
    return {name: folder / f"{name}.jpg" for name in stylizer.presets}


def render_preset_thumbnails(stylizer: Stylizer, directory: str | os.PathLike) -> dict[str, Path]:
    """Render the presets missing from the cache (atomically, so readers never see half a file)."""
    paths = preset_thumbnail_paths(stylizer, directory)
    missing = [name for name, path in paths.items() if not path.exists()]
    if missing:
        content = sample_content()
        next(iter(paths.values())).parent.mkdir(parents=True, exist_ok=True)
        for name in missing:
            rendered = stylizer.stylize(content, name, strength=1.0)
            write_file(paths[name], functools.partial(rendered.save, format="JPEG", quality=90))
    return paths
