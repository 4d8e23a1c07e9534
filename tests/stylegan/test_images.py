"""The pixel contract: every supported file opens in its own mode and comes back in it; every bad
input raises ImageError naming the file; nothing else escapes, even for fuzzed bytes."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import skimage
import tifffile
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from stylegan import images
from stylegan.images import (
    LUMA_WEIGHTS,
    ImageError,
    limit_chroma_,
    mean_chroma,
    open_image,
    pad_to_multiple,
    preserve_colors,
    resize_long_side,
    resize_to_area,
    result_mode,
    to_pil,
    to_tensor,
    upscale_with_detail,
)
from tests.helpers.imagegen import (
    animation,
    encode,
    gradient,
    gray16,
    jpeg_with_app_segments,
    multipage_tiff,
    noise,
    palette_with_transparency,
    png_header_only,
    png_with_text,
    with_exif_orientation,
)

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"


def write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def round_trip(image: Image.Image) -> Image.Image:
    return to_pil(to_tensor(image), like=image)


# --- colour modes --------------------------------------------------------------------------------

def _image_in(mode: str) -> Image.Image:
    base = gradient()
    if mode == "P+transparency":
        return palette_with_transparency()
    if mode == "P":
        return base.quantize(16)
    if mode == "LA":
        return Image.merge("LA", [base.convert("L"), base.getchannel("G")])
    if mode == "RGBA":
        return Image.merge("RGBA", [*base.split(), base.getchannel("B")])
    if mode == "PA":
        return Image.merge("RGBA", [*base.split(), base.getchannel("G")]).convert("PA")
    if mode == "I;16":
        return gray16()
    if mode == "I;16B":
        return gray16().convert("I;16B")
    if mode == "I":
        return Image.fromarray(np.asarray(gray16()).astype(np.int32))
    if mode == "F":
        return Image.fromarray(np.asarray(gray16()).astype(np.float32) / 65535.0)
    return base.convert(mode)


# mode in the file -> (container, mode the result comes back in)
MODES = {
    "1": ("PNG", "L"),  # a stylised result is not bilevel
    "L": ("PNG", "L"),
    "LA": ("PNG", "LA"),
    "P": ("PNG", "RGB"),
    "P+transparency": ("PNG", "RGBA"),
    "PA": ("TIFF", "RGBA"),
    "RGB": ("PNG", "RGB"),
    "RGBA": ("PNG", "RGBA"),
    "CMYK": ("TIFF", "RGB"),
    "I;16": ("PNG", "I;16"),
    "I;16B": ("TIFF", "I;16B"),
    "I": ("TIFF", "I"),
    "F": ("TIFF", "F"),
}


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_round_trips(tmp_path, mode):
    container, expected_mode = MODES[mode]
    source = _image_in(mode)
    opened = open_image(write(tmp_path, f"scan-{mode.replace(';', '')}.{container.lower()}", encode(source, container)))
    assert opened.mode == source.mode and opened.size == source.size

    pixels = to_tensor(opened)
    assert pixels.shape == (1, 3, source.height, source.width) and pixels.dtype == torch.float32
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0

    result = to_pil(pixels, like=opened)
    assert result.mode == expected_mode == result_mode(opened)
    assert result.size == source.size
    if expected_mode in ("I;16", "I;16B", "I", "F"):
        tolerance = 1e-6 if expected_mode == "F" else 1
        np.testing.assert_allclose(np.asarray(result, dtype=np.float64), np.asarray(opened, dtype=np.float64),
                                   atol=tolerance)
    else:
        expected = np.asarray(opened.convert(expected_mode), dtype=np.int16)
        np.testing.assert_allclose(np.asarray(result, dtype=np.int16), expected, atol=1)


def test_sixteen_bit_values_survive(tmp_path):
    ramp = gray16()
    for container in ("PNG", "TIFF"):
        opened = open_image(write(tmp_path, f"ramp.{container.lower()}", encode(ramp, container)))
        np.testing.assert_array_equal(np.asarray(opened), np.asarray(ramp))
        result = round_trip(opened)
        assert result.mode == "I;16"
        assert len(np.unique(np.asarray(result))) > 256  # more levels than any 8-bit image holds
        assert np.abs(np.asarray(result, dtype=np.int32) - np.asarray(ramp, dtype=np.int32)).max() <= 1


def test_cmyk_jpeg_comes_back_rgb(tmp_path):
    source = gradient().convert("CMYK")
    opened = open_image(write(tmp_path, "print.jpg", encode(source, "JPEG", quality=95)))
    assert opened.mode == "CMYK"
    expected = np.asarray(opened.convert("RGB"), dtype=np.float32) / 255.0
    np.testing.assert_allclose(to_tensor(opened)[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)
    assert round_trip(opened).mode == "RGB"


def test_palette_png_with_transparency_keeps_its_alpha(tmp_path):
    source = palette_with_transparency()
    opened = open_image(write(tmp_path, "map.png", encode(source, "PNG")))
    assert opened.mode == "P" and opened.info["transparency"] == 0
    result = round_trip(opened)
    assert result.mode == "RGBA"
    expected_alpha = np.where(np.asarray(source) == 0, 0, 255)
    np.testing.assert_array_equal(np.asarray(result.getchannel("A")), expected_alpha)


def test_alpha_is_resized_with_a_resized_result():
    like = Image.merge("RGBA", [*gradient(24, 16).split(), gradient(24, 16).getchannel("R")])
    result = to_pil(torch.rand(1, 3, 8, 12), like=like)
    assert result.mode == "RGBA" and result.size == (12, 8)


def test_to_tensor_refuses_an_unsupported_mode():
    with pytest.raises(ImageError, match="LAB"):
        to_tensor(Image.new("LAB", (4, 4)))


def test_to_pil_refuses_bad_tensors_and_leaves_its_input_alone():
    with pytest.raises(ValueError, match="shape"):
        to_pil(torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        to_pil(torch.full((1, 3, 4, 4), float("nan")))
    pixels = torch.rand(1, 3, 4, 5) * 2 - 0.5
    before = pixels.clone()
    assert to_pil(pixels).size == (5, 4)
    assert torch.equal(pixels, before)


# --- containers: orientation, pages, frames, sizes, metadata -------------------------------------

# EXIF orientation -> the transform that displays the stored pixels upright (EXIF 2.3, tag 0x0112).
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", UPRIGHT)
def test_exif_orientation_is_applied(tmp_path, orientation):
    source = gradient(24, 16)
    opened = open_image(write(tmp_path, "rotated.png", with_exif_orientation(source, orientation)))
    np.testing.assert_array_equal(np.asarray(opened), UPRIGHT[orientation](np.asarray(source)))
    assert opened.getexif().get(0x0112, 1) == 1  # applied once, not again by whoever reads it next


def test_exif_rotated_jpeg_swaps_width_and_height(tmp_path):
    source = gradient(40, 24)
    opened = open_image(write(tmp_path, "camera.jpg", with_exif_orientation(source, 6, "JPEG")))
    assert opened.size == (24, 40)
    difference = np.abs(np.asarray(opened, dtype=np.int16) - np.rot90(np.asarray(source, dtype=np.int16), -1))
    assert difference.mean() < 4


def test_multipage_tiff_gives_the_first_page(tmp_path):
    opened = open_image(write(tmp_path, "pages.tif", multipage_tiff([(200, 10, 10), (10, 200, 10), (10, 10, 200)])))
    assert opened.getpixel((0, 0)) == (200, 10, 10)
    real = SKIMAGE_DATA / "multipage.tif"  # written by another encoder
    np.testing.assert_array_equal(np.asarray(open_image(real)), tifffile.imread(real, key=0))


@pytest.mark.parametrize("container", ["GIF", "WEBP"])
def test_animation_gives_the_first_frame(tmp_path, container):
    data = animation(container, [(200, 10, 10), (10, 200, 10), (10, 10, 200)])
    opened = open_image(write(tmp_path, f"loop.{container.lower()}", data))
    assert opened.convert("RGB").getpixel((3, 3)) == (200, 10, 10)


def test_real_animated_gif_gives_its_first_frame():
    path = SKIMAGE_DATA / "no_time_for_that_tiny.gif"
    with Image.open(path) as reference:
        assert reference.n_frames > 1
        first = reference.convert("RGB")
    np.testing.assert_array_equal(np.asarray(open_image(path).convert("RGB")), np.asarray(first))


@pytest.mark.parametrize("container", ["PNG", "JPEG", "TIFF", "WEBP", "BMP", "GIF"])
def test_one_pixel_images_load(tmp_path, container):
    opened = open_image(write(tmp_path, f"dot.{container.lower()}", encode(gradient(1, 1), container)))
    assert opened.size == (1, 1)
    assert to_tensor(opened).shape == (1, 3, 1, 1)


@pytest.mark.parametrize("size", [(2, 20_000), (20_000, 2)])
def test_extreme_aspect_ratios_load(tmp_path, size):
    source = Image.fromarray(noise(*size))
    opened = open_image(write(tmp_path, "strip.png", encode(source, "PNG")))
    assert opened.size == size
    assert max(resize_long_side(to_tensor(opened), 64).shape[-2:]) == 64


def test_megabytes_of_metadata_load(tmp_path):
    source = gradient()
    files = {
        "annotated.png": png_with_text(source, plain_bytes=3_000_000, compressed_bytes=3_000_000),
        "photoshop.jpg": jpeg_with_app_segments(source, count=40),
        "described.tif": encode(source, "TIFF", tiffinfo={270: "catalogue entry " * 250_000}),
    }
    for name, data in files.items():
        assert len(data) > 2_500_000
        opened = open_image(write(tmp_path, name, data))
        assert opened.size == source.size and opened.mode == "RGB"


def test_input_files_are_not_modified(tmp_path):
    files = {
        "rotated.jpg": with_exif_orientation(gradient(), 6, "JPEG"),
        "scan.png": encode(palette_with_transparency(), "PNG"),
        "pages.tif": multipage_tiff([(1, 2, 3), (4, 5, 6)]),
        "annotated.png": png_with_text(gradient(), plain_bytes=1000, compressed_bytes=2_200_000),
    }
    for name, data in files.items():
        path = write(tmp_path, name, data)
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
        path.chmod(0o444)
        open_image(path)
        assert path.read_bytes() == data
        assert path.stat().st_mtime_ns == 1_000_000_000
        assert path.stat().st_mode & 0o777 == 0o444


def test_sources_can_be_bytes_or_file_objects(tmp_path):
    data = encode(gradient(), "PNG")
    assert open_image(data).size == open_image(write(tmp_path, "a.png", data)).size
    with open(tmp_path / "a.png", "rb") as handle:
        assert open_image(handle).size == (24, 16)
    with pytest.raises(ImageError, match="upload.png: .*empty"):
        open_image(b"", name="upload.png")


# --- refusals ------------------------------------------------------------------------------------

def _truncated(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


def _bmp_claiming(width: int, height: int) -> bytes:
    data = bytearray(encode(gradient(4, 4), "BMP"))
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def _tiff_claiming(width: int, height: int) -> bytes:
    """A TIFF whose header says `width`×`height` (one strip that holds 4×4 pixels)."""
    data = bytearray(encode(gradient(4, 4), "TIFF"))
    directory = struct.unpack_from("<I", data, 4)[0]
    for index in range(struct.unpack_from("<H", data, directory)[0]):
        entry = directory + 2 + 12 * index
        tag, kind = struct.unpack_from("<HH", data, entry)
        if tag in (256, 257):  # ImageWidth, ImageLength, as Pillow writes them: one LONG each
            assert kind == 4
            struct.pack_into("<I", data, entry + 8, width if tag == 256 else height)
    return bytes(data)


def _png_with_bad_checksum() -> bytes:
    data = bytearray(encode(Image.fromarray(noise(16, 16)), "PNG"))
    data[data.index(b"IDAT") + 10] ^= 0xFF
    return bytes(data)


BAD_FILES = {
    "notes.png": (lambda: noise(64, 1, 1).tobytes(), "not a recognised image"),
    "page.png": (lambda: b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "HTML"),
    "drawing.png": (lambda: b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
    "empty.jpg": (lambda: b"", "empty"),
    "cut.jpg": (lambda: _truncated(encode(gradient(), "JPEG"), 0.6), "truncated"),
    "cut-progressive.jpg": (lambda: _truncated(encode(gradient(), "JPEG", progressive=True), 0.9), "truncated"),
    "cut.png": (lambda: _truncated(encode(gradient(), "PNG"), 0.6), "truncated"),
    "cut-header.png": (lambda: encode(gradient(), "PNG")[:20], "truncated"),
    "cut.tif": (lambda: _truncated(encode(gradient(), "TIFF"), 0.6), "truncated"),
    "cut.gif": (lambda: _truncated(encode(gradient(), "GIF"), 0.9), "truncated"),
    "cut.bmp": (lambda: _truncated(encode(gradient(), "BMP"), 0.6), "truncated"),
    "cut.webp": (lambda: _truncated(encode(gradient(), "WEBP"), 0.6), "not a readable image"),
    "corrupt.png": (_png_with_bad_checksum, "bad checksum"),
    "huge.png": (lambda: png_header_only(30_000, 30_000), "over the limit"),
    "tall.png": (lambda: png_header_only(10, 40_000), "over the limit"),
    "zero-width.png": (lambda: png_header_only(0, 10), "0×10 pixels"),
    "zero-height.png": (lambda: png_header_only(10, 0), "10×0 pixels"),
    "bomb.bmp": (lambda: _bmp_claiming(20_000, 20_000), "decompression bomb"),
    "bomb-warning.bmp": (lambda: _bmp_claiming(9_500, 9_500), "decompression bomb"),
    "icon.ico": (lambda: encode(gradient(16, 16), "ICO"), "not a recognised image"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_files_raise_image_error_naming_the_file(tmp_path, name):
    make, reason = BAD_FILES[name]
    path = write(tmp_path, name, make())
    with pytest.raises(ImageError) as raised:
        open_image(path)
    assert str(path) in str(raised.value)
    assert reason in str(raised.value)


# 85 MP: over this library's limit, under Pillow's own bomb check (Image.MAX_IMAGE_PIXELS, about 89.5 MP).
IN_BAND = (10_000, 8_500)
HUGE_HEADERS = {
    "in-band.png": (lambda: png_header_only(*IN_BAND), "over the limit of 80,000,000 pixels"),
    "in-band.bmp": (lambda: _bmp_claiming(*IN_BAND), "over the limit of 80,000,000 pixels"),
    "in-band.tif": (lambda: _tiff_claiming(*IN_BAND), "over the limit of 80,000,000 pixels"),
    "huge.png": (lambda: png_header_only(30_000, 30_000), "over the limit"),
    "wide.png": (lambda: png_header_only(25_000, 25_000), "over the limit"),
    "huge.bmp": (lambda: _bmp_claiming(29_000, 29_000), "decompression bomb"),  # Pillow's own check, at open
}


@pytest.mark.parametrize("name", HUGE_HEADERS)
def test_limits_are_checked_before_decoding(monkeypatch, name):
    """Headers claiming too many pixels are refused from the header alone: decoding would fail the test."""
    assert images.MAX_PIXELS < IN_BAND[0] * IN_BAND[1] < Image.MAX_IMAGE_PIXELS

    def decode(self):
        raise AssertionError(f"{name}: pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decode)
    make, reason = HUGE_HEADERS[name]
    with pytest.raises(ImageError, match=f"{name}: .*{reason}"):
        open_image(make(), name=name)


def test_a_lower_limit_can_be_asked_for():
    with pytest.raises(ImageError, match="small.png: 24×16 pixels is over the limit of 100 pixels"):
        open_image(encode(gradient(), "PNG"), name="small.png", max_pixels=100)


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9, 0.999])
@pytest.mark.parametrize("container", ["JPEG", "PNG"])
def test_truncation_is_refused_even_if_pillow_is_told_to_tolerate_it(monkeypatch, container, fraction):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = _truncated(encode(Image.fromarray(noise(32, 32)), container, **({"progressive": True} if container == "JPEG" else {})), fraction)
    with pytest.raises(ImageError, match="scan.bin: the .* data is truncated"):
        open_image(data, name="scan.bin")


def test_unsupported_modes_oversized_files_and_memory_exhaustion(tmp_path, monkeypatch):
    with pytest.raises(ImageError, match="lab.tif: colour mode LAB is not supported"):
        open_image(encode(Image.new("LAB", (4, 4)), "TIFF"), name="lab.tif")
    path = write(tmp_path, "scan.png", encode(gradient(), "PNG"))
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 100)
    with pytest.raises(ImageError, match="scan.png: the file is .* bytes, over the limit of 100"):
        open_image(path)
    with open(path, "rb") as handle, pytest.raises(ImageError, match="over the limit of 100 bytes"):
        open_image(handle)
    monkeypatch.undo()

    def exhausted(image):
        raise MemoryError

    monkeypatch.setattr(images.ImageOps, "exif_transpose", exhausted)
    with pytest.raises(ImageError, match="scan.png: not enough memory"):
        open_image(path)


def test_missing_files_and_folders_raise_image_error(tmp_path):
    with pytest.raises(ImageError, match="missing.png: cannot be read"):
        open_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="cannot be read"):
        open_image(tmp_path)


# --- fuzzing -------------------------------------------------------------------------------------

SEEDS = [
    encode(gradient(12, 8), "PNG"),
    encode(gradient(12, 8), "JPEG"),
    encode(gradient(12, 8), "JPEG", progressive=True),
    with_exif_orientation(gradient(12, 8), 6, "JPEG"),
    encode(palette_with_transparency(), "PNG"),
    encode(gray16(12, 8), "PNG"),
    encode(gradient(12, 8), "TIFF"),
    encode(gradient(12, 8), "GIF"),
    encode(gradient(12, 8), "BMP"),
    encode(gradient(12, 8), "WEBP"),
]
MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"II*\x00", b"MM\x00*", b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBP"]


@st.composite
def mutated_images(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for position, value in draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), max_size=8)):
        data[position] = value
    end = draw(st.integers(1, len(data)))
    return bytes(data[:end])


@pytest.mark.filterwarnings("ignore::UserWarning:PIL")  # Pillow warns about the corrupt EXIF it skips
@settings(max_examples=150, deadline=None, database=None)
@given(st.one_of(st.binary(max_size=2048),
                 st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGIC), st.binary(max_size=512)),
                 mutated_images()))
def test_fuzzed_bytes_give_an_image_or_image_error(data):
    try:
        image = open_image(data, name="fuzz.bin", max_pixels=1_000_000)
    except ImageError as error:
        assert str(error).startswith("fuzz.bin: ")
        return
    assert image.width >= 1 and image.height >= 1
    assert to_tensor(image).shape == (1, 3, image.height, image.width)


# --- geometry and colour helpers -----------------------------------------------------------------

def test_resize_long_side():
    pixels = torch.rand(1, 3, 30, 60)
    assert resize_long_side(pixels, 20).shape == (1, 3, 10, 20)
    assert resize_long_side(pixels, 60) is pixels
    assert resize_long_side(torch.rand(1, 3, 2, 20_000), 512).shape == (1, 3, 1, 512)


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (8, 8), (3, 1)])
def test_pad_to_multiple_and_crop_back(size):
    pixels = torch.rand(1, 3, *size)
    padded = pad_to_multiple(pixels, 4)
    assert padded.shape[-2] % 4 == 0 and padded.shape[-1] % 4 == 0
    assert torch.equal(padded[..., : size[0], : size[1]], pixels)


@pytest.mark.parametrize(("size", "expected"), [((1, 1), (8, 8)), ((5, 30), (8, 32)), ((12, 9), (12, 12))])
def test_pad_to_multiple_with_a_minimum_size(size, expected):
    pixels = torch.rand(1, 3, *size)
    padded = pad_to_multiple(pixels, 4, min_size=8)
    assert padded.shape[-2:] == expected
    assert torch.equal(padded[..., : size[0], : size[1]], pixels)


def test_preserve_colors_takes_luminance_from_the_stylised_image():
    generator = torch.Generator().manual_seed(0)
    stylized = torch.rand(1, 3, 8, 8, generator=generator) * 0.5 + 0.25
    content = torch.rand(1, 3, 8, 8, generator=generator) * 0.5 + 0.25
    stylized_before, content_before = stylized.clone(), content.clone()
    result = preserve_colors(stylized, content)
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    unclamped = ((result > 0) & (result < 1)).all(1, keepdim=True)
    luminance = (result * weights).sum(1, keepdim=True)
    assert torch.allclose(luminance[unclamped], (stylized * weights).sum(1, keepdim=True)[unclamped], atol=1e-6)
    assert torch.equal(stylized, stylized_before) and torch.equal(content, content_before)


def test_upscale_with_detail_matches_whole_image_interpolation_in_any_band_size() -> None:
    torch.manual_seed(0)
    content = torch.rand(1, 3, 53, 71)
    small = resize_to_area(content, 24)
    assert small.shape[-2:] == (21, 28)
    stylized = torch.rand_like(small)
    luminance = torch.tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
    up = torch.nn.functional.interpolate(torch.cat([stylized, (small * luminance).sum(1, keepdim=True)], 1),
                                         size=(53, 71), mode="bilinear", align_corners=False)
    expected = (up[:, :3] + (content * luminance).sum(1, keepdim=True) - up[:, 3:]).clamp(0, 1)
    for band_rows in (5, 16, 1000):
        torch.testing.assert_close(upscale_with_detail(stylized, small, content, band_rows=band_rows), expected)


def test_upscale_with_detail_gives_a_grey_original_back_when_nothing_was_painted() -> None:
    """Identity stylisation of a grey scan: the shrunk copy enlarged plus the restored detail is the original."""
    grey = torch.rand(1, 1, 90, 60).expand(1, 3, 90, 60).contiguous()
    small = resize_to_area(grey, 20)
    restored = upscale_with_detail(small, small, grey, band_rows=32)
    assert restored.shape == grey.shape
    assert (restored - grey).abs().max() < 1e-5
    soft = torch.nn.functional.interpolate(small, size=(90, 60), mode="bilinear", align_corners=False)
    assert (soft - grey).abs().mean() > 0.1  # a plain enlargement would have lost the detail


def test_chroma_is_limited_without_touching_luminance() -> None:
    torch.manual_seed(0)
    colour = torch.rand(1, 3, 700, 40)  # taller than a band, larger than mean_chroma's 512² sample
    grey = colour.mean(1, keepdim=True).expand(1, 3, 700, 40).contiguous()
    assert mean_chroma(grey) < 1e-6 and mean_chroma(colour) > 0.2
    luminance = torch.tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
    before_y = (colour * luminance).sum(1)
    half = limit_chroma_(colour.clone(), 0.1, strength=0.5)
    muted = limit_chroma_(colour.clone(), 0.1)
    assert abs(mean_chroma(muted) - 0.1) < 0.01
    assert mean_chroma(muted) < mean_chroma(half) < mean_chroma(colour)
    torch.testing.assert_close((muted * luminance).sum(1), before_y, atol=1e-5, rtol=0)
    assert torch.equal(limit_chroma_(colour.clone(), 1.0), colour)  # never made more colourful
    assert torch.equal(limit_chroma_(colour.clone(), 0.0, strength=0.0), colour)


def test_resize_to_area_keeps_small_images_and_aspect() -> None:
    image = torch.rand(1, 3, 40, 30)
    assert resize_to_area(image, 64) is image
    panorama = resize_to_area(torch.rand(1, 3, 60, 1000), 64)
    assert panorama.shape[-2:] == (16, 261)  # same area as 64², not a 1000 -> 64 long side
