"""Test images made in code: small, deterministic, in every mode and container the library reads."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image, PngImagePlugin


def gradient(width: int = 24, height: int = 16, mode: str = "RGB") -> Image.Image:
    """A smooth, asymmetric RGB gradient (survives JPEG closely; every orientation differs)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    red = x / max(width - 1, 1)
    green = y / max(height - 1, 1)
    blue = (x + 2 * y) / max(width + 2 * height - 3, 1)
    image = Image.fromarray((np.stack([red, green, blue], axis=2) * 255).round().astype(np.uint8), "RGB")
    return image if mode == "RGB" else image.convert(mode)


def noise(width: int, height: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    array = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return array[..., 0] if channels == 1 else array


def gray16(width: int = 24, height: int = 16) -> Image.Image:
    """A 16-bit grayscale ramp using the full 0..65535 range (values no 8-bit image can hold)."""
    ramp = np.linspace(0, 65535, width * height).round().astype(np.uint16).reshape(height, width)
    return Image.fromarray(ramp)


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width`×`height` RGB but holds no pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IEND", b"")


def png_with_text(image: Image.Image, *, plain_bytes: int, compressed_bytes: int) -> bytes:
    """A PNG carrying `plain_bytes` of uncompressed iTXt XMP-like text and `compressed_bytes`
    (inflated size) of zTXt text, as ImageMagick writes 'Raw profile' metadata."""
    info = PngImagePlugin.PngInfo()
    unit = "<rdf:li>archive record</rdf:li>\n"
    info.add_itxt("XML:com.adobe.xmp", (unit * (plain_bytes // len(unit) + 1))[:plain_bytes])
    hexdump = noise(compressed_bytes // 2, 1, 1).tobytes().hex()
    info.add_text("Raw profile type 8bim", hexdump, zip=True)
    return encode(image, "PNG", pnginfo=info)


def jpeg_with_app_segments(image: Image.Image, *, count: int, size: int = 65_000) -> bytes:
    """A JPEG with `count` extra APP segments of `size` bytes each (e.g. Photoshop / extended XMP)."""
    data = encode(image, "JPEG", quality=95)
    payload = noise(size, 1, 1).tobytes()
    segments = b"".join(b"\xff\xed" + struct.pack(">H", size + 2) + payload for _ in range(count))
    return data[:2] + segments + data[2:]


def with_exif_orientation(image: Image.Image, orientation: int, format: str = "PNG") -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, format, exif=exif)


def multipage_tiff(colours: list[tuple[int, int, int]], size: tuple[int, int] = (12, 8)) -> bytes:
    pages = [Image.new("RGB", size, colour) for colour in colours]
    return encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def animation(format: str, colours: list[tuple[int, int, int]], size: tuple[int, int] = (12, 8)) -> bytes:
    frames = [Image.new("RGB", size, colour) for colour in colours]
    options = {"lossless": True} if format == "WEBP" else {}
    return encode(frames[0], format, save_all=True, append_images=frames[1:], duration=100, loop=0, **options)


def palette_with_transparency(width: int = 16, height: int = 12) -> Image.Image:
    """A 'P' image whose palette entry 0 is transparent (a left-hand band of the image)."""
    indices = (np.arange(width)[None, :] * 4 // width).repeat(height, axis=0).astype(np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette([0, 0, 0, 200, 30, 30, 30, 200, 30, 30, 30, 200] + [0] * 756)
    image.info["transparency"] = 0
    return image
