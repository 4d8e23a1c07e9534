"""Optional post-processing of a stylised result: cropping and contrast.

Applied after stylisation, so the recorded settings describe exactly how a result was made.
Crop is pure geometry (any mode); contrast goes through the pixel contract and comes back in
the result's own mode (grayscale stays grayscale, 16-bit stays 16-bit, alpha is kept).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from stylegan.images import luminance, to_pil, to_tensor

MAX_CROP = 0.45  # fraction of the width or height one side may remove
MAX_CONTRAST = 3.0


@dataclass(frozen=True)
class PostProcess:
    contrast: float = 1.0  # 1 leaves the image unchanged, 0 flattens it to its mean luminance
    crop: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # fraction removed: left, top, right, bottom

    def __post_init__(self) -> None:
        if not (math.isfinite(self.contrast) and 0.0 <= self.contrast <= MAX_CONTRAST):
            raise ValueError(f"contrast must be between 0 and {MAX_CONTRAST}, got {self.contrast}")
        if len(self.crop) != 4:
            raise ValueError(f"crop needs 4 fractions (left, top, right, bottom), got {self.crop}")
        for side, fraction in zip(("left", "top", "right", "bottom"), self.crop):
            if not (math.isfinite(fraction) and 0.0 <= fraction <= MAX_CROP):
                raise ValueError(f"crop {side} must be between 0 and {MAX_CROP:.0%} of the image, got {fraction:.1%}")
        object.__setattr__(self, "crop", tuple(float(fraction) for fraction in self.crop))

    def settings(self) -> dict:
        left, top, right, bottom = self.crop
        return {"contrast": self.contrast, "crop": {"left": left, "top": top, "right": right, "bottom": bottom}}

    def crop_box(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """The crop as a PIL box (left, upper, right, lower) in pixels for an image of `size`."""
        width, height = size
        left, top, right, bottom = self.crop
        return (round(left * width), round(top * height), width - round(right * width), height - round(bottom * height))

    def apply(self, image: Image.Image) -> Image.Image:
        """Crop, then scale contrast about the mean luminance (a new image; `image` is untouched)."""
        box = self.crop_box(image.size)
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"cropping {self.crop} leaves nothing of a {image.size[0]}×{image.size[1]} image")
        result = image.crop(box) if box != (0, 0, *image.size) else image
        if self.contrast != 1.0:
            result = adjust_contrast(result, self.contrast)
        return result.copy() if result is image else result


def adjust_contrast(image: Image.Image, factor: float) -> Image.Image:
    """`mean + factor · (x - mean)` per pixel, with `mean` the image's mean luminance (as PIL's ImageEnhance)."""
    pixels = to_tensor(image)
    mean = luminance(pixels).mean()
    return to_pil((mean + factor * (pixels - mean)).clamp(0, 1), like=image)
