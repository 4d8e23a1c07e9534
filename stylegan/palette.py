"""Palette transfer: give an image the colour distribution of a style image, in closed form.

Iterative distribution transfer (Pitié, Kokaram & Dahyot, "N-dimensional probability density
function transfer and its application to colour transfer", ICCV 2005): rotate RGB by an
orthonormal basis, move each of the three projected 1-D distributions onto the style's by
quantile mapping (the 1-D optimal transport map), rotate back, repeat with other bases. Nothing is
learnt, so it reaches any style's palette, seen or not: a black-and-white engraving gives grey, a
Hiroshige gives its indigo and vermilion.

A style's *palette* is its quantiles along the fixed bases (`palette_of`): small, cached per style
and stored with presets; a weighted blend of palettes averages their quantile functions (the 1-D
Wasserstein barycentre along each axis). The map fitted from an image's own colours is baked into a
3-D lookup table and applied by trilinear interpolation (`apply_lut`), which is cheap at any size,
smooth in colour, differentiable with respect to the image (training applies it inside the loss),
and blends with the identity table by `strength`, so strength 0 leaves the image exactly as it is.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

PALETTE_ITERATIONS = 8
PALETTE_QUANTILES = 64
LUT_SIZE = 17  # lattice points per RGB axis
FIT_PIXELS = 96 * 96  # colours sampled from an image to fit its map
_QUANTILE_LEVELS = (torch.arange(PALETTE_QUANTILES, dtype=torch.float64) + 0.5) / PALETTE_QUANTILES


def _rotations() -> Tensor:
    """(PALETTE_ITERATIONS, 3, 3) fixed orthonormal bases; the first is the luminance/opponent basis."""
    opponent = torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, 0.0], [1.0, 1.0, -2.0]], dtype=torch.float64)
    bases = [opponent / opponent.norm(dim=1, keepdim=True)]
    generator = torch.Generator().manual_seed(20051017)
    while len(bases) < PALETTE_ITERATIONS:
        q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
        bases.append((q * torch.sign(torch.diagonal(r))).T)
    return torch.stack(bases).float()


ROTATIONS = _rotations()


def _colours(images: Tensor, count: int = FIT_PIXELS) -> Tensor:
    """(B, 3, H, W) -> (B, N, 3) colours of a copy with at most about `count` pixels (antialiased)."""
    height, width = images.shape[-2:]
    scale = (count / (height * width)) ** 0.5
    if scale < 1:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
    return images.flatten(2).transpose(1, 2).float()


def row_quantiles(values: Tensor, levels: Tensor) -> Tensor:
    """(A, N) -> (A, len(levels)) quantiles of each row at `levels` in [0, 1] (linear interpolation, as
    torch.quantile). Sorted by numpy on the CPU: torch's CPU sort is ~10× slower on rows of this size
    (2.4 ms against 0.24 ms for 3 × 9,216 values), and a palette fit sorts 8 times."""
    if values.device.type == "cpu" and not values.requires_grad:
        ordered = torch.from_numpy(np.sort(values.float().numpy(), axis=-1))
    else:
        ordered = values.sort(dim=-1).values
    position = levels.to(ordered.device, torch.float64) * (ordered.shape[-1] - 1)
    below = position.floor().long()
    above = (below + 1).clamp(max=ordered.shape[-1] - 1)
    weight = (position - below).to(ordered.dtype)
    return torch.lerp(ordered[..., below], ordered[..., above], weight)


def _quantiles(projected: Tensor) -> Tensor:
    """(B, N, 3) -> (B, 3, PALETTE_QUANTILES) quantiles per axis."""
    batch, count, axes = projected.shape
    rows = projected.transpose(1, 2).reshape(batch * axes, count)
    return row_quantiles(rows, _QUANTILE_LEVELS).view(batch, axes, PALETTE_QUANTILES)


def palette_of(images: Tensor) -> Tensor:
    """(B, 3, H, W) style images in [0, 1] -> (B, PALETTE_ITERATIONS, 3, PALETTE_QUANTILES) palettes."""
    colours = _colours(images.detach())
    rotations = ROTATIONS.to(colours.device)
    return torch.stack([_quantiles(colours @ rotation.T) for rotation in rotations], dim=1)


def blend_palettes(palettes: Tensor, weights: Tensor) -> Tensor:
    """(S, K, 3, Q) palettes and (S,) weights summing to 1 -> one palette (averaged quantile functions)."""
    return torch.einsum("s,skaq->kaq", weights.to(palettes), palettes)


SEARCH_CELLS = 4096  # equal cells per knot row in `segments`' table
SEARCH_STEPS = 6  # `segments` steps past at most this many knots per value, else it binary-searches


def segments(xp: Tensor, x: Tensor) -> Tensor:
    """`torch.searchsorted(xp, x)` for strictly increasing rows xp (A, Q) and x (A, N), the same indices.
    On the CPU a binary search over 128 knots costs ~40 ns a value (a branch mispredicted at most steps);
    here each value looks up, in a table of SEARCH_CELLS equal cells per row, the first knot at or above the
    left edge of the cell before its own (one down: rounding may put a value a hair below its cell's edge),
    then steps past the knots below it, one vectorised step per knot that three cells hold at most. Knots
    crowded into a few cells (tied quantiles of flat regions), fewer values than it pays to build the table
    for, and other devices than the CPU take the binary search."""
    if x.device.type != "cpu" or x.shape[-1] < 2 * SEARCH_CELLS:
        return torch.searchsorted(xp, x)
    xp, x = xp.detach(), x.detach()  # indices: no gradient
    low, cells = xp[:, :1], torch.arange(SEARCH_CELLS + 1, device=xp.device, dtype=xp.dtype)
    width = (xp[:, -1:] - low) / SEARCH_CELLS
    first = torch.searchsorted(xp, low + width * cells)  # (A, SEARCH_CELLS + 1)
    past = torch.full_like(first[:, :2], xp.shape[1])  # values above the last knot step up to Q
    steps = int((torch.cat([first, past], dim=1)[:, 3:] - first[:, :-1]).max())
    if steps > SEARCH_STEPS:
        return torch.searchsorted(xp, x)
    cell = ((x - low) / width).nan_to_num(0.0).clamp(1, SEARCH_CELLS).long() - 1
    segment = first.gather(1, cell)
    knots = torch.cat([xp, torch.full_like(low, math.inf)], dim=1)  # knot Q: past the last
    for _ in range(steps):
        segment += knots.gather(1, segment) < x
    return segment


def strictly_increasing(knots: Tensor) -> Tensor:
    """(A, Q) non-decreasing knots (quantiles, tied where values repeat) spread by 1e-6 per knot, so that every
    segment between them has a width and a slope."""
    return knots + torch.arange(knots.shape[-1], device=knots.device, dtype=knots.dtype) * 1e-6


def piecewise_linear(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear maps of x (A, N) through increasing knots xp -> fp (A, Q), one per row; beyond
    the ends each map continues with slope 1 (a shift), so colours outside the fitted range move with
    their neighbours. Each value costs one search (`segments`) and three lookups (its segment's left knot
    and slope): the maps are applied to every pixel of every band."""
    xp = strictly_increasing(xp)
    ones = torch.ones_like(xp[:, :1])
    # Segment i (the index searchsorted gives) lies between knots i-1 and i; 0 and Q are the two ends.
    slope = torch.cat([ones, (fp[:, 1:] - fp[:, :-1]) / (xp[:, 1:] - xp[:, :-1]), ones], dim=1)
    left_x, left_f = torch.cat([xp[:, :1], xp], dim=1), torch.cat([fp[:, :1], fp], dim=1)
    x = x.contiguous()
    segment = segments(xp, x)
    return torch.addcmul(left_f.gather(1, segment), x - left_x.gather(1, segment), slope.gather(1, segment))


def identity_lut(size: int = LUT_SIZE, device: torch.device | str | None = None) -> Tensor:
    """(3, size, size, size) table with lut[:, r, g, b] = (r, g, b) / (size - 1)."""
    axis = torch.linspace(0, 1, size, device=device)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"))


@torch.no_grad()
def fit_lut(images: Tensor, palettes: Tensor, size: int = LUT_SIZE) -> Tensor:
    """(B, 3, H, W) images and (B, K, 3, Q) target palettes -> (B, 3, size, size, size) tables that move
    each image's colour distribution onto its palette (iterative distribution transfer)."""
    colours = _colours(images.detach())
    batch, count = colours.shape[:2]
    lattice = identity_lut(size, colours.device).flatten(1).T  # (size³, 3)
    points = torch.cat([colours, lattice.expand(batch, -1, -1)], dim=1)  # the samples' colours, then the lattice
    palettes = palettes.to(colours.device, torch.float32)
    for rotation, target in zip(ROTATIONS.to(points.device), palettes.unbind(1)):
        projected = points @ rotation.T  # (B, N + size³, 3)
        source = _quantiles(projected[:, :count])
        rows = projected.transpose(1, 2).reshape(batch * 3, -1)  # every sample's three axes at once
        moved = piecewise_linear(rows, source.reshape(batch * 3, -1), target.reshape(batch * 3, -1))
        points = points + (moved.view(batch, 3, -1).transpose(1, 2) - projected) @ rotation
    return points[:, count:].clamp(0, 1).transpose(1, 2).reshape(batch, 3, size, size, size)


def apply_lut(images: Tensor, tables: Tensor, strength: float | Tensor = 1.0) -> Tensor:
    """(B, 3, H, W) in [0, 1] through (B or 1, 3, S, S, S) tables, `strength` of the way from the
    identity (per sample if a (B,) tensor); trilinear, differentiable with respect to `images`."""
    strength = torch.as_tensor(strength, dtype=tables.dtype, device=tables.device).reshape(-1, 1, 1, 1, 1)
    tables = torch.lerp(identity_lut(tables.shape[-1], tables.device).to(tables.dtype), tables, strength)
    batch, _, height, width = images.shape
    # grid_sample's last grid axis is (x, y, z) = (W, H, D) = (b, g, r) of the table. It runs the samples
    # of a batch in parallel, one thread each: each image's pixels go in as `chunks` samples.
    chunks = max(1, min(torch.get_num_threads() // batch, height))
    rows = -(-height // chunks) * chunks
    grid = images.permute(0, 2, 3, 1).flip(-1) * 2 - 1
    grid = F.pad(grid, (0, 0, 0, 0, 0, rows - height)).reshape(batch * chunks, 1, 1, -1, 3).to(tables.dtype)
    out = F.grid_sample(tables.expand(batch, -1, -1, -1, -1).repeat_interleave(chunks, dim=0), grid,
                        mode="bilinear", padding_mode="border", align_corners=True)
    out = out.view(batch, chunks, 3, -1).transpose(1, 2).reshape(batch, 3, rows, width)
    return out[:, :, :height].to(images.dtype)


def transfer_palette(images: Tensor, palettes: Tensor, strength: float | Tensor = 1.0) -> Tensor:
    """(B, 3, H, W) with each image's colours moved `strength` of the way onto its (B, K, 3, Q) palette."""
    return apply_lut(images, fit_lut(images, palettes), strength)
