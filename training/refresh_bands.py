"""Re-measure an exported model's preset band signatures from their style images.

    python -m training.refresh_bands MODEL_DIR OUT_DIR --style-dir ../shared/data/styles

OUT_DIR gets MODEL_DIR's files with `bands.safetensors` measured again by today's
`stylegan.bands.band_signature`: for a model exported before the signature held what the band transfer
now uses (orientation shares, chroma quantiles), whose presets would otherwise keep the older transfer
while uploaded style images get the new one. The network, codes and palettes are untouched.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from stylegan import __version__
from stylegan.presets import PRESET_BANDS_FILE, load_presets, save_preset_bands

from .data import image_paths
from .export import preset_bands
from .model_card import CARD_FILE

NOTE_HEADING = "## Band signatures re-measured"


def style_files(style_dirs: list[Path], names: list[str]) -> dict[str, Path]:
    """{name: the image file called name.<image suffix>} under `style_dirs`; refuses a name with none or two."""
    found: dict[str, list[Path]] = {name: [] for name in names}
    for path in (path for folder in style_dirs for path in image_paths(folder)):
        if path.stem in found:
            found[path.stem].append(path)
    missing = sorted(name for name, paths in found.items() if not paths)
    if missing:
        raise FileNotFoundError(f"no style image for presets {missing} under {[str(d) for d in style_dirs]}")
    doubled = sorted(name for name, paths in found.items() if len(paths) > 1)
    if doubled:
        raise ValueError(f"more than one style image for presets {doubled}")
    return {name: paths[0] for name, paths in found.items()}


def refresh_bands(model_dir: str | Path, out_dir: str | Path, style_dirs: list[Path]) -> Path:
    """Write `model_dir`'s model to a new `out_dir` with every preset's band signature measured again."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists: the refreshed model goes to a new folder")
    presets, _, _ = load_presets(model_dir)
    if not presets:
        raise ValueError(f"{model_dir} has no presets")
    signatures = preset_bands(style_files(style_dirs, sorted(presets)))  # every file read before anything is written
    shutil.copytree(model_dir, out_dir)
    save_preset_bands(out_dir, signatures)
    card = out_dir / CARD_FILE
    if card.exists():
        card.write_text(_with_note(card.read_text()))
    return out_dir / PRESET_BANDS_FILE


def _with_note(card: str) -> str:
    """`card` with its section on re-measured band signatures said once, for this library version."""
    kept, _, rest = card.partition(f"\n{NOTE_HEADING}\n")
    later = rest.partition("\n## ")[2]  # the sections after an earlier note, if any
    note = (f"{NOTE_HEADING}\n\nThe presets' band signatures were measured again from their style images by "
            f"stylegan {__version__} (`python -m training.refresh_bands`), so that presets get the same closed-form "
            "band transfer as uploaded style images; the network, codes and palettes are unchanged.\n")
    return kept.rstrip("\n") + ("\n\n## " + later.rstrip("\n") if later else "") + "\n\n" + note


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="an exported model folder")
    parser.add_argument("out_dir", type=Path, help="a new folder for the refreshed model")
    parser.add_argument("--style-dir", type=Path, nargs="+", required=True, help="folders holding the presets' images")
    args = parser.parse_args(argv)
    print(refresh_bands(args.model_dir, args.out_dir, args.style_dir))


if __name__ == "__main__":
    main()
