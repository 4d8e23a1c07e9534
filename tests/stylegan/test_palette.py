"""Palette transfer: reaches a style's colour distribution, exact identity at strength 0, differentiable."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.metrics import colour_distance
from stylegan.images import mean_chroma
from stylegan.palette import (
    PALETTE_ITERATIONS,
    PALETTE_QUANTILES,
    apply_lut,
    blend_palettes,
    fit_lut,
    identity_lut,
    palette_of,
    piecewise_linear,
    row_quantiles,
    segments,
    strictly_increasing,
    transfer_palette,
)
from stylegan.presets import Preset, load_presets, save_presets


def smooth_image(seed: int, height: int = 48, width: int = 64) -> torch.Tensor:
    """(1, 3, H, W): smooth random colour fields, different per seed."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 4, 5, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)


def test_a_palette_is_fixed_size_quantiles_of_the_image():
    palette = palette_of(smooth_image(0))
    assert palette.shape == (1, PALETTE_ITERATIONS, 3, PALETTE_QUANTILES)
    assert (palette.diff(dim=-1) >= 0).all()  # quantile functions never decrease
    assert torch.allclose(palette_of(smooth_image(0, 96, 128)), palette, atol=0.03)  # hardly depends on the size


def test_the_transfer_reaches_the_style_colours_and_strength_zero_is_the_identity():
    content, style = smooth_image(1), smooth_image(2)
    table = fit_lut(content, palette_of(style))
    moved = apply_lut(content, table)
    assert colour_distance(moved, style, side=None) < 0.3 * colour_distance(content, style, side=None)
    assert (apply_lut(content, table, 0.0) - content).abs().max() < 1e-5
    halfway = apply_lut(content, table, 0.5)
    assert torch.allclose(halfway, (content + moved) / 2, atol=1e-5)  # tables blend linearly
    assert (apply_lut(content, identity_lut()[None]) - content).abs().max() < 1e-5


def test_piecewise_maps_interpolate_the_knots_and_shift_beyond_them():
    generator = torch.Generator().manual_seed(11)
    xp = torch.rand(2, 16, generator=generator).sort(dim=1).values
    xp[1, 5:9] = xp[1, 5]  # tied knots, as quantiles of an image with a flat area have
    fp = torch.rand(2, 16, generator=generator).sort(dim=1).values
    x = torch.rand(2, 1000, generator=generator) * 1.4 - 0.2
    mapped = piecewise_linear(x, xp, fp)
    for row in range(2):
        inside = (x[row] > xp[row, 0]) & (x[row] < xp[row, -1])
        knots = xp[row].double().numpy() + np.arange(16) * 1e-6  # ties are spread by 1e-6 per knot
        expected = np.interp(x[row, inside].double().numpy(), knots, fp[row].double().numpy())
        assert np.allclose(mapped[row, inside], expected, atol=1e-4)
        below, above = x[row] < xp[row, 0], x[row] > xp[row, -1]
        assert torch.allclose(mapped[row, below], x[row, below] - xp[row, 0] + fp[row, 0], atol=1e-4)
        assert torch.allclose(mapped[row, above], x[row, above] - xp[row, -1] + fp[row, -1], atol=1e-4)


@pytest.mark.parametrize("values", ["laplace", "uniform", "mostly_flat", "two_rows_far_apart"])
def test_the_cell_table_search_finds_what_a_binary_search_finds(values):
    """Band values (heavy-tailed, 0 where the picture is flat), colours; the knots are their own quantiles
    (spread as `piecewise_linear` spreads them), and values beyond them too. The mostly
    flat values tie most knots, which sends them to the binary search; the others take the table."""
    generator = torch.Generator().manual_seed(21)
    x = {"laplace": torch.distributions.Laplace(0.0, 0.05).sample((1, 40000)),
         "uniform": torch.rand(3, 5000, generator=generator),
         "mostly_flat": torch.randn(1, 40000, generator=generator) * (torch.rand(1, 40000, generator=generator) < 0.3),
         "two_rows_far_apart": torch.randn(2, 5000, generator=generator) * torch.tensor([[1e-3], [1e3]])}[values]
    levels = (torch.arange(128, dtype=torch.float64) + 0.5) / 128
    xp = strictly_increasing(row_quantiles(x, levels))
    x = torch.cat([x, 3 * x, xp, xp + 1e-7], dim=1)  # outside the knots, on them, a hair above them
    assert torch.equal(segments(xp, x), torch.searchsorted(xp, x))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("height", [1, 7, 48])
def test_a_table_is_applied_by_trilinear_interpolation_at_any_thread_count(threads, height):
    image, table = smooth_image(12, height, 9), fit_lut(smooth_image(13), palette_of(smooth_image(14)))
    # Trilinear interpolation written out: the 8 lattice corners around each colour, weighted.
    size = table.shape[-1]
    position = image[0].permute(1, 2, 0).reshape(-1, 3) * (size - 1)
    low = position.floor().long().clamp(max=size - 2)
    fraction = position - low
    expected = torch.zeros(position.shape[0], 3)
    for corner in range(8):
        offset = torch.tensor([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
        weight = torch.where(offset.bool(), fraction, 1 - fraction).prod(1, keepdim=True)
        r, g, b = (low + offset).unbind(1)
        expected += weight * table[0][:, r, g, b].T
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = apply_lut(image, table)
    finally:
        torch.set_num_threads(previous)
    assert torch.allclose(result[0].permute(1, 2, 0).reshape(-1, 3), expected, atol=1e-5)


def test_a_grey_style_gives_a_grey_result():
    content = smooth_image(3)
    grey_style = smooth_image(4).mean(1, keepdim=True).expand(-1, 3, -1, -1)
    assert mean_chroma(content) > 0.05
    assert mean_chroma(transfer_palette(content, palette_of(grey_style))) < 0.02


def test_per_sample_tables_and_strengths_and_gradients_flow_to_the_image():
    contents = torch.cat([smooth_image(5), smooth_image(6)]).requires_grad_(True)
    palettes = torch.cat([palette_of(smooth_image(7)), palette_of(smooth_image(8))])
    out = transfer_palette(contents, palettes, torch.tensor([1.0, 0.0]))
    assert torch.allclose(out[1], contents[1], atol=1e-5)  # strength 0 for the second sample
    out.sum().backward()
    assert contents.grad is not None and contents.grad[0].abs().sum() > 0


def test_blending_palettes_averages_their_quantile_functions():
    one, other = palette_of(smooth_image(9))[0], palette_of(smooth_image(10))[0]
    assert torch.allclose(blend_palettes(torch.stack([one, one]), torch.tensor([0.3, 0.7])), one)
    assert torch.allclose(blend_palettes(torch.stack([one, other]), torch.tensor([0.5, 0.5])), (one + other) / 2)


def test_presets_round_trip_with_palettes_and_older_folders_load_without(tmp_path):
    presets = [Preset("a", "A"), Preset("b", "B")]
    codes = {"a": torch.zeros(4), "b": torch.ones(4)}
    palettes = {"a": palette_of(smooth_image(11))[0], "b": palette_of(smooth_image(12))[0]}
    save_presets(tmp_path, presets, codes, palettes)
    loaded, _, loaded_palettes = load_presets(tmp_path)
    assert list(loaded) == ["a", "b"] and torch.equal(loaded_palettes["b"], palettes["b"])
    (tmp_path / "palettes.safetensors").unlink()  # a model exported before palettes
    assert load_presets(tmp_path)[2] == {}
