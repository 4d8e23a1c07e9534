"""Generator and discriminator: shapes, ranges, gradients, determinism, strict save/load."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from stylegan.discriminator import Discriminator, DiscriminatorConfig
from stylegan.generator import Generator, GeneratorConfig, upsample_conv

TINY = GeneratorConfig(encoder_channels=(4, 8, 8), num_residual_blocks=2, style_dim=8, style_hidden_dim=16)


def tiny_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    generator = Generator(TINY)
    # The modulation starts at zero (identity); give it weights so styles differ.
    torch.nn.init.normal_(generator.to_modulation.weight, std=0.1)
    return generator


def style_code(generator: Generator, batch: int = 1, seed: int = 1) -> torch.Tensor:
    statistics = torch.rand(batch, TINY.style_statistics_dim, generator=torch.Generator().manual_seed(seed))
    return generator.encode_style(statistics)


@pytest.mark.parametrize("size", [(32, 32), (36, 52), (8, 12), (64, 20)])
def test_generator_shape_range_and_odd_sizes(size: tuple[int, int]) -> None:
    generator = tiny_generator().eval()
    content = torch.rand(2, 3, *size)
    output = generator(content, generator.blend(style_code(generator, 2), 1.0))
    assert output.shape == content.shape
    assert torch.isfinite(output).all() and output.min() >= 0 and output.max() <= 1


def test_generator_rejects_sizes_not_multiple_of_4() -> None:
    generator = tiny_generator()
    for size in [(30, 32), (4, 8)]:
        with pytest.raises(ValueError, match="multiples of 4 and at least 8"):
            generator(torch.rand(1, 3, *size), style_code(generator))


def test_every_generator_parameter_gets_a_gradient() -> None:
    generator = tiny_generator()
    code = generator.blend(style_code(generator, 2), torch.tensor([1.0, 0.5]))
    output = generator(torch.rand(2, 3, 16, 16), code)
    output.square().mean().backward()
    missing = [name for name, p in generator.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_generator_is_deterministic_in_eval() -> None:
    generator = tiny_generator().eval()
    content, code = torch.rand(1, 3, 24, 24), style_code(generator)
    assert torch.equal(generator(content, code), generator(content, code))


def test_strength_blends_codes_linearly() -> None:
    generator = tiny_generator()
    code = style_code(generator)[0]
    assert torch.allclose(generator.blend(code, 0.0), generator.identity_code)
    assert torch.allclose(generator.blend(code, 1.0), code)
    assert torch.allclose(generator.blend(code, 0.25), 0.75 * generator.identity_code + 0.25 * code)


@pytest.mark.parametrize("size", [(8, 8), (5, 11)])
def test_upsample_conv_equals_nearest_upsampling_then_the_convolution(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.ReflectionPad2d(1), torch.nn.Conv2d(6, 4, 3))
    x = torch.randn(2, 6, *size)
    expected = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    actual = upsample_conv(x, conv)
    assert actual.shape == expected.shape == (2, 4, 2 * size[0], 2 * size[1])
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_fixed_norm_stats_reproduce_per_image_normalisation() -> None:
    generator = tiny_generator().eval()
    content, code = torch.rand(1, 3, 32, 32), style_code(generator)
    stats = generator.measure_norm_stats(content, code)
    assert len(stats) == 3 + 2 * TINY.num_residual_blocks + 2
    assert torch.allclose(generator(content, code, stats), generator(content, code), atol=1e-5)


def test_one_image_equals_its_row_in_a_batch() -> None:
    """A single image takes the group-norm fast path; a batch the explicit statistics: same result."""
    generator = tiny_generator().eval()
    contents = torch.rand(2, 3, 40, 36)
    codes = torch.randn(2, generator.config.style_dim)
    with torch.no_grad():
        batch = generator(contents, codes)
        for row in range(2):
            single = generator(contents[row:row + 1], codes[row:row + 1])
            torch.testing.assert_close(single, batch[row:row + 1], atol=1e-5, rtol=1e-4)


def test_save_load_round_trip_is_strict_and_exact(tmp_path: Path) -> None:
    generator = tiny_generator().eval()
    generator.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = Generator.from_pretrained(tmp_path, strict=True).eval()
    assert loaded.config == TINY
    content, code = torch.rand(1, 3, 16, 16), style_code(generator)
    assert torch.equal(loaded(content, code), generator(content, code))
    # A weights file with a missing key is refused, not silently half-loaded.
    state = load_file(tmp_path / "model.safetensors")
    state.pop(next(iter(state)))
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(RuntimeError, match="Missing key"):
        Generator.from_pretrained(tmp_path, strict=True)


@pytest.mark.parametrize("num_scales,spectral_norm", [(1, True), (2, False)])
def test_discriminator_patch_logits_and_gradients(num_scales: int, spectral_norm: bool) -> None:
    torch.manual_seed(0)
    config = DiscriminatorConfig(style_statistics_dim=6, base_channels=4, num_layers=2,
                                 num_scales=num_scales, spectral_norm=spectral_norm)
    discriminator = Discriminator(config)
    images, statistics = torch.rand(3, 3, 32, 32), torch.rand(3, 6)
    logits = discriminator(images, statistics)
    patches = 8 * 8 + (4 * 4 if num_scales == 2 else 0)  # 32 / 2^num_layers per side, per scale
    assert logits.shape == (3, patches)
    logits.mean().backward()
    missing = [n for n, p in discriminator.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_discriminator_is_conditioned_on_the_style() -> None:
    torch.manual_seed(0)
    discriminator = Discriminator(DiscriminatorConfig(style_statistics_dim=6, base_channels=4, num_layers=2))
    images = torch.rand(1, 3, 32, 32)
    a = discriminator(images, torch.zeros(1, 6))
    b = discriminator(images, torch.ones(1, 6))
    assert not torch.allclose(a, b)
