"""Scaling an exported model's style codes: exact, presets alike, recorded, refused where it makes no sense."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from stylegan.generator import Generator, GeneratorConfig
from stylegan.presets import PRESET_CODES_FILE, PRESET_PALETTES_FILE, Preset, save_presets
from training.code_scale import main, scale_exported_model

TINY = GeneratorConfig(encoder_channels=(4, 8, 8), num_residual_blocks=1, style_dim=8, style_hidden_dim=16)


@pytest.fixture
def model_dir(tmp_path):
    """A tiny exported model whose every weight is non-zero (modulation and colour heads included)."""
    torch.manual_seed(0)
    generator = Generator(TINY)
    with torch.no_grad():
        for parameter in generator.parameters():
            parameter.copy_(0.3 * torch.randn_like(parameter))
    folder = tmp_path / "model"
    generator.save_pretrained(folder)
    names = ("a", "b")
    save_presets(folder, [Preset(name=name, title=name) for name in names],
                 {name: torch.randn(TINY.style_dim) for name in names}, {name: torch.rand(4) for name in names})
    (folder / "training.json").write_text(json.dumps({"steps": 7}))
    (folder / "README.md").write_text("# card\n")
    return folder


def test_scaled_codes_run_the_network_as_the_original_blended_at_the_scale(model_dir, tmp_path):
    out = scale_exported_model(model_dir, tmp_path / "scaled", 0.6)
    original, scaled = (Generator.from_pretrained(folder, strict=True).eval() for folder in (model_dir, out))
    statistics = torch.randn(3, TINY.style_statistics_dim)
    content = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        code, new_code = original.encode_style(statistics), scaled.encode_style(statistics)
        assert torch.allclose(new_code, original.blend(code, 0.6), atol=1e-5)
        assert not torch.allclose(new_code, code, atol=1e-2)
        assert torch.allclose(scaled(content, scaled.blend(new_code[:1], 1.0)),
                              original(content, original.blend(code[:1], 0.6)), atol=1e-5)
        assert torch.equal(scaled(content, scaled.blend(new_code[:1], 0.0)),
                           original(content, original.blend(code[:1], 0.0)))  # strength 0 untouched
    identity = original.identity_code.detach()
    before, after = load_file(model_dir / PRESET_CODES_FILE), load_file(out / PRESET_CODES_FILE)
    assert all(torch.allclose(after[name], identity + 0.6 * (before[name] - identity)) for name in before)
    assert (out / PRESET_PALETTES_FILE).read_bytes() == (model_dir / PRESET_PALETTES_FILE).read_bytes()
    assert json.loads((out / "training.json").read_text()) == {"steps": 7, "code_scale": 0.6}
    assert "scale 0.6" in (out / "README.md").read_text()

    main([str(out), str(tmp_path / "twice"), "--scale", "0.5"])  # scales applied in turn multiply
    assert json.loads((tmp_path / "twice" / "training.json").read_text())["code_scale"] == pytest.approx(0.3)


def test_a_scale_outside_0_to_1_or_an_existing_folder_is_refused_and_nothing_is_written(model_dir, tmp_path):
    for scale in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="scale"):
            scale_exported_model(model_dir, tmp_path / "out", scale)
        assert not (tmp_path / "out").exists()
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError):
        scale_exported_model(model_dir, tmp_path / "taken", 0.5)
    assert not any((tmp_path / "taken").iterdir())
