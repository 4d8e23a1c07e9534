"""Move an exported model's style codes towards its identity code (`Generator.scale_style_codes`).

    python -m training.code_scale MODEL_DIR OUT_DIR --scale 0.6

OUT_DIR gets MODEL_DIR's files with the generator's style encoder edited and the presets' stored codes
moved alike, so every style, preset or uploaded, runs its network at `scale` of its code at strength 1;
the palette and band steps are untouched. `training.json` and the model card record the scale (scales
applied in turn multiply). For a network whose own texture overshoots what the validation split rewards.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from stylegan.generator import Generator
from stylegan.presets import PRESET_CODES_FILE

from .model_card import CARD_FILE
from .trainer import TRAINING_RECORD_FILE


def scale_exported_model(model_dir: str | Path, out_dir: str | Path, scale: float) -> Path:
    """Write `model_dir`'s model with its style codes scaled by `scale` ∈ (0, 1] to a new `out_dir`."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists: the scaled model goes to a new folder")
    generator = Generator.from_pretrained(model_dir, strict=True)
    generator.scale_style_codes(scale)  # checks the scale before anything is written
    shutil.copytree(model_dir, out_dir)
    generator.save_pretrained(out_dir)
    if (out_dir / PRESET_CODES_FILE).exists():
        codes = load_file(out_dir / PRESET_CODES_FILE)
        with torch.no_grad():  # stored codes as the edited encoder would give them (the identity code is kept)
            save_file({name: generator.blend(code, scale).contiguous() for name, code in codes.items()},
                      out_dir / PRESET_CODES_FILE)
    record_file = out_dir / TRAINING_RECORD_FILE
    record = json.loads(record_file.read_text()) if record_file.exists() else {}
    record["code_scale"] = round(record.get("code_scale", 1.0) * scale, 6)
    record_file.write_text(json.dumps(record, indent=2) + "\n")
    card = out_dir / CARD_FILE
    if card.exists():
        card.write_text(card.read_text().rstrip("\n") + (
            f"\n\n## Style code scale\n\nThe style encoder's last layer was edited (`python -m training.code_scale`, "
            f"scale {scale:g}; in all {record['code_scale']:g}) so that every style code lies that share of the way "
            "from the identity code: at strength 1 the network gives what the trained network gave at a "
            "code blend of that share; palette and band transfer unchanged.\n"))
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="an exported model folder")
    parser.add_argument("out_dir", type=Path, help="a new folder for the scaled model")
    parser.add_argument("--scale", type=float, required=True, help="share of each style code kept, in (0, 1]")
    args = parser.parse_args(argv)
    print(scale_exported_model(args.model_dir, args.out_dir, args.scale))


if __name__ == "__main__":
    main()
