"""The pixel contract: the one place that converts between files, PIL images and tensors.

Working pixels are float32 RGB tensors in [0, 1], shaped (B, 3, H, W). `open_image` reads
JPEG, PNG, TIFF, WebP, BMP and GIF (the first frame or page) without modifying the file,
applies the EXIF orientation and keeps the colour mode; anything it refuses raises
`ImageError` (a `ValueError`) naming the file and the reason. `to_tensor` / `to_pil` convert to
and from the working form, and `to_pil(result, like=original)` gives a result back in
`result_mode(original)`:

    1, L -> L               grayscale stays grayscale (a stylised result is not bilevel)
    LA -> LA                RGBA, PA, P with transparency -> RGBA (alpha carried over)
    I;16, I;16B, I -> same  16-bit grayscale stays 16-bit (I is read as 0..65535)
    F -> F                  float grayscale, read as 0..1
    RGB, P, CMYK, YCbCr, RGBX -> RGB   (CMYK is converted naively; embedded ICC profiles are ignored)

Pillow reduces 16-bit colour (RGB) files to 8 bits per channel; only grayscale stays 16-bit.
"""
from __future__ import annotations

import io
import math
import os
import re
import struct
import warnings
import zlib
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, PngImagePlugin
from torch import Tensor

# Below Pillow's own bomb limit (Image.MAX_IMAGE_PIXELS, about 89.5 MP), which applies as well.
MAX_PIXELS = 80_000_000
MAX_SIDE = 30_000
MAX_FILE_BYTES = 1 << 30
FORMATS = ("JPEG", "PNG", "TIFF", "WEBP", "BMP", "GIF")  # JPEG includes multi-picture (MPO)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif"})  # files of FORMATS
SUPPORTED_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr",
                             "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, as Pillow's convert("L")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Compressed PNG metadata Pillow refuses to inflate past this (a defence against zlib bombs).
PNG_MAX_INFLATED_CHUNK = PngImagePlugin.MAX_TEXT_CHUNK
PNG_MAX_INFLATED_TOTAL = PngImagePlugin.MAX_TEXT_MEMORY
# After a JPEG scan header, the entropy-coded data ends at the first 0xFF that is not a stuffed
# 0x00, a restart marker (RST0-7) or fill.
JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")

# Everything Pillow's decoders have been seen to raise on malformed input.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, struct.error, EOFError, IndexError, KeyError, TypeError,
                 ZeroDivisionError, OverflowError, AssertionError, zlib.error)


class ImageError(ValueError):
    """An input that is not a readable image, named with the reason."""


ImageSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO


def _describe(source: ImageSource, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return str(getattr(source, "name", "<bytes>"))


def _read_bytes(source: ImageSource, label: str) -> bytes:
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as handle:  # read-only: the input is never modified
                size = os.fstat(handle.fileno()).st_size
                if size > MAX_FILE_BYTES:
                    raise ImageError(f"{label}: the file is {size:,} bytes, over the limit of {MAX_FILE_BYTES:,}")
                data = handle.read()
        elif isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
        else:
            data = source.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise ImageError(f"{label}: cannot be read ({error.strerror or error})") from error
    if not isinstance(data, bytes):
        raise ImageError(f"{label}: is not a binary file (read gave {type(data).__name__})")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{label}: the file is over the limit of {MAX_FILE_BYTES:,} bytes")
    if not data:
        raise ImageError(f"{label}: the file is empty (0 bytes)")
    return data


MAGIC = {b"\x89PNG": "PNG", b"\xff\xd8": "JPEG", b"II*\0": "TIFF", b"MM\0*": "TIFF", b"GIF8": "GIF", b"BM": "BMP"}


def _sniff_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((kind for magic, kind in MAGIC.items() if data.startswith(magic)), None)


def _looks_like_text(data: bytes) -> bool:
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<", b"{", b"[")) or b"<html" in head or b"<svg" in head


def _inflated_size(compressed: bytes, limit: int) -> int:
    """Bytes `compressed` inflates to, counted up to `limit` + 1."""
    try:
        return len(zlib.decompressobj().decompress(compressed, limit + 1))
    except zlib.error:
        return 0  # Pillow skips undecodable metadata itself


def _compressed_payload(kind: bytes, body: bytes) -> bytes | None:
    """The zlib stream inside a zTXt, compressed iTXt or iCCP chunk, else None."""
    keyword_end = body.find(b"\0")
    if keyword_end < 0:
        return None
    if kind in (b"zTXt", b"iCCP"):
        return body[keyword_end + 2:]
    if kind == b"iTXt" and body[keyword_end + 1:keyword_end + 2] == b"\x01":
        parts = body[keyword_end + 3:].split(b"\0", 2)  # language, translated keyword, text
        return parts[2] if len(parts) == 3 else None
    return None


def _check_size(size: tuple[int, int], label: str, max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageError(f"{label}: the image is {width}×{height} pixels (empty)")
    if width * height > max_pixels or max(width, height) > MAX_SIDE:
        raise ImageError(f"{label}: {width}×{height} pixels is over the limit of {max_pixels:,} pixels "
                         f"({MAX_SIDE:,} px a side); refused before decoding")


def _checked_png(data: bytes, label: str, max_pixels: int) -> bytes:
    """Walk the chunks to IEND: check the header's size, refuse truncation and corrupt critical
    chunks, whatever Pillow's LOAD_TRUNCATED_IMAGES says. Compressed metadata that Pillow would
    refuse to inflate (over 1 MB) cannot affect pixels and is left out of the copy that gets decoded."""
    position, kept, dropped, inflated = len(PNG_SIGNATURE), [PNG_SIGNATURE], False, 0
    while True:
        if position + 8 > len(data):
            raise ImageError(f"{label}: the PNG data is truncated (it ends before the IEND chunk)")
        length, kind = struct.unpack_from(">I4s", data, position)
        end = position + 12 + length
        if not kind.isalpha():
            raise ImageError(f"{label}: corrupt PNG data (invalid chunk type {kind!r} at byte {position})")
        if end > len(data):
            raise ImageError(f"{label}: the PNG data is truncated (chunk {kind.decode()} runs past the end)")
        body = data[position + 8:end - 4]
        if kind == b"IHDR" and length >= 8:
            _check_size(struct.unpack_from(">II", body), label, max_pixels)
        critical = not kind[0] & 0x20
        if critical and zlib.crc32(kind + body) != int.from_bytes(data[end - 4:end], "big"):
            raise ImageError(f"{label}: corrupt PNG data (bad checksum in chunk {kind.decode()})")
        payload = None if critical else _compressed_payload(kind, body)
        size = 0 if payload is None else _inflated_size(payload, PNG_MAX_INFLATED_CHUNK)
        inflated += size
        if inflated > PNG_MAX_INFLATED_TOTAL:
            raise ImageError(f"{label}: refused: over {PNG_MAX_INFLATED_TOTAL:,} bytes of compressed metadata")
        if size > PNG_MAX_INFLATED_CHUNK:
            dropped = True
        else:
            kept.append(data[position:end])
        position = end
        if kind == b"IEND":
            return b"".join(kept) if dropped else data


def _check_jpeg(data: bytes, label: str) -> None:
    """Walk the marker segments to the end-of-image marker after the first frame's scans, so a
    truncated JPEG is refused whatever Pillow's LOAD_TRUNCATED_IMAGES says."""
    position, scanned = 2, False
    while True:
        marker = JPEG_NEXT_MARKER.search(data, position)
        if marker is None:
            raise ImageError(f"{label}: the JPEG data is truncated (no end-of-image marker)")
        kind = data[marker.start() + 1]
        if kind == 0xD9:  # EOI
            if scanned:
                return
            raise ImageError(f"{label}: corrupt JPEG data (end-of-image marker before any image data)")
        if kind in (0x01, 0xD8):  # TEM and SOI stand alone
            position = marker.end()
            continue
        if marker.end() + 2 > len(data):
            raise ImageError(f"{label}: the JPEG data is truncated (inside a marker segment)")
        position = marker.end() + int.from_bytes(data[marker.end():marker.end() + 2], "big")
        if position > len(data):
            raise ImageError(f"{label}: the JPEG data is truncated (inside a marker segment)")
        scanned = scanned or kind == 0xDA  # SOS: entropy-coded data follows; the search skips it


def open_image(source: ImageSource, *, name: str | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode `source` fully (first frame / page), apply EXIF orientation, keep the colour mode.

    The size in the header is checked before any pixel is decoded. Raises `ImageError` for
    anything that is not a complete, supported image within the limits. Truncated PNG and JPEG
    are refused by their own structure checks, whatever `ImageFile.LOAD_TRUNCATED_IMAGES` says;
    other formats rely on its default (False). PNG text metadata over Pillow's 1 MB inflate
    limit is left out of the returned image's `info`.
    """
    label = _describe(source, name)
    data = _read_bytes(source, label)
    if data.startswith(PNG_SIGNATURE):
        data = _checked_png(data, label, max_pixels)
    elif data.startswith(b"\xff\xd8"):
        _check_jpeg(data, label)
    try:
        with warnings.catch_warnings():
            # Pillow's "possible decompression bomb" warning refuses the image here only (the
            # filters are restored on exit; before Python 3.14 they are process-wide meanwhile).
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as image:
                _check_size(image.size, label, max_pixels)
                if image.mode not in SUPPORTED_MODES:
                    raise ImageError(f"{label}: colour mode {image.mode} is not supported")
                image.load()
                oriented = ImageOps.exif_transpose(image)  # always a new image, detached from the file
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"{label}: refused as a possible decompression bomb ({error})") from error
    except Image.UnidentifiedImageError as error:
        sniffed = _sniff_format(data)
        if sniffed:
            raise ImageError(f"{label}: a {sniffed} file that cannot be decoded (corrupt or an unsupported "
                             "variant)") from error
        kind = "text (HTML, SVG or similar), not a raster image" if _looks_like_text(data) else "not a recognised image"
        raise ImageError(f"{label}: {kind}; supported formats: {', '.join(FORMATS)}") from error
    except MemoryError as error:
        raise ImageError(f"{label}: not enough memory to decode it") from error
    except DECODE_ERRORS as error:
        raise ImageError(f"{label}: not a readable image ({type(error).__name__}: {error})") from error
    return oriented


def result_mode(image: Image.Image) -> str:
    """The mode `to_pil(..., like=image)` returns (see the table at the top of this module)."""
    if image.mode in ("1", "L"):
        return "L"
    if image.mode in SIXTEEN_BIT_MODES or image.mode in ("I", "F", "LA"):
        return image.mode
    if image.mode in ("RGBA", "RGBa", "PA") or (image.mode == "P" and "transparency" in image.info):
        return "RGBA"
    return "RGB"


def to_tensor(image: Image.Image) -> Tensor:
    """PIL image of any supported mode -> (1, 3, H, W) float32 RGB in [0, 1]."""
    if image.mode not in SUPPORTED_MODES:
        raise ImageError(f"colour mode {image.mode} is not supported")
    if image.mode in SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        scale = 1.0 if image.mode == "F" else 65535.0
        gray = np.asarray(image).astype(np.float32) / scale
        if not np.isfinite(gray).all():
            raise ImageError("the float image contains NaN or infinite values")
        array = np.repeat(gray[..., None], 3, axis=2)
    else:
        rgb = image.convert("RGBA").convert("RGB") if image.mode in ("P", "PA", "LA") else image.convert("RGB")
        array = np.asarray(rgb, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None].clamp(0, 1).contiguous()


def to_pil(images: Tensor, like: Image.Image | None = None) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) in [0, 1] -> RGB PIL image; with `like`, in `result_mode(like)`
    with `like`'s alpha (resized if the sizes differ)."""
    if images.dim() not in (3, 4) or images.shape[-3] != 3 or images.numel() != 3 * images.shape[-2] * images.shape[-1]:
        raise ValueError(f"expected a (1, 3, H, W) or (3, H, W) tensor, got shape {tuple(images.shape)}")
    rgb = images.detach().float().reshape(3, *images.shape[-2:]).cpu()
    if torch.isnan(rgb).any():
        raise ValueError("the tensor contains NaN")
    rgb = rgb.clamp(0, 1)
    mode = "RGB" if like is None else result_mode(like)
    if mode in SIXTEEN_BIT_MODES or mode in ("I", "F"):
        gray = (rgb * torch.tensor(LUMA_WEIGHTS)[:, None, None]).sum(0).clamp(0, 1).numpy()
        if mode == "F":
            return Image.fromarray(gray.astype(np.float32))
        levels = (gray * 65535.0 + 0.5).astype(np.uint16)
        result = Image.fromarray(levels.astype(np.int32)) if mode == "I" else Image.fromarray(levels)
        return result if result.mode == mode else result.convert(mode)
    result = Image.fromarray((rgb.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8), "RGB")
    if mode in ("L", "LA"):
        result = result.convert("L")
    if mode in ("LA", "RGBA"):
        alpha = like.convert("RGBA").getchannel("A")
        result.putalpha(alpha if alpha.size == result.size else alpha.resize(result.size))
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


def pad_to_multiple(images: Tensor, multiple: int, *, min_size: int = 1) -> Tensor:
    """Reflect-pad bottom/right so H and W are multiples of `multiple` and at least `min_size`
    (crop back afterwards). Replicates the edge where the image is too small to reflect."""
    height, width = images.shape[-2:]
    pad_h = max(height, min_size) + -max(height, min_size) % multiple - height
    pad_w = max(width, min_size) + -max(width, min_size) % multiple - width
    if not (pad_h or pad_w):
        return images
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(images, (0, pad_w, 0, pad_h), mode=mode)


def luminance(images: Tensor) -> Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) BT.601 luminance (Y)."""
    weights = torch.tensor(LUMA_WEIGHTS, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def contrast_ratio(images: Tensor, references: Tensor) -> Tensor:
    """(B,): the std of each image's BT.601 luminance over its reference's; near 0 for a near-flat image."""
    return luminance(images).flatten(1).std(1) / luminance(references).flatten(1).std(1).clamp_min(1e-6)


def structure_kept(images: Tensor, references: Tensor) -> Tensor:
    """(B,): how much of each reference's luminance pattern an image carries, as the slope of regressing the
    image's BT.601 luminance on the reference's, cov(Y, Y_ref) / var(Y_ref): 1 for the reference itself,
    0.5 at half its contrast, near 0 for a flat image and for a pattern of its own unrelated to the reference
    (which `contrast_ratio` counts as contrast)."""
    image = luminance(images).flatten(1)
    reference = luminance(references).flatten(1)
    image = image - image.mean(1, keepdim=True)
    reference = reference - reference.mean(1, keepdim=True)
    return (image * reference).mean(1) / reference.square().mean(1).clamp_min(1e-12)


def preserve_colors(stylized: Tensor, content: Tensor) -> Tensor:
    """Keep the content's colours: stylised luminance with the content's chroma (YCbCr, BT.601).

    Gatys et al., "Preserving Color in Neural Artistic Style Transfer" (2016), luminance-only transfer.
    """
    return (content - luminance(content) + luminance(stylized)).clamp(0, 1)


def resize_to_area(images: Tensor, side: int) -> Tensor:
    """Shrink (B, 3, H, W), keeping its aspect, to about side² pixels (antialiased); smaller images pass."""
    height, width = images.shape[-2:]
    scale = side / math.sqrt(height * width)
    if scale >= 1:
        return images
    target = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(images, size=target, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def _bilinear_rows(source_rows: int, target_rows: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per target row: the two source rows and the second one's weight (bilinear, half-pixel centres)."""
    position = ((torch.arange(target_rows, dtype=torch.float64) + 0.5) * (source_rows / target_rows) - 0.5).clamp(min=0)
    below = position.floor().long().clamp(max=source_rows - 1)
    above = (below + 1).clamp(max=source_rows - 1)
    return below, above, (position - below).float()


def upscale_with_detail(stylized: Tensor, small_content: Tensor, content: Tensor, *, band_rows: int = 256) -> Tensor:
    """Enlarge a result computed on `small_content` (a shrunk `content`) to `content`'s size, and add
    back the luminance detail that shrinking removed: up(stylized) + Y(content) - up(Y(small_content)).

    Edges, print and fine structure of the original come back at full resolution (no soft upscale),
    in grey, so they never bring the original's colours into a recoloured result; colour and texture
    come from the stylised result. Bands of `band_rows` rows bound the working memory to a few bands
    beside the (1, 3, H, W) output; the interpolation equals F.interpolate's (bilinear, half-pixel centres).
    """
    height, width = content.shape[-2:]
    # Both low-resolution images, widened to the full width (cheap: few rows), stacked: 3 + 1 channels.
    small = torch.cat([stylized, luminance(small_content)], dim=1)
    wide = F.interpolate(small, size=(small.shape[-2], width), mode="bilinear", align_corners=False)
    below, above, weight = _bilinear_rows(small.shape[-2], height)
    output = torch.empty(1, 3, height, width)
    for top in range(0, height, band_rows):
        rows = slice(top, min(top + band_rows, height))
        w = weight[rows].view(1, 1, -1, 1)
        band = wide[:, :, below[rows]] * (1 - w) + wide[:, :, above[rows]] * w
        detail = luminance(content[:, :, rows]) - band[:, 3:]
        output[:, :, rows] = (band[:, :3] + detail).clamp(0, 1)
    return output


def mean_chroma(images: Tensor) -> float:
    """Colourfulness of (1, 3, H, W) in [0, 1]: the mean distance of a pixel's RGB from its grey
    (BT.601 luminance). 0 for a monochrome image; measured on a ≤ 256²-pixel copy."""
    small = resize_to_area(images, 256).contiguous()
    return float((small - luminance(small)).square().sum(1).sqrt().mean())


def limit_chroma_(images: Tensor, max_chroma: float, strength: float = 1.0, *, band_rows: int = 256) -> Tensor:
    """Scale the chroma of (1, 3, H, W) in place (the trailing underscore, as PyTorch names in-place operations:
    the caller's own result, which at 4096² would otherwise be copied whole), `strength` of the way from its
    `mean_chroma` down to `max_chroma`; the luminance is untouched and an image already that muted is left as it is."""
    chroma = mean_chroma(images)
    if chroma <= max_chroma or strength <= 0:
        return images
    factor = 1 - strength * (1 - max_chroma / chroma)
    for top in range(0, images.shape[-2], band_rows):
        band = images[:, :, top:top + band_rows]
        grey = luminance(band)
        band.sub_(grey).mul_(factor).add_(grey).clamp_(0, 1)
    return images
