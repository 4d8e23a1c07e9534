"""Per-image optimisation (Gatys-style): it lowers its objective, respects strength and range, plugs into Stylizer."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from stylegan import Stylizer
from stylegan.features import CONTENT_LAYER, VGG19Features
from stylegan.generator import Generator, GeneratorConfig
from stylegan.optimize import (
    CONTENT_WEIGHT,
    STYLE_WEIGHT,
    TV_WEIGHT,
    optimize_stylize,
    style_targets,
    stylization_objective,
)
from stylegan.presets import Preset

TINY = GeneratorConfig(encoder_channels=(4, 8, 8), num_residual_blocks=2, style_dim=8, style_hidden_dim=16,
                       style_image_size=64)


@pytest.fixture(scope="module")
def vgg() -> VGG19Features:
    # Random weights, scaled up so activations keep their size through 13 ReLU layers.
    torch.manual_seed(0)
    network = VGG19Features()
    for module in network.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            torch.nn.init.zeros_(module.bias)
    # The network expects caffe-scale input (0-255); bring features back to the pretrained scale.
    network.conv1_1.weight.data /= 255.0
    return network


def textured(height: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    base = torch.stack([x, y, 0.5 + 0.5 * torch.sin(12 * x + 7 * y)])[None]
    return (0.8 * base + 0.2 * torch.rand(1, 3, height, width, generator=generator)).clamp(0, 1)


def objective(vgg: VGG19Features, pixels: torch.Tensor, content: torch.Tensor, style: torch.Tensor,
              strength: float = 1.0) -> float:
    with torch.no_grad():
        content_features = vgg(content, (CONTENT_LAYER,))[CONTENT_LAYER]
        grams = style_targets([(style, 1.0)], vgg)
        return float(stylization_objective(pixels, vgg, content_features, grams, strength=strength,
                                           content_weight=CONTENT_WEIGHT, style_weight=STYLE_WEIGHT,
                                           tv_weight=TV_WEIGHT))


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_optimisation_lowers_the_objective_and_stays_in_range(vgg: VGG19Features, optimizer: str) -> None:
    content, style = textured(32, 40, seed=1), textured(48, 48, seed=2).flip(-1) ** 2
    reported: list[tuple[float, str]] = []
    result = optimize_stylize(content, style_targets([(style, 1.0)], vgg), vgg, steps=15, optimizer=optimizer, seed=0,
                              progress=lambda fraction, message: reported.append((fraction, message)))
    assert result.shape == content.shape and result.dtype == torch.float32
    assert torch.isfinite(result).all() and result.min() >= 0 and result.max() <= 1
    before, after = objective(vgg, content, content, style), objective(vgg, result, content, style)
    assert after < 0.8 * before, (before, after)
    assert not torch.allclose(result, content, atol=1e-2)
    assert reported and reported[-1][0] == 1.0 and all(0 < fraction <= 1 for fraction, _ in reported)


def test_strength_zero_returns_the_content(vgg: VGG19Features) -> None:
    content, style = textured(24, 24, seed=3), textured(24, 24, seed=4)
    result = optimize_stylize(content, style_targets([(style, 1.0)], vgg), vgg, strength=0.0, steps=10)
    assert torch.allclose(result, content, atol=2e-3)


def test_weighted_style_targets_blend_grams(vgg: VGG19Features) -> None:
    first, second = textured(32, 32, seed=5), textured(32, 32, seed=6).flip(-2)
    only_first, only_second = style_targets([(first, 1.0)], vgg), style_targets([(second, 1.0)], vgg)
    blended = style_targets([(first, 3.0), (second, 1.0)], vgg)
    for name, gram in blended.items():
        assert torch.allclose(gram, 0.75 * only_first[name] + 0.25 * only_second[name], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="weights"):
        style_targets([(first, -1.0), (second, 1.0)], vgg)


def test_seed_is_reproducible_and_inputs_untouched(vgg: VGG19Features) -> None:
    content, style = textured(24, 32, seed=7), textured(24, 24, seed=8)
    content_copy, style_copy = content.clone(), style.clone()
    first = optimize_stylize(content, style_targets([(style, 1.0)], vgg), vgg, steps=4, optimizer="adam", seed=11)
    second = optimize_stylize(content, style_targets([(style, 1.0)], vgg), vgg, steps=4, optimizer="adam", seed=11)
    other = optimize_stylize(content, style_targets([(style, 1.0)], vgg), vgg, steps=4, optimizer="adam", seed=12)
    assert torch.equal(first, second) and not torch.equal(first, other)
    assert torch.equal(content, content_copy) and torch.equal(style, style_copy)


def test_bad_arguments_are_named(vgg: VGG19Features) -> None:
    content = textured(16, 16, seed=9)
    with pytest.raises(ValueError, match="optimizer"):
        optimize_stylize(content, style_targets([(content, 1.0)], vgg), vgg, optimizer="sgd")
    with pytest.raises(ValueError, match="strength"):
        optimize_stylize(content, style_targets([(content, 1.0)], vgg), vgg, strength=1.5)
    with pytest.raises(ValueError, match="no style"):
        style_targets([], vgg)
    with pytest.raises(ValueError, match="at least 16 px"):
        optimize_stylize(content[..., :12], style_targets([(content, 1.0)], vgg), vgg)


def test_stylizer_optimize_mode(vgg: VGG19Features) -> None:
    torch.manual_seed(0)
    stylizer = Stylizer(Generator(TINY), {"waves": Preset(name="waves", title="Waves")}, {"waves": torch.randn(8)},
                        vgg=vgg, device="cpu")
    rng = np.random.default_rng(0)
    content = Image.fromarray(rng.integers(0, 255, (20, 28, 3), dtype=np.uint8), "RGB").convert("L")
    style = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), "RGB")
    result = stylizer.stylize(content, style, 1.0, mode="optimize", steps=3, seed=0)
    assert result.size == content.size and result.mode == "L"
    with pytest.raises(ValueError, match="'waves' has no Gram matrices .* mode='optimize' needs them"):
        stylizer.stylize(content, [("waves", 0.5), (style, 0.5)], mode="optimize", steps=3)
    with pytest.raises(ValueError, match="mode"):
        stylizer.stylize(content, style, mode="fast")
