"""The onnxruntime backend: same outputs as torch (whole image and tiles), export cache, refusals."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stylegan import Stylizer
from stylegan.generator import Generator, GeneratorConfig
from tests.helpers.required import required_import

onnx_backend = required_import("stylegan.onnx_backend", reason="onnxruntime, onnx and onnxscript not installed")

TINY = GeneratorConfig(encoder_channels=(4, 8, 8), num_residual_blocks=2, style_dim=8, style_hidden_dim=16,
                       style_image_size=64)
TOLERANCE = 1e-4


def tiny_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    generator = Generator(TINY)
    for layer in (generator.to_modulation, generator.to_color):  # zero-initialised: make the style matter
        torch.nn.init.normal_(layer.weight, std=0.1)
    return generator


def stylizer_pair(generator: Generator, cache_dir: Path, **kwargs) -> tuple[Stylizer, Stylizer]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(onnx_backend.CACHE_ENV, str(cache_dir))
        return (Stylizer(generator, device="cpu", **kwargs),
                Stylizer(generator, device="cpu", backend="onnx", **kwargs))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def tiny_pair(cache_dir: Path, vgg) -> tuple[Stylizer, Stylizer]:
    return stylizer_pair(tiny_generator(), cache_dir, vgg=vgg)


@pytest.fixture
def onnx_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records each onnxruntime call (True when it ran the tiled graph), proving the backend was used."""
    calls: list[bool] = []
    original = onnx_backend.OnnxGenerator.__call__

    def recording(self, content, code, norm_stats=None):
        calls.append(norm_stats is not None)
        return original(self, content, code, norm_stats)

    monkeypatch.setattr(onnx_backend.OnnxGenerator, "__call__", recording)
    return calls


def random_pixels(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", [(37, 23), (8, 8), (61, 90), (3, 50)])
def test_whole_image_matches_torch(tiny_pair: tuple[Stylizer, Stylizer], size: tuple[int, int],
                                   onnx_calls: list[bool]) -> None:
    reference, onnx = tiny_pair
    pixels, code = random_pixels(*size), torch.randn(1, TINY.style_dim)
    expected = reference.stylize_tensor(pixels, code)
    actual = onnx.stylize_tensor(pixels, code)
    assert actual.shape == expected.shape == pixels.shape
    assert (actual - expected).abs().max() < TOLERANCE
    assert onnx_calls == [False]


def test_tiles_match_torch(tiny_pair: tuple[Stylizer, Stylizer], onnx_calls: list[bool]) -> None:
    reference, onnx = tiny_pair
    pixels, code = random_pixels(300, 262, seed=1), torch.randn(1, TINY.style_dim)
    expected = reference.stylize_tensor(pixels, code, tile_size=240)  # 2×2 tiles, fixed statistics
    actual = onnx.stylize_tensor(pixels, code, tile_size=240)
    assert (actual - expected).abs().max() < TOLERANCE
    assert onnx_calls == [True] * 4


def test_exports_are_cached_by_weights_hash(tiny_pair: tuple[Stylizer, Stylizer], cache_dir: Path, vgg,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _, onnx = tiny_pair
    pixels, code = random_pixels(40, 48), torch.randn(1, TINY.style_dim)
    first = onnx.stylize_tensor(pixels, code)
    sha256 = onnx_backend.weights_sha256(onnx.generator)
    assert onnx._onnx.path(tiled=False) == cache_dir / sha256 / onnx._onnx.path(tiled=False).name

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds this model")

    monkeypatch.setattr(onnx_backend, "export_generator", no_export)
    _, reloaded = stylizer_pair(tiny_generator(), cache_dir, vgg=vgg)  # same weights, new objects
    assert torch.equal(reloaded.stylize_tensor(pixels, code), first)
    _, other = stylizer_pair(tiny_generator(seed=1), cache_dir, vgg=vgg)  # other weights: a new export
    with pytest.raises(AssertionError, match="exported again"):
        other.stylize_tensor(pixels, code)


def test_an_export_that_disagrees_with_torch_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_backend, "EXPORT_TOLERANCE", -1.0)
    path = tmp_path / "generator.onnx"
    with pytest.raises(RuntimeError, match="differs from torch"):
        onnx_backend.export_generator(tiny_generator(), path, tiled=False)
    assert list(tmp_path.iterdir()) == []


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(onnx_backend.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert onnx_backend.default_cache_dir() == tmp_path / "xdg" / "archive-style-gan" / "onnx"
    monkeypatch.setenv(onnx_backend.CACHE_ENV, str(tmp_path / "mine"))
    assert onnx_backend.default_cache_dir() == tmp_path / "mine"


def test_bad_backends_and_inputs_are_refused(tiny_pair: tuple[Stylizer, Stylizer], vgg) -> None:
    with pytest.raises(ValueError, match=r"backend must be one of \('torch', 'onnx'\), got 'tensorrt'"):
        Stylizer(tiny_generator(), device="cpu", vgg=vgg, backend="tensorrt")
    with pytest.raises(ValueError, match="backend must be one of"):
        Stylizer.from_pretrained(device="cpu", backend="ONNX")
    with pytest.raises(ValueError, match="runs on the CPU"):
        Stylizer(tiny_generator(), device="cuda", vgg=vgg, backend="onnx")
    _, onnx = tiny_pair
    code = torch.randn(1, TINY.style_dim)
    with pytest.raises(ValueError, match="multiples of 4"):
        onnx._onnx(random_pixels(30, 32), code)
    with pytest.raises(ValueError, match="one image at a time"):
        onnx._onnx(torch.rand(2, 3, 32, 32), code)


@pytest.mark.slow
def test_bundled_model_matches_torch(cache_dir: Path, vgg, onnx_calls: list[bool]) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(onnx_backend.CACHE_ENV, str(cache_dir))
        reference = Stylizer.from_pretrained(device="cpu")
        onnx = Stylizer.from_pretrained(device="cpu", backend="onnx")
    assert onnx.backend == "onnx" and reference.backend == "torch"
    assert onnx._onnx.sha256 == onnx.model_info.weights_sha256  # keyed by the weights file's hash
    code = reference.generator.blend(reference.style_code(min(reference.presets))[None], 0.8)
    for pixels, tile_size in ((random_pixels(72, 100, seed=2), None), (random_pixels(300, 262, seed=3), 240)):
        expected = reference.stylize_tensor(pixels, code, tile_size=tile_size)
        actual = onnx.stylize_tensor(pixels, code, tile_size=tile_size)
        assert (actual - expected).abs().max() < TOLERANCE
    assert onnx_calls == [False] + [True] * 4
