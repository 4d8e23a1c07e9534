"""Band transfer: give an image a style's contrast at every scale, in closed form.

Pyramid-based texture analysis (Heeger & Bergen, "Pyramid-based texture analysis/synthesis",
SIGGRAPH 1995): split luminance into a Laplacian pyramid (Burt & Adelson, 1983), give each band the
style's balance of orientations (its energy in ORIENTATIONS angular windows of the Fourier domain,
reweighted in closed form, as subband energies are matched in Portilla & Simoncelli, "A parametric
texture model based on joint statistics of complex wavelet coefficients", IJCV 2000), move its
histogram onto the style's by quantile mapping (the 1-D optimal transport map), collapse. Heeger and
Bergen start from noise to synthesise a texture; here the start is the network's result, so the
content's structure stays where it is and only the amount and shape of detail at each scale follows
the style: an etching's crisp lines sharpen edges, a soft oil sketch softens them, hatching or brush
strokes that run one way strengthen detail that runs that way. Nothing is learnt, so it carries any
style, seen or not.

A style's *band signature* (`band_signature`) is, per band, its quantiles and its energy shares by
orientation, measured with the style
at about SIGNATURE_SIDE² pixels: small, cached per style and stored with presets; a weighted blend of
signatures averages their quantile functions, as palettes do. `transfer_bands` maps an image's bands
onto a signature, `strength` of the way (0 leaves the image as it is), the bands paired by scale
relative to the picture (`level_offset`).
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from .images import luminance, resize_to_area
from .palette import piecewise_linear, row_quantiles

BAND_LEVELS = 6  # octaves of detail, 1-2 px up to 32-64 px at the signature's scale
BAND_QUANTILES = 128
ORIENTATIONS = 4  # angular windows centred on 0°, 45°, 90° and 135° of spatial frequency
MAX_ORIENTATION_GAIN = 4.0  # an orientation the image hardly has is not blown up from its noise
SIGNATURE_SIDE = 640  # styles are measured at about this² pixels (the default texture side)
FIT_VALUES = 1 << 14  # band values sampled to fit an image's quantiles (sorting more costs time)
_QUANTILE_LEVELS = (torch.arange(BAND_QUANTILES, dtype=torch.float64) + 0.5) / BAND_QUANTILES


def _halve(image: Tensor) -> Tensor:
    height, width = image.shape[-2:]
    return F.interpolate(image, size=(max(1, (height + 1) // 2), max(1, (width + 1) // 2)), mode="bilinear",
                         align_corners=False, antialias=True)


def _expand(image: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False)


def laplacian_pyramid(image: Tensor, levels: int) -> tuple[list[Tensor], Tensor]:
    """(B, 1, H, W) -> `levels` band-pass images, finest first, and the low-pass rest; `collapse` inverts it
    exactly (each band is what its level loses by halving)."""
    bands = []
    for _ in range(levels):
        if min(image.shape[-2:]) < 2:
            break
        low = _halve(image)
        bands.append(image - _expand(low, image.shape[-2:]))
        image = low
    return bands, image


def collapse(bands: list[Tensor], low: Tensor) -> Tensor:
    for band in reversed(bands):
        low = _expand(low, band.shape[-2:]) + band
    return low


def _band_quantiles(band: Tensor) -> Tensor:
    """(B, 1, h, w) -> (B, BAND_QUANTILES), from an evenly strided sample of at most about FIT_VALUES values."""
    values = band.flatten(1).float()
    return row_quantiles(values[:, ::max(1, values.shape[1] // FIT_VALUES)], _QUANTILE_LEVELS)


@lru_cache(maxsize=32)
def _orientation_windows(height: int, width: int) -> Tensor:
    """(ORIENTATIONS, height, width // 2 + 1) weights over `rfft2`'s frequencies, cos⁴ of the angle to each
    orientation normalised to sum to one at every frequency: reweighting by them leaves a band unchanged
    when every gain is one."""
    fy = torch.fft.fftfreq(height)[:, None].expand(height, width // 2 + 1)
    fx = torch.fft.rfftfreq(width)[None, :].expand(height, width // 2 + 1)
    centres = torch.arange(ORIENTATIONS)[:, None, None] * math.pi / ORIENTATIONS
    windows = torch.cos(torch.atan2(fy, fx) - centres).pow(4)
    return windows / windows.sum(0)


def _orientation_shares(spectrum: Tensor, height: int, width: int) -> Tensor:
    """(height, width // 2 + 1) `rfft2` of a band -> (ORIENTATIONS,) shares of its energy (Parseval: the
    columns that stand for a conjugate pair count twice)."""
    power = spectrum.abs().square()
    power[:, 1:(width + 1) // 2] *= 2
    energy = (_orientation_windows(height, width).to(power.device) * power).flatten(1).sum(1)
    return energy / energy.sum().clamp_min(1e-20)


def band_signature(images: Tensor) -> Tensor:
    """(B, 3, H, W) style images in [0, 1] -> (B, BAND_LEVELS, BAND_QUANTILES + ORIENTATIONS): per luminance
    band its quantiles, then the shares of its energy by orientation; each image measured at about
    SIGNATURE_SIDE² pixels (enlarged if smaller: a small style image has no fine detail to give)."""
    height, width = images.shape[-2:]
    scale = SIGNATURE_SIDE / math.sqrt(height * width)
    if scale > 1:
        size = (round(height * scale), round(width * scale))
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    else:
        images = resize_to_area(images, SIGNATURE_SIDE)
    bands, _ = laplacian_pyramid(luminance(images.detach().float()), BAND_LEVELS)
    if len(bands) < BAND_LEVELS:
        raise ValueError(f"a style image needs at least {2 ** BAND_LEVELS} px a side, got {(height, width)}")
    shares = [torch.stack([_orientation_shares(torch.fft.rfft2(one[0]), *one.shape[-2:]) for one in band])
              for band in bands]
    return torch.stack([torch.cat([_band_quantiles(band), share], dim=1) for band, share in zip(bands, shares)],
                       dim=1)


def blend_signatures(signatures: Tensor, weights: Tensor) -> Tensor:
    """(S, L, W) signatures and (S,) weights summing to 1 -> one signature (averaged quantile functions and
    orientation shares)."""
    return torch.einsum("s,slq->lq", weights.to(signatures), signatures)


def level_offset(height: int, width: int) -> int:
    """Octaves by which an image of height × width is larger than the signature's scale: its band
    k + offset holds detail of the size (relative to the picture) of the signature's band k."""
    return round(math.log2(math.sqrt(height * width) / SIGNATURE_SIDE))


def transfer_bands(images: Tensor, signature: Tensor, strength: float = 1.0) -> Tensor:
    """(1, 3, H, W) in [0, 1] with each luminance band moved `strength` of the way onto `signature`'s
    band (its orientation shares, then its quantiles), bands paired by scale relative to the picture
    (`level_offset`); the luminance change is added to every channel (hue and chroma are the palette's
    business). A signature of quantiles alone, (L, BAND_QUANTILES) (models exported before the
    orientations), leaves the orientations as they are."""
    if images.shape[0] != 1:
        raise ValueError(f"one image at a time, got a batch of {images.shape[0]}")
    if strength == 0:
        return images.clone()
    offset = level_offset(*images.shape[-2:])
    levels = offset + signature.shape[0]
    y = luminance(images.float())
    bands, low = laplacian_pyramid(y, levels)
    target_signature = signature.to(y)
    for level in range(max(0, offset), len(bands)):
        band = target = bands[level]
        quantiles, shares = target_signature[level - offset].split([BAND_QUANTILES, signature.shape[-1] - BAND_QUANTILES])
        if len(shares):
            height, width = band.shape[-2:]
            spectrum = torch.fft.rfft2(band[0, 0])
            gains = (shares / _orientation_shares(spectrum, height, width).clamp_min(1e-12)).sqrt()
            weights = torch.einsum("o,ohw->hw", gains.clamp(max=MAX_ORIENTATION_GAIN),
                                   _orientation_windows(height, width).to(band.device))
            target = torch.fft.irfft2(spectrum * weights, s=(height, width))[None, None]
        mapped = piecewise_linear(target.flatten(1), _band_quantiles(target), quantiles[None]).view_as(band)
        bands[level] = torch.lerp(band, mapped, strength)
    change = collapse(bands, low) - y
    return (images + change.to(images.dtype)).clamp(0, 1)
