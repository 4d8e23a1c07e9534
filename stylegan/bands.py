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
strokes that run one way strengthen detail that runs that way. The two opponent chroma channels (R − G,
R + G − 2B: adding the same to R, G and B moves neither) get the same quantile mapping at CHROMA_LEVELS, the
coarser bands: broken colour, coloured strokes and patches. At those levels the result's bands then get
the style's joint colour statistics, the covariance of their RGB coefficients, by the linear Monge-Kantorovich
map (Pitié & Kokaram, "The linear Monge-Kantorovitch linear colour mapping for example-based colour transfer",
CVMP 2007, applied to each band rather than to the colours): which colours the detail has, dark blue strokes on
light ochre rather than strokes of any of the picture's colours. Nothing is learnt, so it carries any style, seen
or not.

A style's *band signature* (`band_signature`) is, per band, its luminance quantiles, its energy shares by
orientation, the quantiles of both chroma channels and the covariance of its RGB coefficients, measured
with the style at about SIGNATURE_SIDE² pixels: small, cached per style and stored with presets; a weighted
blend of signatures averages their quantile functions, as palettes do. `transfer_bands` maps an image's bands
onto a signature, `strength` of the way (0 leaves the image as it is), the bands paired by scale relative to
the picture (`level_offset`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from .images import LUMA_WEIGHTS, luminance, resize_to_area
from .palette import piecewise_linear, row_quantiles

BAND_LEVELS = 6  # octaves of detail, 1-2 px up to 32-64 px at the signature's scale
BAND_QUANTILES = 128
ORIENTATIONS = 4  # angular windows centred on 0°, 45°, 90° and 135° of spatial frequency
# Per level: luminance quantiles, orientation shares, chroma quantiles, then the RGB coefficients' 3 × 3 covariance.
CHROMA_START = BAND_QUANTILES + ORIENTATIONS
COVARIANCE_START = CHROMA_START + 2 * BAND_QUANTILES
SIGNATURE_WIDTH = COVARIANCE_START + 9
MAX_ORIENTATION_GAIN = 4.0  # an orientation the image hardly has is not blown up from its noise
SIGNATURE_SIDE = 640  # styles are measured at about this² pixels (the default texture side)
# Colour of the detail of 4-64 px at the signature's scale (levels 2-5). On 32 validation pairs, chroma quantiles
# at levels 2-5 raised the Gram gain by 0.05 and the identification margin by 0.035; the finer levels 0-1 moved
# results towards other styles (4 of 32 fewer identified).
CHROMA_LEVELS = range(2, BAND_LEVELS)
# The covariance step goes this share of the way at strength 1. On all 128 validation pairs half the way raised
# the identification margin by 0.027 and the Gram gain by 0.012 with as many pairs identified; the whole way
# raised them by 0.043 and 0.018 but lost two pairs of woodblock prints to other styles.
COVARIANCE_SHARE = 0.5
FIT_VALUES = 1 << 14  # band values sampled to fit an image's quantiles (sorting more costs time)
_QUANTILE_LEVELS = (torch.arange(BAND_QUANTILES, dtype=torch.float64) + 0.5) / BAND_QUANTILES
# Luminance as `luminance` computes it, then the two opponent axes: the inverse maps a chroma change back to RGB.
_YUV = torch.tensor([LUMA_WEIGHTS, [1.0, -1.0, 0.0], [1.0, 1.0, -2.0]], dtype=torch.float64)
_TO_CHROMA = _YUV[1:].float()  # (2, 3): RGB -> R − G, R + G − 2B
_FROM_CHROMA = torch.linalg.inv(_YUV)[:, 1:].float()  # (3, 2): a chroma change -> RGB, luminance unchanged


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
    """(B, C, h, w) -> (B·C, BAND_QUANTILES), per channel, from an evenly strided sample of at most about
    FIT_VALUES values."""
    values = band.flatten(2).flatten(0, 1).float()
    return row_quantiles(values[:, ::max(1, values.shape[1] // FIT_VALUES)], _QUANTILE_LEVELS)


def _chroma(images: Tensor) -> Tensor:
    """(B, 3, H, W) RGB -> (B, 2, H, W) opponent chroma."""
    return torch.einsum("kc,bchw->bkhw", _TO_CHROMA.to(images), images)


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


def _covariance(band: Tensor) -> Tensor:
    """(B, 3, h, w) RGB band -> (B, 9) the flattened 3 × 3 covariance of its coefficients, from an evenly
    strided sample of at most about FIT_VALUES pixels."""
    values = band.flatten(2)
    values = values[..., ::max(1, values.shape[-1] // FIT_VALUES)].double()
    return torch.stack([torch.cov(one, correction=0) for one in values]).flatten(1).float()


def band_signature(images: Tensor) -> Tensor:
    """(B, 3, H, W) style images in [0, 1] -> (B, BAND_LEVELS, SIGNATURE_WIDTH): per band the luminance's
    quantiles, the shares of its energy by orientation, the quantiles of R − G and of R + G − 2B, then the
    covariance of its RGB coefficients; each image measured at about SIGNATURE_SIDE² pixels (enlarged if
    smaller: a small style image has no fine detail to give)."""
    height, width = images.shape[-2:]
    scale = SIGNATURE_SIDE / math.sqrt(height * width)
    if scale > 1:
        size = (round(height * scale), round(width * scale))
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    else:
        images = resize_to_area(images, SIGNATURE_SIDE)
    colour_bands, _ = laplacian_pyramid(images.detach().float(), BAND_LEVELS)
    if len(colour_bands) < BAND_LEVELS:
        raise ValueError(f"a style image needs at least {2 ** BAND_LEVELS} px a side, got {(height, width)}")
    bands = [luminance(colour) for colour in colour_bands]  # the luminance's pyramid, by linearity
    shares = [torch.stack([_orientation_shares(torch.fft.rfft2(one[0]), *one.shape[-2:]) for one in band])
              for band in bands]
    return torch.stack([torch.cat([_band_quantiles(band), share, _band_quantiles(_chroma(colour)).view(len(images), -1),
                                   _covariance(colour)], dim=1)
                        for band, share, colour in zip(bands, shares, colour_bands)], dim=1)


def blend_signatures(signatures: Sequence[Tensor], weights: Tensor) -> Tensor:
    """S (L, W) signatures and (S,) weights summing to 1 -> one signature (averaged quantile functions and
    orientation shares), as wide as the narrowest: a preset exported before chroma quantiles blended with
    an uploaded style image gets no chroma step, one exported before the covariances no covariance step."""
    width = min(signature.shape[-1] for signature in signatures)
    stacked = torch.stack([signature[..., :width] for signature in signatures])
    return torch.einsum("s,slq->lq", weights.to(stacked), stacked)


def level_offset(height: int, width: int) -> int:
    """Octaves by which an image of height × width is larger than the signature's scale: its band
    k + offset holds detail of the size (relative to the picture) of the signature's band k."""
    return round(math.log2(math.sqrt(height * width) / SIGNATURE_SIDE))


def _quantile_map(band: Tensor, quantiles: Tensor) -> Tensor:
    """(1, C, h, w) band with each channel's values moved onto its (C, BAND_QUANTILES) quantiles."""
    return piecewise_linear(band.flatten(2)[0], _band_quantiles(band), quantiles).view_as(band)


def _reweight_orientations(band: Tensor, shares: Tensor) -> Tensor:
    """(1, 1, h, w) band with its energy by orientation moved onto `shares` (ORIENTATIONS,)."""
    height, width = band.shape[-2:]
    spectrum = torch.fft.rfft2(band[0, 0])
    gains = (shares / _orientation_shares(spectrum, height, width).clamp_min(1e-12)).sqrt()
    weights = torch.einsum("o,ohw->hw", gains.clamp(max=MAX_ORIENTATION_GAIN),
                           _orientation_windows(height, width).to(band.device))
    return torch.fft.irfft2(spectrum * weights, s=(height, width))[None, None]


def _coarse_change(images: Tensor, offset: int, map_band: Callable[[Tensor, int], Tensor]) -> Tensor:
    """(1, C, H, W) change that `map_band` makes to the bands at CHROMA_LEVELS, each given as (1, C, h, w) with
    its signature level. The pyramid starts from the image halved to the first of those levels and its
    change is expanded back: the same, by linearity, as mapping those levels of the full pyramid, with the
    pyramid itself built on a sixteenth of the pixels."""
    first = max(0, min(CHROMA_LEVELS) + offset)
    sizes = []
    for _ in range(first):
        sizes.append(images.shape[-2:])
        images = _halve(images)
    bands, low = laplacian_pyramid(images, max(CHROMA_LEVELS) + offset + 1 - first)
    change = collapse([map_band(band, first + index - offset) for index, band in enumerate(bands)], low) - images
    for size in reversed(sizes):
        change = _expand(change, size)
    return change


def _matrix_power(matrix: Tensor, power: float) -> Tensor:
    """A symmetric positive semidefinite matrix to `power`, by its eigendecomposition (eigenvalues that rounding
    left below zero count as the smallest positive number)."""
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag_embed(values.clamp_min(torch.finfo(values.dtype).tiny).pow(power)) @ vectors.mT


def _map_covariance(band: Tensor, covariance: Tensor, share: float) -> Tensor:
    """(1, 3, h, w) RGB band moved `share` of the way onto the coefficients' covariance `covariance` (9,) by
    the linear Monge-Kantorovich map T = S^-½ (S^½ C S^½)^½ S^-½ (T S T = C, the least displacement of all
    linear maps that do so), about the band's mean. S gets a ridge of 1e-4 of its trace, so that a band with
    no colour detail (its coefficients on the grey axis) is mapped too: its detail takes the colour that goes
    with the luminance in C; no band gets more than C. T is fitted without gradient (as a constant: the
    eigendecompositions' gradients are undefined where eigenvalues meet, as for a grey style)."""
    values = band.flatten(2)[0].double()
    mean = values.mean(-1, keepdim=True)
    with torch.no_grad():
        source = torch.cov(values, correction=0)
        source = source + torch.eye(3).to(source) * 1e-4 * source.trace().clamp_min(1e-12)
        half, inverse_half = _matrix_power(source, 0.5), _matrix_power(source, -0.5)
        transform = inverse_half @ _matrix_power(half @ covariance.view(3, 3).to(source) @ half, 0.5) @ inverse_half
        transform = torch.lerp(torch.eye(3).to(transform), transform, share)
    return (transform @ (values - mean) + mean).to(band.dtype).view_as(band)


def transfer_bands(images: Tensor, signature: Tensor, strength: float = 1.0) -> Tensor:
    """(1, 3, H, W) in [0, 1] with each band moved `strength` of the way onto `signature`'s band, bands paired
    by scale relative to the picture (`level_offset`): the luminance's orientation shares, then its
    quantiles (the change added to every channel), and at CHROMA_LEVELS both chroma channels' quantiles
    (a change that leaves the luminance as it is); then, on the result, the covariance of the RGB bands at
    CHROMA_LEVELS, COVARIANCE_SHARE of the way at strength 1. Signatures of models exported earlier: (L,
    BAND_QUANTILES) leaves orientations and colour as they are, (L, CHROMA_START) colour, (L,
    COVARIANCE_START) takes no covariance step."""
    if images.shape[0] != 1:
        raise ValueError(f"one image at a time, got a batch of {images.shape[0]}")
    if strength == 0:
        return images.clone()
    offset = level_offset(*images.shape[-2:])
    levels = offset + signature.shape[0]
    target_signature = signature.to(images.device, torch.float32)
    orientations = min(ORIENTATIONS, signature.shape[-1] - BAND_QUANTILES)
    pixels = images.float()
    y = luminance(pixels)
    bands, low = laplacian_pyramid(y, levels)
    for level in range(max(0, offset), len(bands)):
        quantiles, shares = target_signature[level - offset, :BAND_QUANTILES + orientations].split(
            [BAND_QUANTILES, orientations])
        target = _reweight_orientations(bands[level], shares) if orientations else bands[level]
        bands[level] = torch.lerp(bands[level], _quantile_map(target, quantiles[None]), strength)
    change = (collapse(bands, low) - y).expand_as(images)
    if signature.shape[-1] >= COVARIANCE_START:
        chroma = target_signature[:, CHROMA_START:COVARIANCE_START].unflatten(-1, (2, BAND_QUANTILES))
        chroma_change = _coarse_change(_chroma(pixels), offset, lambda band, level: torch.lerp(
            band, _quantile_map(band, chroma[level]), strength))
        change = change + torch.einsum("ck,bkhw->bchw", _FROM_CHROMA.to(pixels.device), chroma_change)
    result = (pixels + change).clamp(0, 1)
    if signature.shape[-1] >= SIGNATURE_WIDTH:  # on the result: its bands as they are after the clamp
        covariance = target_signature[:, COVARIANCE_START:]
        share = COVARIANCE_SHARE * strength
        change = _coarse_change(result, offset, lambda band, level: _map_covariance(band, covariance[level], share))
        result = (result + change).clamp(0, 1)
    return result.to(images.dtype)
