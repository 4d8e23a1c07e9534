"""Band transfer: exact pyramid, a style's detail reached at every scale, identity at strength 0, presets."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from stylegan import Stylizer
from stylegan.bands import (
    BAND_LEVELS,
    BAND_QUANTILES,
    CHROMA_LEVELS,
    CHROMA_START,
    COVARIANCE_START,
    ORIENTATIONS,
    SIGNATURE_SIDE,
    SIGNATURE_WIDTH,
    band_signature,
    blend_signatures,
    collapse,
    laplacian_pyramid,
    level_offset,
    transfer_bands,
)
from stylegan.generator import Generator, GeneratorConfig
from stylegan.images import luminance, to_pil, to_tensor
from stylegan.presets import PRESET_BANDS_FILE, Preset, load_preset_bands, save_preset_bands, save_presets


def scene(side: int, seed: int = 0) -> torch.Tensor:
    """(1, 3, side, side): smooth colour fields with a few soft edges, the same picture at any size."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 6, generator=generator)
    return F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False).clamp(0, 1)


def crisp_lines(side: int) -> torch.Tensor:
    """An engraving-like style: thin black lines on white, 40 of them whatever the size."""
    image = torch.ones(1, 3, side, side)
    period = side // 40
    for offset in range(max(1, period // 4)):
        image[..., offset::period, :] = 0.0
    return image


def fine_detail(images: torch.Tensor) -> float:
    """Standard deviation of the finest Laplacian band of the luminance."""
    bands, _ = laplacian_pyramid(luminance(images), 1)
    return bands[0].std().item()


def test_the_pyramid_collapses_back_exactly() -> None:
    y = luminance(scene(97, 1) + 0.05 * torch.rand(1, 3, 97, 97))  # odd sizes too
    bands, low = laplacian_pyramid(y, 4)
    assert len(bands) == 4 and low.shape[-1] == 7
    assert torch.allclose(collapse(bands, low), y, atol=1e-6)


def colour_blocks(side: int, seed: int) -> torch.Tensor:
    """(1, 3, side, side): flat blocks of random colours, side / 40 px each: chroma detail at the coarse bands."""
    blocks = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(blocks, size=(side, side), mode="nearest")


def opponent_chroma(images: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W): R − G and R + G − 2B."""
    red, green, blue = images.unbind(1)
    return torch.stack([red - green, red + green - 2 * blue], dim=1)


def coarse_chroma_detail(images: torch.Tensor) -> float:
    """Standard deviation of the chroma bands that CHROMA_LEVELS pair with in `images` (`level_offset`)."""
    offset = level_offset(*images.shape[-2:])
    bands, _ = laplacian_pyramid(opponent_chroma(images), offset + max(CHROMA_LEVELS) + 1)
    return torch.cat([bands[level + offset].flatten() for level in CHROMA_LEVELS]).std().item()


def test_a_signature_is_fixed_size_quantiles_orientation_shares_chroma_and_covariance_and_refuses_a_sliver() -> None:
    signature = band_signature(scene(200))
    assert signature.shape == (1, BAND_LEVELS, SIGNATURE_WIDTH)
    quantiles, shares, chroma, covariance = signature.split([BAND_QUANTILES, ORIENTATIONS, 2 * BAND_QUANTILES, 9], dim=-1)
    assert (quantiles.diff(dim=-1) >= 0).all() and (chroma.view(1, BAND_LEVELS, 2, -1).diff(dim=-1) >= 0).all()
    covariance = covariance.view(BAND_LEVELS, 3, 3)
    assert torch.allclose(covariance, covariance.mT) and (torch.linalg.eigvalsh(covariance.double()) > -1e-9).all()
    grey = band_signature(crisp_lines(SIGNATURE_SIDE))[0]
    assert grey[:, CHROMA_START:COVARIANCE_START].abs().max() < 1e-6 < chroma.abs().max()  # no colour, no chroma detail
    # Grey: R, G and B the same band, each entry of the covariance the band's variance (from the same sample).
    variance = grey[:, :BAND_QUANTILES].var(-1)
    assert torch.allclose(grey[:, COVARIANCE_START:], grey[:, COVARIANCE_START, None].expand(-1, 9))
    assert torch.allclose(grey[:, COVARIANCE_START], variance, rtol=0.2)
    assert (shares >= 0).all() and torch.allclose(shares.sum(-1), torch.ones(1, BAND_LEVELS))
    lines = grey[:, BAND_QUANTILES:]
    # Horizontal lines: all their detail at vertical frequencies, in the 90° window (which shares a sixth
    # of it with each of its overlapping neighbours) and none at 0°.
    assert (lines[:, 2] > 0.6).all() and (lines[:, 0] < 0.01).all()
    with pytest.raises(ValueError, match="at least"):
        band_signature(torch.rand(1, 3, 2, 4000))


def test_a_crisp_style_sharpens_and_a_soft_one_softens_through_the_luminance() -> None:
    content = scene(SIGNATURE_SIDE // 4, 2) + 0.02 * torch.rand(1, 3, SIGNATURE_SIDE // 4, SIGNATURE_SIDE // 4)
    content = content.clamp(0.05, 0.95)
    soft = scene(SIGNATURE_SIDE, 3)
    sharpened = transfer_bands(content, band_signature(crisp_lines(SIGNATURE_SIDE))[0])
    softened = transfer_bands(content, band_signature(soft)[0])
    assert fine_detail(sharpened) > 3 * fine_detail(content)
    assert fine_detail(softened) < 0.5 * fine_detail(content)
    luminance_only = transfer_bands(content, band_signature(soft)[0, :, :CHROMA_START])
    change, unclamped = luminance_only - content, ((luminance_only > 0) & (luminance_only < 1)).all(1)
    assert unclamped.float().mean() > 0.9
    assert torch.allclose(change[:, 0][unclamped], change[:, 1][unclamped], atol=1e-6)  # the same in R, G and B
    assert (transfer_bands(content, band_signature(soft)[0], 0.0) == content).all()


def test_the_coarse_chroma_bands_follow_the_style_and_leave_the_luminance() -> None:
    side = SIGNATURE_SIDE // 2
    content = (0.2 + 0.6 * scene(side, 12) + 0.1 * (colour_blocks(side, 13) - 0.5)).clamp(0, 1)
    # Signatures without the covariances (exported before them): the chroma step alone.
    vivid = band_signature(0.3 + 0.4 * colour_blocks(SIGNATURE_SIDE, 14))[0, :, :COVARIANCE_START]
    grey = band_signature(luminance(scene(SIGNATURE_SIDE, 15)).expand(-1, 3, -1, -1))[0, :, :COVARIANCE_START]
    coloured, greyed = transfer_bands(content, vivid), transfer_bands(content, grey)
    assert coarse_chroma_detail(coloured) > 2 * coarse_chroma_detail(content)
    assert coarse_chroma_detail(greyed) < 0.5 * coarse_chroma_detail(content)
    without_chroma = transfer_bands(content, vivid[:, :CHROMA_START])  # exported before the chroma quantiles
    unclamped = ((coloured > 0) & (coloured < 1) & (without_chroma > 0) & (without_chroma < 1)).all(1, keepdim=True)
    assert unclamped.float().mean() > 0.8
    assert torch.allclose(luminance(coloured)[unclamped], luminance(without_chroma)[unclamped], atol=1e-5)
    kept = ((without_chroma > 0) & (without_chroma < 1)).all(1, keepdim=True).expand(-1, 2, -1, -1)
    assert torch.allclose(opponent_chroma(without_chroma)[kept], opponent_chroma(content)[kept], atol=1e-5)
    halfway = coarse_chroma_detail(transfer_bands(content, vivid, 0.5))
    assert coarse_chroma_detail(content) < halfway < coarse_chroma_detail(coloured)


def detail_colour(images: torch.Tensor) -> float:
    """Correlation of the luminance and R + G − 2B (yellow against blue) in the bands that CHROMA_LEVELS pair
    with: positive when the dark detail is blue, negative when it is yellow."""
    offset = level_offset(*images.shape[-2:])
    bands, _ = laplacian_pyramid(images, offset + max(CHROMA_LEVELS) + 1)
    coefficients = torch.cat([bands[level + offset].flatten(2) for level in CHROMA_LEVELS], dim=-1)[0]
    yellow = coefficients[0] + coefficients[1] - 2 * coefficients[2]
    return torch.corrcoef(torch.stack([luminance(coefficients[None, :, :, None]).flatten(), yellow]))[0, 1].item()


def strokes(side: int, seed: int, paper: tuple[float, ...], ink: tuple[float, ...]) -> torch.Tensor:
    """(1, 3, side, side): `ink` blocks (side / 40 px) on `paper` where random blocks are set, over a soft scene."""
    marks = (torch.rand(1, 1, 40, 40, generator=torch.Generator().manual_seed(seed)) < 0.4).float()
    marks = F.interpolate(marks, size=(side, side), mode="nearest")
    colours = torch.lerp(torch.tensor(paper)[None, :, None, None], torch.tensor(ink)[None, :, None, None], marks)
    return (colours + 0.1 * (scene(side, seed + 1) - 0.5)).clamp(0, 1)


def test_the_covariance_map_reaches_the_target_and_a_grey_target_gives_grey_detail() -> None:
    from stylegan.bands import _map_covariance

    generator = torch.Generator().manual_seed(21)
    band = torch.einsum("kc,bchw->bkhw", torch.randn(3, 3, generator=generator), torch.randn(1, 3, 48, 64, generator=generator))
    mixing = torch.randn(3, 3, generator=generator)
    target = 0.01 * mixing @ mixing.T

    def covariance(values: torch.Tensor) -> torch.Tensor:
        return torch.cov(values.flatten(2)[0].double(), correction=0).float()

    reached = covariance(_map_covariance(band, target.flatten(), 1.0))  # up to the ridge
    assert torch.allclose(reached, target, rtol=0.02, atol=2e-4)
    assert torch.allclose(_map_covariance(band, target.flatten(), 0.0), band, atol=1e-6)
    grey_target = torch.full((3, 3), 0.01)  # R, G and B the same detail
    greyed = _map_covariance(band, grey_target.flatten(), 1.0)
    detail = greyed - greyed.mean((2, 3), keepdim=True)  # about the band's mean, which the map keeps
    assert (detail - detail.mean(1, keepdim=True)).abs().max() < 1e-3 * detail.abs().max()
    assert torch.allclose(covariance(greyed), grey_target, rtol=0.02)


def test_training_gets_a_finite_gradient_through_the_transfer_even_for_a_grey_style() -> None:
    """Training applies the band transfer inside the loss; a grey style's covariance has equal eigenvalues."""
    grey_style = luminance(scene(SIGNATURE_SIDE, 23)).expand(-1, 3, -1, -1)
    image = scene(160, 24).requires_grad_()
    transfer_bands(image, band_signature(grey_style)[0]).square().sum().backward()
    assert torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0


def test_the_covariance_step_gives_the_detail_the_styles_colours() -> None:
    """A style of dark blue strokes on ochre, a content of dark yellow-brown marks on grey: mapped channel by
    channel, the content's dark detail stays yellow; with the covariance step (COVARIANCE_SHARE of the way to
    the style's covariance) it is no longer yellow."""
    content = strokes(SIGNATURE_SIDE // 2, 20, paper=(0.6, 0.6, 0.6), ink=(0.35, 0.3, 0.1))
    style_image = strokes(SIGNATURE_SIDE, 22, paper=(0.85, 0.7, 0.4), ink=(0.15, 0.2, 0.45))
    style = band_signature(style_image)[0]
    channel_by_channel, both = transfer_bands(content, style[:, :COVARIANCE_START]), transfer_bands(content, style)
    assert detail_colour(style_image) > 0.9
    assert detail_colour(content) < -0.9 and detail_colour(channel_by_channel) < -0.9
    assert detail_colour(both) > 0
    assert detail_colour(channel_by_channel) < detail_colour(transfer_bands(content, style, 0.5)) < detail_colour(both)
    assert (transfer_bands(content, style, 0.0) == content).all()


def across_over_along(images: torch.Tensor) -> float:
    """Luminance change down the image over change across it: above 1 when detail runs horizontally."""
    y = luminance(images)
    return float(y.diff(dim=-2).square().mean() / y.diff(dim=-1).square().mean())


def test_a_style_whose_detail_runs_one_way_turns_the_contents_detail_that_way() -> None:
    noise = torch.rand(1, 1, SIGNATURE_SIDE // 2, SIGNATURE_SIDE // 2, generator=torch.Generator().manual_seed(9))
    content = (scene(SIGNATURE_SIDE // 2, 10) + 0.1 * (noise - 0.5)).clamp(0, 1)  # detail in every direction
    style = band_signature(crisp_lines(SIGNATURE_SIDE))[0]
    oriented, quantiles_only = transfer_bands(content, style), transfer_bands(content, style[:, :BAND_QUANTILES])
    assert across_over_along(content) == pytest.approx(1, abs=0.2)
    assert across_over_along(quantiles_only) == pytest.approx(1, abs=0.3)  # sharper, in every direction alike
    assert across_over_along(oriented) > 1.5 * across_over_along(quantiles_only)
    same = transfer_bands(content, band_signature(content)[0])  # its own balance and quantiles: little moves
    assert (same - content).abs().mean() < 0.25 * (oriented - content).abs().mean()


def test_bands_are_paired_by_scale_relative_to_the_picture() -> None:
    """A picture measured at the signature's scale and stylised at a quarter of it keeps its own detail."""
    small = scene(SIGNATURE_SIDE // 4, 4) + 0.03 * F.interpolate(
        torch.rand(1, 3, SIGNATURE_SIDE // 8, SIGNATURE_SIDE // 8, generator=torch.Generator().manual_seed(5)),
        scale_factor=2, mode="nearest")
    small = small.clamp(0, 1)
    own = band_signature(small)[0]  # measured enlarged 4×: its band k + 2 is the small picture's band k
    other = band_signature(crisp_lines(SIGNATURE_SIDE))[0]
    kept = (transfer_bands(small, own) - small).abs().mean().item()
    moved = (transfer_bands(small, other) - small).abs().mean().item()
    assert kept < 0.25 * moved


def test_blends_average_quantile_functions() -> None:
    first, second = band_signature(scene(128, 6)), band_signature(crisp_lines(128))
    both = torch.cat([first, second])
    assert torch.equal(blend_signatures(both, torch.tensor([1.0, 0.0])), first[0])
    assert torch.allclose(blend_signatures(both, torch.tensor([0.5, 0.5])), (first[0] + second[0]) / 2)
    for width in (CHROMA_START, COVARIANCE_START):  # presets exported before the chroma quantiles or the covariances
        older = second[0, :, :width]
        assert torch.allclose(blend_signatures([first[0], older], torch.tensor([0.5, 0.5])),
                              (first[0, :, :width] + older) / 2)


def test_presets_store_signatures_and_the_stylizer_uses_them(tmp_path) -> None:
    torch.manual_seed(0)
    generator = Generator(GeneratorConfig(encoder_channels=(4, 8, 8), num_residual_blocks=1, style_dim=8,
                                          style_hidden_dim=16, style_image_size=64))
    generator.save_pretrained(tmp_path)
    names = ("lines", "soft")
    presets = [Preset(name=name, title=name) for name in names]
    save_presets(tmp_path, presets, {name: torch.randn(8) for name in names},
                 {name: torch.zeros(0) for name in names})
    (tmp_path / "palettes.safetensors").unlink()  # no palettes: the band transfer alone is tested
    signatures = {"lines": band_signature(crisp_lines(256))[0], "soft": band_signature(scene(256, 7))[0]}
    save_preset_bands(tmp_path, signatures)
    loaded = load_preset_bands(tmp_path, {preset.name: preset for preset in presets})
    assert all(torch.equal(loaded[name], signatures[name]) for name in names)
    with pytest.raises(ValueError, match="unknown presets"):
        load_preset_bands(tmp_path, {"lines": presets[0]})

    stylizer = Stylizer.from_pretrained(tmp_path, device="cpu")
    content = to_pil(scene(160, 8))
    lines, soft = (to_tensor(stylizer.stylize(content, name, 1.0)) for name in names)
    assert fine_detail(lines) > 2 * fine_detail(soft)
    halfway = to_tensor(stylizer.stylize(content, [("lines", 0.5), ("soft", 0.5)], 1.0))
    assert fine_detail(soft) < fine_detail(halfway) < fine_detail(lines)
    image_style = to_tensor(stylizer.stylize(content, to_pil(crisp_lines(256)), 1.0))
    assert fine_detail(image_style) > 2 * fine_detail(soft)  # a style image is measured the same way

    (tmp_path / PRESET_BANDS_FILE).unlink()  # a model saved before band signatures still loads
    assert Stylizer.from_pretrained(tmp_path, device="cpu").stylize(content, "lines", 1.0).size == content.size


def test_the_bundled_model_has_a_signature_per_preset() -> None:
    stylizer = Stylizer.from_pretrained(device="cpu")
    assert set(stylizer._preset_bands) == set(stylizer.presets)
    assert all(signature.shape == (BAND_LEVELS, SIGNATURE_WIDTH)
               for signature in stylizer._preset_bands.values())
    assert isinstance(stylizer.stylize(Image.new("RGB", (64, 48), "grey"), "hokusai_great_wave_off_kanagawa"),
                      Image.Image)


def test_the_pyramid_from_the_halved_image_equals_mapping_the_full_pyramid() -> None:
    from stylegan.bands import _coarse_change, _map_covariance

    image = (0.2 + 0.6 * scene(300, 16) + 0.1 * (colour_blocks(300, 17) - 0.5)).clamp(0, 1)
    covariance = band_signature(0.3 + 0.4 * colour_blocks(SIGNATURE_SIDE, 18))[0, :, COVARIANCE_START:]
    offset = level_offset(300, 300)
    bands, low = laplacian_pyramid(image, offset + BAND_LEVELS)
    for level in CHROMA_LEVELS:
        bands[level + offset] = _map_covariance(bands[level + offset], covariance[level], 0.7)
    change = _coarse_change(image, offset, lambda band, level: _map_covariance(band, covariance[level], 0.7))
    assert change.abs().max() > 0.01
    assert torch.allclose(change, collapse(bands, low) - image, atol=1e-5)
