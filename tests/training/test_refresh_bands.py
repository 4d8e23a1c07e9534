"""Re-measuring an exported model's preset band signatures: from the style files, to a new folder, refusals."""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from stylegan import __version__
from stylegan.bands import BAND_QUANTILES, ORIENTATIONS, SIGNATURE_WIDTH, band_signature
from stylegan.generator import Generator, GeneratorConfig
from stylegan.images import to_tensor
from stylegan.presets import PRESET_BANDS_FILE, Preset, save_preset_bands, save_presets
from training.refresh_bands import NOTE_HEADING, main, refresh_bands

NAMES = ("stripes", "blocks")


def style_image(name: str) -> Image.Image:
    pixels = torch.rand(3, 12, 16, generator=torch.Generator().manual_seed(len(name)))
    if name == "stripes":
        pixels[:, ::3] = 0
    return Image.fromarray((pixels.permute(1, 2, 0) * 255).byte().numpy()).resize((160, 120), Image.NEAREST)


@pytest.fixture
def old_model(tmp_path):
    """A tiny exported model whose presets hold signatures of luminance quantiles and orientations only."""
    model = tmp_path / "model"
    Generator(GeneratorConfig(encoder_channels=(4, 8, 8), num_residual_blocks=1, style_dim=8, style_hidden_dim=16,
                              style_image_size=64)).save_pretrained(model)
    (model / "README.md").write_text("# tiny\n")
    save_presets(model, [Preset(name=name, title=name) for name in NAMES], {name: torch.randn(8) for name in NAMES},
                 {name: torch.zeros(0) for name in NAMES})
    styles = tmp_path / "styles"
    (styles / "more").mkdir(parents=True)
    for name in NAMES:
        style_image(name).save(styles / "more" / f"{name}.png")
    save_preset_bands(model, {name: band_signature(to_tensor(style_image(name)))[0, :, :BAND_QUANTILES + ORIENTATIONS]
                              for name in NAMES})
    return model, styles


def test_the_refreshed_folder_has_todays_signatures_and_the_rest_unchanged(old_model, tmp_path) -> None:
    model, styles = old_model
    out = tmp_path / "refreshed"
    main([str(model), str(out), "--style-dir", str(styles)])
    signatures = load_file(out / PRESET_BANDS_FILE)
    for name in NAMES:
        assert signatures[name].shape[-1] == SIGNATURE_WIDTH
        assert torch.equal(signatures[name], band_signature(to_tensor(Image.open(styles / "more" / f"{name}.png")))[0])
    assert (out / "model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()
    assert load_file(model / PRESET_BANDS_FILE)["stripes"].shape[-1] == BAND_QUANTILES + ORIENTATIONS  # source kept
    card = (out / "README.md").read_text()
    assert card.startswith("# tiny\n") and f"{NOTE_HEADING}\n" in card and f"stylegan {__version__}" in card


def test_a_second_refresh_says_its_note_once_and_keeps_later_sections(old_model, tmp_path) -> None:
    model, styles = old_model
    once, twice = tmp_path / "once", tmp_path / "twice"
    refresh_bands(model, once, [styles])
    (once / "README.md").write_text((once / "README.md").read_text() + "\n## Later\n\nA later section.\n")
    refresh_bands(once, twice, [styles])
    card = (twice / "README.md").read_text()
    assert card.count(NOTE_HEADING) == 1 and card.startswith("# tiny\n")
    assert "## Later\n\nA later section." in card and card.index("## Later") < card.index(NOTE_HEADING)


def test_a_missing_style_image_or_an_existing_folder_is_refused_before_anything_is_written(old_model, tmp_path) -> None:
    model, styles = old_model
    (styles / "more" / "blocks.png").unlink()
    with pytest.raises(FileNotFoundError, match="blocks"):
        refresh_bands(model, tmp_path / "out", [styles])
    assert not (tmp_path / "out").exists()
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError):
        refresh_bands(model, tmp_path / "taken", [styles])
    style_image("blocks").save(styles / "blocks.png")
    style_image("blocks").save(styles / "more" / "blocks.jpg")
    with pytest.raises(ValueError, match="more than one"):
        refresh_bands(model, tmp_path / "out", [styles])
