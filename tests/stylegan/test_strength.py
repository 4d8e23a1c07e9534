"""Strength calibration: the slider's value -> the code-blend fraction giving that share of the change."""
from __future__ import annotations

import itertools

import pytest
import torch

from stylegan.strength import CURVE_KNOTS, PROBE_SIDE, blend_fraction, probe_image, strength_curve

FRACTIONS = torch.linspace(0, 1, CURVE_KNOTS)


def test_a_linear_curve_leaves_the_strength_as_it_is() -> None:
    for strength in (0.0, 0.05, 0.3, 0.5, 0.9, 1.0):
        assert blend_fraction(0.2 * FRACTIONS, strength) == pytest.approx(strength)


def test_a_front_loaded_curve_is_run_at_a_smaller_fraction() -> None:
    # Most of the change by the first knot (1/8): half the change is reached a third of the way to it.
    curve = torch.tensor([0.0, 0.75, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99, 1.0])
    assert blend_fraction(curve, 0.25) == pytest.approx(1 / 24)
    assert blend_fraction(curve, 0.8) == pytest.approx(1.5 / 8)
    fractions = [blend_fraction(curve, strength) for strength in torch.linspace(0.01, 0.99, 50).tolist()]
    assert all(later > earlier for earlier, later in itertools.pairwise(fractions))


def test_ends_stay_exact_and_a_dip_or_a_flat_curve_is_handled() -> None:
    dipping = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.9, 0.95, 0.97])  # the end below the peak
    assert blend_fraction(dipping, 0.0) == 0.0 and blend_fraction(dipping, 1.0) == 1.0
    assert blend_fraction(dipping, 0.5) == pytest.approx(2.5 / 8)  # half of the peak, on the running maximum
    assert blend_fraction(torch.zeros(CURVE_KNOTS), 0.4) == 0.4  # a style that changes nothing


def test_the_curve_is_the_networks_mean_change_to_the_fixed_probe() -> None:
    probe = probe_image()
    assert probe.shape == (1, 3, PROBE_SIDE, PROBE_SIDE) and 0 <= probe.min() and probe.max() <= 1
    assert probe.std() > 0.1  # light, shade and colour to change
    seen = {}

    def network(probes: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
        seen["probes"], seen["fractions"] = probes, fractions
        return (probes + 0.3 * fractions.sqrt()[:, None, None, None]).clamp(0, 1)  # front-loaded, as some styles

    curve = strength_curve(network)
    assert torch.equal(seen["fractions"], FRACTIONS) and torch.equal(seen["probes"][3], probe[0])
    assert curve[0] == 0 and (curve.diff() > 0).all()
    assert blend_fraction(curve, 0.5) < 0.3  # the calibration undoes the square root's front-loading
