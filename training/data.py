"""Image folders -> random training batches. All randomness comes from one torch.Generator."""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from stylegan.images import IMAGE_SUFFIXES, ImageError, open_image, resize_long_side, to_tensor


@dataclass
class Folder:
    """Images read from a folder (recursively) at a fixed long side, plus what was refused."""
    paths: list[Path]
    images: list[Tensor]  # (3, H, W) each, uint8 to keep memory small
    skipped: list[str]  # "path: reason"


def image_paths(directory: str | Path) -> list[Path]:
    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"{directory}: not a directory")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def training_paths(directories: Iterable[str | Path], held_out: Iterable[str] = ()) -> list[Path]:
    """Images under each directory, without the files named in `held_out` (the validation split)."""
    held_out = set(held_out)
    return [path for directory in directories for path in image_paths(directory) if path.name not in held_out]


def read_folder(directory: str | Path, long_side: int, paths: list[Path] | None = None) -> Folder:
    """Read every image under `directory` at `long_side`; unreadable files are skipped and counted."""
    kept, images, skipped = [], [], []
    for path in paths if paths is not None else image_paths(directory):
        try:
            image = to_tensor(open_image(path))
        except ImageError as error:
            warnings.warn(f"skipping {error}", stacklevel=2)
            skipped.append(str(error))
            continue
        image = resize_long_side(image, long_side)[0]
        kept.append(path)
        images.append((image * 255).round().to(torch.uint8))
    if not images:
        raise ValueError(f"{directory}: no readable images ({len(skipped)} skipped)")
    return Folder(kept, images, skipped)


def random_crop(image: Tensor, size: int, scale: float, generator: torch.Generator) -> Tensor:
    """(3, H, W) uint8 -> (3, size, size) float in [0, 1]: rescale, random crop, random flip."""
    height, width = image.shape[-2:]
    scale = max(scale, size / min(height, width))  # never crop beyond the image
    resized = F.interpolate(image[None].float() / 255, size=(max(size, round(height * scale)),
                                                            max(size, round(width * scale))),
                            mode="bilinear", align_corners=False, antialias=scale < 1)[0]
    top = int(torch.randint(resized.shape[1] - size + 1, (1,), generator=generator))
    left = int(torch.randint(resized.shape[2] - size + 1, (1,), generator=generator))
    crop = resized[:, top:top + size, left:left + size]
    if torch.rand((), generator=generator) < 0.5:
        crop = crop.flip(-1)
    return crop.clamp(0, 1)


def random_scale(jitter: float, generator: torch.Generator) -> float:
    return float(1 - jitter + 2 * jitter * torch.rand((), generator=generator))


def hue_saturation_matrix(angle: float, saturation: float) -> Tensor:
    """(3, 3) RGB map: rotate hues by `angle` radians about the grey axis, then scale the distance
    from grey by `saturation` (Rodrigues' rotation; grey stays grey, so does the mean brightness)."""
    grey = torch.full((3, 3), 1 / 3)  # projection onto the grey axis
    cross = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) / math.sqrt(3)
    rotation = math.cos(angle) * (torch.eye(3) - grey) + math.sin(angle) * cross
    return grey + saturation * rotation
