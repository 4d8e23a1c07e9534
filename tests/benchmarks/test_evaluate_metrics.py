"""The quality benchmark's metrics (benchmarks/metrics.py) and pair order, on small synthetic inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.evaluate import (
    METRIC_LAYERS,
    NETWORK_ALONE,
    averages,
    build_methods,
    grams,
    pair_order,
    parse_args,
    split_files,
)
from benchmarks.metrics import (
    FLAT_CONTRAST,
    colour_directions,
    colour_distance,
    contrast_kept,
    gram_hw,
    identification_distance,
    identification_distances_by_layer,
    identification_margin,
    identification_rate,
    nearest_styles,
    projected_quantiles,
)
from stylegan import Stylizer
from stylegan.features import VGG19Features
from stylegan.generator import Generator, GeneratorConfig
from stylegan.images import to_pil, to_tensor
from training.validation import VALIDATION_CONTENTS, VALIDATION_STYLES


@pytest.fixture(scope="module")
def random_vgg() -> VGG19Features:
    torch.manual_seed(0)
    return VGG19Features()  # random weights: the architecture, not ImageNet's features


def smooth_image(height: int, width: int, seed: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """(1, 3, H, W) smooth random colours in [low, high]."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 4, 4, generator=generator)
    image = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return low + (high - low) * image


def test_colour_directions_are_the_fixed_unit_rows() -> None:
    directions = colour_directions()
    expected = np.random.default_rng(0).standard_normal((64, 3))
    assert directions.shape == (64, 3)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0)
    np.testing.assert_allclose(directions * np.linalg.norm(expected, axis=1, keepdims=True), expected)


def test_colour_distance_to_itself_is_zero_and_to_another_image_is_not() -> None:
    image = smooth_image(64, 96, seed=0)
    assert colour_distance(image, image) == 0.0
    assert colour_distance(image, smooth_image(64, 96, seed=1)) > 0.01


def test_colour_distance_of_a_shift_is_the_mean_absolute_projected_shift() -> None:
    image = smooth_image(48, 64, seed=2, low=0.2, high=0.7)
    shift = torch.tensor([0.1, -0.05, 0.2])
    shifted = image + shift.view(1, 3, 1, 1)  # stays inside [0, 1]: nothing clipped
    expected = np.abs(colour_directions() @ shift.double().numpy()).mean()
    assert colour_distance(shifted, image, side=None) == pytest.approx(expected, rel=1e-6)
    assert colour_distance(image, shifted, side=None) == pytest.approx(expected, rel=1e-6)


def test_colour_distance_ignores_where_the_colours_are_and_the_image_size() -> None:
    image = smooth_image(32, 32, seed=3)
    flipped = image.flip(-1).transpose(-1, -2)  # the same pixels, elsewhere
    assert colour_distance(flipped, image, side=None) == pytest.approx(0.0, abs=1e-12)
    assert colour_distance(image.repeat(1, 1, 2, 2), image, side=None) < 1e-3  # same distribution, 4× the pixels


def test_colour_distance_resizes_to_the_long_side() -> None:
    image = smooth_image(300, 500, seed=4)
    small = torch.nn.functional.interpolate(image, size=(154, 256), mode="bilinear", antialias=True)
    assert colour_distance(image, small) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="1, 3, H, W"):
        colour_distance(image[0], image)


def test_gram_hw_divides_by_positions_only() -> None:
    features = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5) / 100
    flat = features.reshape(2, 3, 20)
    expected = torch.einsum("bcn,bdn->bcd", flat, flat) / 20
    assert torch.allclose(gram_hw(features), expected)
    assert gram_hw(torch.ones(1, 8, 2, 3))[0].eq(1).all()  # mean of 1·1 over positions, independent of C


def test_identification_distance_is_the_mean_over_layers_of_the_mean_squared_difference() -> None:
    first = {"a": torch.zeros(2, 2), "b": torch.zeros(4, 4)}
    second = {"a": torch.full((2, 2), 2.0), "b": torch.ones(4, 4)}
    assert identification_distance(first, second) == pytest.approx((4.0 + 1.0) / 2)
    assert identification_distance(first, first) == 0.0
    with pytest.raises(ValueError, match="layers differ"):
        identification_distance(first, {"a": torch.zeros(2, 2)})


def test_identification_rate_counts_outputs_nearest_their_own_style() -> None:
    distances = np.array([[0.1, 0.5, 0.9],
                          [0.4, 0.2, 0.3],
                          [0.3, 0.1, 0.2]])  # the last one is nearest style 1
    assert nearest_styles(distances).tolist() == [0, 1, 1]
    assert identification_rate(distances, [0, 1, 2]) == pytest.approx(2 / 3)
    assert identification_rate(distances, [1, 0, 0]) == 0.0
    with pytest.raises(ValueError, match="3 outputs but 2"):
        identification_rate(distances, [0, 1])


def test_identification_margin_is_the_mean_log_ratio_to_the_nearest_other_style() -> None:
    distances = np.array([[0.1, 0.5, 0.9],
                          [0.4, 0.2, 0.3],
                          [0.3, 0.1, 0.2]])
    expected = (np.log(0.1 / 0.5) + np.log(0.2 / 0.3) + np.log(0.2 / 0.1)) / 3  # the last one: not identified
    assert identification_margin(distances, [0, 1, 2]) == pytest.approx(expected)
    assert identification_margin(distances[:2], [0, 1]) < 0  # both identified
    with pytest.raises(ValueError, match="one used style per output"):
        identification_margin(distances, [0, 1])


def test_each_style_as_its_own_output_is_identified(random_vgg: VGG19Features) -> None:
    styles = [smooth_image(40, 48, seed=10 + index) for index in range(3)]
    identity_grams = [grams(random_vgg, style)[1] for style in styles]
    assert set(identity_grams[0]) == set(METRIC_LAYERS)
    distances = np.array([[identification_distance(output, style) for style in identity_grams]
                          for output in identity_grams])
    assert np.diag(distances).tolist() == [0.0, 0.0, 0.0]
    assert (distances + np.eye(3) > 0).all()
    assert identification_rate(distances, [0, 1, 2]) == 1.0


def test_grams_gives_both_normalisations_from_one_pass(random_vgg: VGG19Features) -> None:
    gain_grams, identity_grams = grams(random_vgg, smooth_image(32, 32, seed=5))
    for name in METRIC_LAYERS:
        channels = gain_grams[name].shape[0]
        assert torch.allclose(identity_grams[name], gain_grams[name] * channels, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("contents", "styles"), [(8, 8), (8, 16), (16, 8), (8, 12), (3, 5)])
def test_pair_order_covers_every_pair_once_and_spreads_every_prefix(contents: int, styles: int) -> None:
    order = pair_order(contents, styles)
    assert sorted(order) == [(c, s) for c in range(contents) for s in range(styles)]
    for length in range(1, len(order) + 1):
        content_counts = np.bincount([c for c, _ in order[:length]], minlength=contents)
        style_counts = np.bincount([s for _, s in order[:length]], minlength=styles)
        assert content_counts.max() - content_counts.min() <= 1
        assert style_counts.max() - style_counts.min() <= 1


def test_pair_order_with_as_many_contents_as_styles_is_unchanged() -> None:
    # content c with style c + k, k = 0, 1, ...: the order earlier evaluations' --pairs subsets used
    assert pair_order(8, 8) == [(c, (c + k) % 8) for k in range(8) for c in range(8)]
    assert pair_order(16, 8) == [(c, (c + k) % 8) for k in range(8) for c in range(16)]


def test_projected_quantiles_are_numpys_linear_quantiles() -> None:
    image = smooth_image(20, 30, seed=6)
    directions = colour_directions(5)
    pixels = image[0].reshape(3, -1).T.double().numpy() @ directions.T
    expected = np.quantile(pixels, (np.arange(256) + 0.5) / 256, axis=0)
    np.testing.assert_allclose(projected_quantiles(image, directions, side=None), expected, rtol=0, atol=1e-12)


def test_validation_split_is_the_named_files_and_a_missing_one_is_an_error(tmp_path: Path) -> None:
    for folder, names in (("content_more", VALIDATION_CONTENTS), ("styles_more", VALIDATION_STYLES)):
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / name).touch()
    (tmp_path / "styles_more" / "not_in_the_split.jpg").touch()
    contents, styles = split_files(tmp_path, "validation")
    assert [path.name for path in contents] == list(VALIDATION_CONTENTS)
    assert [path.name for path in styles] == list(VALIDATION_STYLES)
    (tmp_path / "styles_more" / VALIDATION_STYLES[3]).unlink()
    with pytest.raises(SystemExit, match=VALIDATION_STYLES[3]):
        split_files(tmp_path, "validation")


def test_a_collapsed_output_counts_as_flattened_and_the_content_does_not() -> None:
    content = smooth_image(40, 56, 3)
    washed_out = 0.6 + 0.05 * (content - 0.5)  # the same picture at a twentieth of its contrast
    assert contrast_kept(content, content) == pytest.approx(1.0)
    assert contrast_kept(washed_out, content) < FLAT_CONTRAST
    entries = [entry(contrast_kept=value) for value in (1.0, contrast_kept(washed_out, content))]
    summary = averages(entries, ["a", "b"])
    assert summary["n_flattened"] == 1 and summary["flattened"] == 0.5


def entry(**values: object) -> dict[str, object]:
    """One output's measures as `measure` records them: made with style "a" of ["a", "b"], nearer to it."""
    return {"style": "a", "identification_distances": [0.0, 1.0], "colour_distance": 0.1, "gram_gain": 0.2,
            "ssim": 0.5, "contrast_kept": 1.0,
            "identification_distances_by_layer": {name: [0.0, 1.0] for name in METRIC_LAYERS}, **values}


def test_each_layer_reports_what_it_identifies_alone_and_its_share_of_the_distance() -> None:
    # The last layer's Grams are 100x larger: it decides, and it points at the wrong style.
    by_layer = {name: [1.0, 2.0] for name in METRIC_LAYERS[:-1]} | {METRIC_LAYERS[-1]: [300.0, 100.0]}
    summary = averages([entry(identification_distances_by_layer=by_layer,
                              identification_distances=[float(np.mean([d[0] for d in by_layer.values()])),
                                                        float(np.mean([d[1] for d in by_layer.values()]))])],
                       ["a", "b"])
    assert summary["style_identified"] == 0.0
    layers = summary["by_layer"]
    assert [layers[name]["identified"] for name in METRIC_LAYERS] == [1.0] * (len(METRIC_LAYERS) - 1) + [0.0]
    total = 1.5 * (len(METRIC_LAYERS) - 1) + 200.0
    assert layers[METRIC_LAYERS[-1]]["distance_share"] == pytest.approx(200.0 / total)
    assert sum(layer["distance_share"] for layer in layers.values()) == pytest.approx(1.0)
    assert identification_distances_by_layer({"a": torch.zeros(2, 2)}, {"a": torch.ones(2, 2)}) == {"a": 1.0}


def test_network_alone_is_the_networks_result_before_palette_bands_and_chroma(random_vgg: VGG19Features) -> None:
    torch.manual_seed(0)
    generator = Generator(GeneratorConfig(encoder_channels=(4, 8, 8), num_residual_blocks=1, style_dim=8,
                                          style_hidden_dim=16, style_image_size=64))
    torch.nn.init.normal_(generator.to_modulation.weight, std=0.1)
    stylizer = Stylizer(generator, vgg=random_vgg, device="cpu")
    methods = build_methods(parse_args(["--no-peer", "--no-microast", "--network-alone"]), stylizer, [(0, 0)])
    assert list(methods) == ["ours", NETWORK_ALONE]
    rng = np.random.default_rng(0)
    content = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    style = Image.fromarray(np.kron(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), np.ones((12, 12, 1), np.uint8)))
    alone, full = methods[NETWORK_ALONE][0](content, style), methods["ours"][0](content, style)
    code = generator.blend(stylizer.blended_code(style)[None], 1.0)
    with torch.inference_mode():
        expected = stylizer.stylize_tensor(to_tensor(content), code)
    assert alone.size == full.size == content.size
    assert np.abs(np.asarray(alone, np.int16) - np.asarray(to_pil(expected), np.int16)).max() <= 1
    assert np.abs(np.asarray(alone, np.int16) - np.asarray(full, np.int16)).mean() > 2  # palette and bands act on "ours"
