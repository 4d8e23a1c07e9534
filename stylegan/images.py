"""The pixel contract: the one place that converts between files, PIL images and tensors.

Working pixels are float32 RGB tensors in [0, 1], shaped (B, 3, H, W). `open_image` reads
any supported file without modifying it and raises `ImageError` (a `ValueError`) naming the
file and the reason for anything it refuses. `to_tensor` / `to_pil` convert to and from the
working form; `to_pil(..., like=original)` gives the result back in the original's mode
(grayscale stays grayscale, alpha is carried over).
"""
from __future__ import annotations

import io
import os
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor

MAX_PIXELS = 20_000 * 20_000 // 2  # 200 megapixels: beyond any scan we expect
MAX_SIDE = 30_000


class ImageError(ValueError):
    """An input that is not a readable image, named with the reason."""


ImageSource = str | os.PathLike | bytes | BinaryIO


def _describe(source: ImageSource, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return getattr(source, "name", "<bytes>")


def open_image(source: ImageSource, *, name: str | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode `source` fully (first frame / page), apply EXIF orientation, keep the colour mode."""
    label = _describe(source, name)
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as handle:
                data = handle.read()
        elif isinstance(source, bytes):
            data = source
        else:
            data = source.read()
    except OSError as error:
        raise ImageError(f"{label}: cannot be read ({error.strerror or error})") from error
    if not data:
        raise ImageError(f"{label}: the file is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels or max(width, height) > MAX_SIDE:
                raise ImageError(f"{label}: {width}×{height} pixels is over the limit of "
                                 f"{max_pixels:,} pixels ({MAX_SIDE} px a side)")
            image.seek(0)
            image.load()
            oriented = ImageOps.exif_transpose(image)
            return oriented.copy() if oriented is image else oriented
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageError(f"{label}: refused as a decompression bomb ({error})") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{label}: not a readable image ({error})") from error


def to_tensor(image: Image.Image) -> Tensor:
    """PIL image of any mode -> (1, 3, H, W) float32 RGB in [0, 1]."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float32) / 65535.0
        array = np.repeat(array[..., None], 3, axis=2)
    else:
        rgb = image.convert("RGBA").convert("RGB") if image.mode in ("P", "LA", "PA") else image.convert("RGB")
        array = np.asarray(rgb, dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].clamp(0, 1)


def to_pil(images: Tensor, like: Image.Image | None = None) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) in [0, 1] -> PIL; with `like`, in `like`'s mode with its alpha."""
    rgb = images.detach().float().reshape(3, *images.shape[-2:]).clamp(0, 1)
    array = (rgb.permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    result = Image.fromarray(array, "RGB")
    if like is None:
        return result
    if like.mode in ("I;16", "I;16B", "I;16L", "I"):
        gray = rgb.mul(torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0)
        return Image.fromarray((gray.cpu().numpy() * 65535.0 + 0.5).astype(np.uint16))
    if like.mode in ("L", "1"):
        return result.convert("L")
    if "A" in like.mode or (like.mode == "P" and "transparency" in like.info):
        alpha = like.convert("RGBA").getchannel("A")
        base = result.convert("L") if like.mode == "LA" else result
        base.putalpha(alpha.resize(base.size))
        return base
    return result


def resize_long_side(images: Tensor, size: int) -> Tensor:
    """Resize (B, 3, H, W) so the long side is `size` px (antialiased when shrinking)."""
    height, width = images.shape[-2:]
    scale = size / max(height, width)
    target = (max(1, round(height * scale)), max(1, round(width * scale)))
    if target == (height, width):
        return images
    return F.interpolate(images, size=target, mode="bilinear", align_corners=False,
                         antialias=scale < 1).clamp(0, 1)


def pad_to_multiple(images: Tensor, multiple: int) -> Tensor:
    """Reflect-pad bottom/right so H and W are multiples of `multiple` (crop back afterwards)."""
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not (pad_h or pad_w):
        return images
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(images, (0, pad_w, 0, pad_h), mode=mode)


def preserve_colors(stylized: Tensor, content: Tensor) -> Tensor:
    """Keep the content's colours: stylised luminance with the content's chroma (YCbCr, BT.601).

    Gatys et al., "Preserving Color in Neural Artistic Style Transfer" (2016), luminance-only transfer.
    """
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=stylized.dtype, device=stylized.device).view(1, 3, 1, 1)
    luminance = (stylized * weights).sum(1, keepdim=True)
    content_luminance = (content * weights).sum(1, keepdim=True)
    return (content - content_luminance + luminance).clamp(0, 1)
