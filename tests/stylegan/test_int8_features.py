"""Int8 VGG19 for reading style images: the statistics a style code reads stay those of float VGG19."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from stylegan import Stylizer
from stylegan.features import STYLE_LAYERS, VGG19Features
from stylegan.generator import Generator, GeneratorConfig, channel_moments
from stylegan.int8_features import Int8StyleFeatures, calibrate_activation_scales, int8_available

pytestmark = pytest.mark.skipif(not int8_available(), reason="no x86 quantised engine in this PyTorch")


def painting(seed: int, size: tuple[int, int] = (96, 128)) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1]: smooth colour fields with oriented strokes, like a picture rather than noise."""
    generator = torch.Generator().manual_seed(seed)
    fields = F.interpolate(torch.rand(1, 3, 6, 8, generator=generator), size=size, mode="bicubic", align_corners=False)
    rows, columns = torch.meshgrid(torch.arange(size[0]), torch.arange(size[1]), indexing="ij")
    angle, period = float(torch.rand((), generator=generator)) * 3.14, 4 + 8 * float(torch.rand((), generator=generator))
    strokes = torch.sin((rows * np.cos(angle) + columns * np.sin(angle)) * 6.28 / period)
    return (fields + 0.15 * strokes * torch.rand(3, 1, 1, generator=generator)).clamp(0, 1)


def relative_moment_errors(reference: dict[str, torch.Tensor], approximate: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per layer, mean |Δ| of the per-channel means and stds over the mean of the reference's."""
    errors = {}
    for name, (mean, std) in channel_moments(reference, tuple(reference)).items():
        other_mean, other_std = channel_moments(approximate, (name,))[name]
        errors[name] = max(float((mean - other_mean).abs().mean() / mean.abs().mean()),
                           float((std - other_std).abs().mean() / std.abs().mean()))
    return errors


@pytest.fixture(scope="module")
def vgg() -> VGG19Features:
    return VGG19Features.pretrained()


@pytest.mark.parametrize("calibrated_here", [False, True], ids=["shipped scales", "scales calibrated on similar images"])
def test_int8_channel_statistics_stay_within_a_few_percent_of_float(vgg: VGG19Features, calibrated_here: bool) -> None:
    images = [painting(seed) for seed in range(6)]
    scales = calibrate_activation_scales(vgg, images[3:]) if calibrated_here else None
    int8 = Int8StyleFeatures(vgg, scales) if scales else Int8StyleFeatures(vgg)
    if scales:
        assert len(scales) == 9 and all(scale > 0 for scale in scales)
    for image in images[:3]:
        reference, approximate = vgg(image, STYLE_LAYERS), int8(image, STYLE_LAYERS)
        assert {name: value.shape for name, value in approximate.items()} == \
               {name: value.shape for name, value in reference.items()}
        assert all(value.dtype == torch.float32 for value in approximate.values())
        errors = relative_moment_errors(reference, approximate)
        assert max(errors.values()) < 0.05, errors
        assert errors["relu1_1"] < 0.01, errors


def test_int8_features_refuse_layers_past_relu4_1_and_wrong_scales(vgg: VGG19Features) -> None:
    int8 = Int8StyleFeatures(vgg)
    with pytest.raises(ValueError, match="stop at relu4_1"):
        int8(painting(0), ("relu1_1", "relu5_1"))
    with pytest.raises(ValueError, match="9 activation scales"):
        Int8StyleFeatures(vgg, (1.0, 2.0))
    assert set(int8(painting(0), ("relu2_1",))) == {"relu2_1"}


def test_a_stylizer_reads_new_styles_in_int8_on_the_cpu_with_nearly_the_float_code(vgg: VGG19Features) -> None:
    torch.manual_seed(0)
    config = GeneratorConfig(encoder_channels=(4, 8, 8), num_residual_blocks=1, style_dim=8, style_hidden_dim=16,
                             style_image_size=64)
    generator = Generator(config)
    fast = Stylizer(generator, vgg=vgg, device="cpu")
    exact = Stylizer(generator, vgg=vgg, device="cpu", int8_style_features=False)
    assert isinstance(fast._style_features, Int8StyleFeatures) and exact._style_features is vgg
    assert (fast.style_image_features, exact.style_image_features) == ("VGG19 int8", "VGG19 float32")  # provenance
    for seed in range(3):
        style = Image.fromarray((painting(seed)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        code, reference = fast.style_code(style), exact.style_code(style)
        assert (code - reference).norm() < 0.05 * reference.norm()
    deeper = Generator(GeneratorConfig(encoder_channels=(4, 8, 8), num_residual_blocks=1, style_dim=8,
                                       style_hidden_dim=16, style_layers=(*STYLE_LAYERS, "relu5_1")))
    assert Stylizer(deeper, vgg=vgg, device="cpu")._style_features is vgg  # int8 stops at relu4_1: float instead
    with pytest.raises(ValueError, match="int8 style features need"):
        Stylizer(deeper, vgg=vgg, device="cpu", int8_style_features=True)
