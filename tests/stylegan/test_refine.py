"""Best quality: the network's result refined by optimisation (`quality="best"`, `stylegan.optimize.refine`)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from stylegan import Stylizer
from stylegan.features import VGG_CHANNELS
from stylegan.generator import Generator, GeneratorConfig
from stylegan.images import resize_long_side, to_tensor
from stylegan.inference import MIN_REFINE_STYLE_SIDE, refine_working_size
from stylegan.losses import style_loss
from stylegan.optimize import REFINE_STYLE_LAYERS, image_grams, palette_loss, refine, style_targets
from stylegan.palette import palette_of
from stylegan.presets import PRESET_GRAMS_FOLDER, Preset, load_preset_grams, save_preset_grams, save_presets

TINY = GeneratorConfig(encoder_channels=(4, 8, 8), num_residual_blocks=2, style_dim=8, style_hidden_dim=16,
                       style_image_size=64)


def pattern(width: int, height: int, seed: int, mode: str = "RGB") -> Image.Image:
    """Seeded oriented stripes plus noise: enough texture for Grams to tell styles apart."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    frequencies, angles = rng.uniform(3, 14, 3), rng.uniform(0, np.pi, 3)
    channels = [np.sin(2 * np.pi * f * (x * np.cos(a) + y * np.sin(a))) for f, a in zip(frequencies, angles)]
    pixels = (0.5 + 0.4 * np.stack(channels, -1) + rng.normal(0, 0.04, (height, width, 3))).clip(0, 1)
    return Image.fromarray((pixels * 255).astype(np.uint8), "RGB").convert(mode)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, vgg):
    """A tiny model folder with two presets, one of them with its style Grams stored."""
    folder = tmp_path_factory.mktemp("tiny-model")
    torch.manual_seed(0)
    generator = Generator(TINY)
    torch.nn.init.normal_(generator.to_modulation.weight, std=0.1)
    generator.save_pretrained(folder)
    styles = {"waves": pattern(48, 40, seed=10), "plain": pattern(40, 40, seed=11)}
    presets = [Preset(name=name, title=name.title()) for name in styles]
    codes = {name: torch.randn(8) for name in styles}
    palettes = {name: palette_of(to_tensor(image))[0] for name, image in styles.items()}
    save_presets(folder, presets, codes, palettes)
    save_preset_grams(folder, {"waves": image_grams(to_tensor(styles["waves"]), vgg, REFINE_STYLE_LAYERS)})
    return folder


@pytest.fixture(scope="module")
def stylizer(model_dir, vgg) -> Stylizer:
    loaded = Stylizer.from_folder(model_dir, repo="tiny", device="cpu")
    loaded.vgg = vgg
    return loaded


def gram_distance(image: Image.Image, style: Image.Image, vgg) -> float:
    """The refinement's style term (1/C²-weighted Gram distance), the style read at the size refine reads it."""
    style_side = max(*image.size, MIN_REFINE_STYLE_SIDE)
    targets = style_targets([(resize_long_side(to_tensor(style), style_side), 1.0)], vgg, REFINE_STYLE_LAYERS)
    with torch.no_grad():
        features = vgg(to_tensor(image.convert("RGB")), REFINE_STYLE_LAYERS)
    return float(style_loss(features, targets, {name: 1 / VGG_CHANNELS[name] ** 2 for name in targets}))


def test_a_few_refine_steps_lower_the_style_loss_from_the_starting_image(vgg) -> None:
    content, style = to_tensor(pattern(40, 32, seed=1)), to_tensor(pattern(48, 48, seed=2))
    start = (0.7 * content + 0.3 * content.flip(-1)).clamp(0, 1)  # stands in for a network's result
    targets = style_targets([(style, 1.0)], vgg, REFINE_STYLE_LAYERS)
    weights = {name: 1 / VGG_CHANNELS[name] ** 2 for name in targets}
    reported: list[float] = []
    steps = list(refine(start, content, targets, vgg, steps=8, every=3, palette=palette_of(style)[0],
                        progress=lambda fraction, message: reported.append(fraction)))
    counts = [evaluations for evaluations, _ in steps]  # L-BFGS's line search may overrun a chunk a little
    assert len(counts) >= 3 and counts == sorted(set(counts)) and counts[-1] >= 8
    refined = steps[-1][1]
    assert refined.shape == start.shape and torch.isfinite(refined).all()
    assert refined.min() >= 0 and refined.max() <= 1
    with torch.no_grad():
        before = float(style_loss(vgg(start, REFINE_STYLE_LAYERS), targets, weights))
        after = float(style_loss(vgg(refined, REFINE_STYLE_LAYERS), targets, weights))
    assert after < 0.7 * before, (before, after)
    assert reported and max(reported) == 1.0


def test_palette_loss_is_small_on_the_palette_and_has_gradients() -> None:
    image, other = to_tensor(pattern(40, 40, seed=3)), to_tensor(pattern(40, 40, seed=4)) ** 3
    palette = palette_of(image)[0]
    assert palette_loss(image, palette) < 1e-5 < palette_loss(other, palette)
    pixels = other.clone().requires_grad_(True)
    palette_loss(pixels, palette).backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0


def test_best_quality_matches_the_style_better_than_fast(stylizer: Stylizer, vgg) -> None:
    content, style = pattern(44, 36, seed=5), pattern(48, 48, seed=6)
    fast = stylizer.stylize(content, style, 1.0)
    best = stylizer.stylize(content, style, 1.0, quality="best", steps=6)
    assert best.size == content.size and best.mode == content.mode
    assert gram_distance(best, style, vgg) < 0.8 * gram_distance(fast, style, vgg)


def test_stylize_iter_shows_the_fast_result_first_then_refined_ones(stylizer: Stylizer) -> None:
    content, style = pattern(40, 32, seed=7), pattern(48, 48, seed=8)
    results = list(stylizer.stylize_iter(content, style, 0.9, steps=10))
    assert np.array_equal(np.asarray(results[0]), np.asarray(stylizer.stylize(content, style, 0.9)))
    assert len(results) >= 3  # the network's result, then one every 5 of 10 evaluations
    assert np.array_equal(np.asarray(results[-1]),
                          np.asarray(stylizer.stylize(content, style, 0.9, quality="best", steps=10)))
    # Closing the iterator stops the work: no step after the one being shown.
    reported: list[float] = []
    iterator = stylizer.stylize_iter(content, style, 0.9, steps=20, every=2,
                                     progress=lambda fraction, message: reported.append(fraction))
    next(iterator), next(iterator)
    iterator.close()
    assert reported and max(reported) < 0.5


def test_strength_zero_returns_the_content() -> None:
    bundled = Stylizer.from_pretrained(device="cpu")
    content, style = pattern(48, 40, seed=9), pattern(48, 48, seed=10)
    reported: list[float] = []
    best = bundled.stylize(content, style, 0.0, quality="best", steps=5,
                           progress=lambda fraction, message: reported.append(fraction))
    assert np.array_equal(np.asarray(best), np.asarray(bundled.stylize(content, style, 0.0)))
    assert np.abs(to_tensor(best) - to_tensor(content)).mean() < 0.03
    assert reported == []  # nothing to refine


def test_presets_blends_and_missing_preset_grams(stylizer: Stylizer, model_dir, vgg) -> None:
    content, style = pattern(40, 36, seed=11), pattern(48, 44, seed=12)
    stored = load_preset_grams(model_dir / PRESET_GRAMS_FOLDER / "waves.safetensors")
    exact = image_grams(to_tensor(pattern(48, 40, seed=10)), vgg, REFINE_STYLE_LAYERS)
    assert sorted(stored) == sorted(REFINE_STYLE_LAYERS)
    for layer, gram in exact.items():  # symmetric, bfloat16's rounding only
        assert torch.equal(stored[layer], stored[layer].T)
        assert torch.allclose(stored[layer], gram, rtol=2 ** -7, atol=1e-3 * float(gram.abs().max()))
    by_preset = stylizer.stylize(content, "waves", 1.0, quality="best", steps=4)
    only_preset = stylizer.stylize(content, [("waves", 1.0), (style, 0.0)], 1.0, quality="best", steps=4)
    assert np.array_equal(np.asarray(by_preset), np.asarray(only_preset))
    blend = stylizer.stylize(content, [("waves", 1.0), (style, 1.0)], 1.0, quality="best", steps=4)
    by_image = stylizer.stylize(content, style, 1.0, quality="best", steps=4)
    assert not np.array_equal(np.asarray(blend), np.asarray(by_preset))
    assert not np.array_equal(np.asarray(blend), np.asarray(by_image))
    with pytest.raises(ValueError, match="'plain' has no Gram matrices.*quality='best' needs them"):
        stylizer.stylize(content, "plain", 1.0, quality="best", steps=2)
    assert stylizer.stylize(content, "plain", 1.0).size == content.size  # the fast path needs only the code


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA", "I;16"])
def test_modes_sizes_and_alpha_as_in_the_fast_path(stylizer: Stylizer, mode: str) -> None:
    content = pattern(37, 29, seed=13, mode="RGBA" if mode in ("RGBA", "LA") else "RGB")
    if mode in ("RGBA", "LA"):
        alpha = Image.fromarray(np.tile(np.linspace(0, 255, 37, dtype=np.uint8), (29, 1)))
        content.putalpha(alpha)
    content = content.convert(mode)
    best = stylizer.stylize(content, "waves", 0.8, quality="best", steps=2)
    fast = stylizer.stylize(content, "waves", 0.8)
    assert best.size == fast.size == content.size and best.mode == fast.mode
    if "A" in mode:
        assert np.array_equal(np.asarray(best.getchannel("A")), np.asarray(content.getchannel("A")))


def test_large_images_refine_at_the_texture_side_and_get_their_detail_back(stylizer: Stylizer) -> None:
    content, style = pattern(300, 200, seed=14), pattern(48, 48, seed=15)
    assert refine_working_size(content.size, texture_side=96) == (118, 78)
    assert refine_working_size(content.size, max_long_side=150, texture_side=None) == (150, 100)
    best = stylizer.stylize(content, style, 1.0, quality="best", steps=2, texture_side=96)
    assert best.size == content.size
    fast = stylizer.stylize(content, style, 1.0, texture_side=96)
    # Both restore the content's full-resolution luminance detail over a 118×78 painting.
    detail = lambda image: np.abs(np.diff(np.asarray(image.convert("L"), np.float32), axis=1)).mean()
    assert detail(best) > 0.8 * detail(fast)


def test_bad_arguments_are_named(stylizer: Stylizer) -> None:
    content, style = pattern(24, 24, seed=16), pattern(24, 24, seed=17)
    with pytest.raises(ValueError, match="quality must be one of"):
        stylizer.stylize(content, style, quality="ultra")
    with pytest.raises(ValueError, match="mode='optimize' has none to refine"):
        stylizer.stylize(content, style, quality="best", mode="optimize")
    with pytest.raises(ValueError, match="steps must be ≥ 1"):
        stylizer.stylize(content, style, quality="best", steps=0)
    start = to_tensor(content)
    with pytest.raises(ValueError, match="differ in shape"):
        next(refine(start[..., :20], start, {}, stylizer.vgg))
