"""Strength calibration: the slider's value -> the code-blend fraction that gives that share of the change.

Strength blends the style code with the identity code (`Generator.blend`), a feature-space blend. How
far the result moves from the content is not linear in that fraction: for some styles a fraction of
0.05 already gives 40 % of the full change and 0.25 nearly all of it, so most of a slider would do
nothing. Each style's curve is therefore measured once, on a small probe image made here: the mean
absolute change the network makes to the probe at CURVE_KNOTS fractions from 0 to 1, in one batch
(tens of milliseconds; the palette and band transfers that follow move `strength` of the way, so the
network is where the curve bends). A strength s is then run at the fraction where that curve (made
non-decreasing) reaches s of its full change: strength 0.5 changes the picture about half as much as
strength 1, whatever the style. 0 and 1 stay exactly 0 and 1.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

CURVE_KNOTS = 9  # fractions 0, 1/8, ..., 1
PROBE_SIDE = 64


@lru_cache(maxsize=1)
def probe_image() -> Tensor:
    """(1, 3, PROBE_SIDE, PROBE_SIDE) in [0, 1]: smooth colour fields under a soft checkerboard of light
    and shade, the kind of large areas and edges a photograph or scan has. Fixed: made from seed 0."""
    coarse = torch.rand(1, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    fields = F.interpolate(coarse, size=(PROBE_SIDE, PROBE_SIDE), mode="bicubic", align_corners=False)
    y, x = torch.meshgrid(torch.arange(PROBE_SIDE), torch.arange(PROBE_SIDE), indexing="ij")
    shade = 0.6 + 0.4 * ((x // 8 + y // 8) % 2)
    return (fields * shade).clamp(0, 1)


def strength_curve(network: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """(CURVE_KNOTS,) mean absolute change from the probe at each knot: `network(probes, fractions)` takes
    (K, 3, PROBE_SIDE, PROBE_SIDE) copies of the probe and (K,) code-blend fractions, returns the K results.
    The change at fraction 0 counts as 0 (strength 0 is the content itself, not the network's output)."""
    fractions = torch.linspace(0, 1, CURVE_KNOTS)
    probe = probe_image()
    changes = (network(probe.expand(CURVE_KNOTS, -1, -1, -1).contiguous(), fractions).float().cpu() - probe)
    changes = changes.abs().flatten(1).mean(1)
    changes[0] = 0.0
    return changes


def blend_fraction(curve: Tensor, strength: float) -> float:
    """The code-blend fraction at which `curve`'s running maximum reaches `strength` of its highest value
    (linear between knots); `strength` itself for a style that changes nothing."""
    envelope = torch.cummax(curve.double(), 0).values
    if strength <= 0 or strength >= 1 or envelope[-1] <= 0:
        return strength
    target = strength * envelope[-1]
    knot = int(torch.searchsorted(envelope, target))  # first knot at or above the target: 1..CURVE_KNOTS-1
    low, high = envelope[knot - 1], envelope[knot]
    share = float((target - low) / (high - low)) if high > low else 0.0
    return (knot - 1 + share) / (CURVE_KNOTS - 1)
