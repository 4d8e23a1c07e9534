"""How evenly the strength slider moves the picture: the result's mean absolute change from the content at
strengths 0.05, 0.25, 0.5, 0.75 and 1, with the strength run as a plain code blend (the blend fraction is
the slider's value) and calibrated per style (`stylegan.strength`, what `Stylizer.stylize` does).

    .venv/bin/python -m benchmarks.bench_strength --threads 2             # presets and validation styles
    .venv/bin/python -m benchmarks.bench_strength --contents 1 --presets 4 --no-validation   # smoke check

Styles: the bundled model's presets (the first --presets, all by default) and the validation split's 16
style images (held out from training). Contents: the first --contents validation contents at long side
--side, and one image made in code (`benchmarks.common.synthetic_image`). Per style and content,
d(s) = mean |result − content| (0-1 scale):
  uneven      d not increasing, or d(0.05) over a third of d(1) (most of the change in the first 5 %)
  deviation   mean over s ∈ {0.25, 0.5, 0.75} of |d(s)/d(1) − s| (0 = change proportional to the slider)
  first 5 %   d(0.05)/d(1), the mean and the worst
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path

import torch
from PIL import Image

from benchmarks.common import DEFAULT_DATA, markdown_table, synthetic_image
from benchmarks.evaluate import split_files, thumbnail
from stylegan import Stylizer
from stylegan.images import to_tensor

STRENGTHS = (0.05, 0.25, 0.5, 0.75, 1.0)


def changes(stylizer: Stylizer, content: Image.Image, style: str | Image.Image, calibrated: bool) -> list[float]:
    """d(s) at STRENGTHS: the fast path's result at the calibrated fraction, or at the slider's value itself."""
    pixels = to_tensor(content)
    entry = stylizer._blended(style)  # the fast path below the public API, to run both ways
    result = []
    with torch.inference_mode():
        for strength in STRENGTHS:
            fraction = stylizer._blend_fraction(entry, strength) if calibrated else strength
            result.append(float((stylizer._finished_tensor(pixels, entry, fraction) - pixels).abs().mean()))
    return result


def summary(curves: list[list[float]]) -> list[object]:
    uneven = sum(any(later <= earlier for earlier, later in itertools.pairwise(curve)) or curve[0] > curve[-1] / 3
                 for curve in curves)
    deviation = statistics.mean(statistics.mean(abs(curve[index] / curve[-1] - STRENGTHS[index])
                                                for index in (1, 2, 3)) for curve in curves)
    first = [curve[0] / curve[-1] for curve in curves]
    return [f"{uneven}/{len(curves)}", round(deviation, 3), round(statistics.mean(first), 3), round(max(first), 3)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_strength", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the corpus (default: %(default)s)")
    parser.add_argument("--model", help="Hub repo or local folder of an exported model (default: the bundled model)")
    parser.add_argument("--contents", type=int, default=3, help="validation contents to use (default 3)")
    parser.add_argument("--presets", type=int, help="use only the first N presets")
    parser.add_argument("--no-validation", action="store_true", help="skip the validation style images")
    parser.add_argument("--side", type=int, default=256, help="contents' long side (default 256)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: all)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    stylizer = Stylizer.from_pretrained(args.model, device="cpu")
    style_groups: dict[str, list[str | Image.Image]] = {"presets": sorted(stylizer.presets)[:args.presets]}
    contents = [synthetic_image(args.side, args.side * 3 // 4)]
    if args.contents or not args.no_validation:
        content_paths, style_paths = split_files(args.data, "validation")
        contents += [thumbnail(Image.open(path).convert("RGB"), args.side) for path in content_paths[:args.contents]]
        if not args.no_validation:
            style_groups["validation styles"] = [Image.open(path).convert("RGB") for path in style_paths]
    rows = []
    for group, styles in style_groups.items():
        for calibrated in (False, True):
            curves = [changes(stylizer, content, style, calibrated) for style in styles for content in contents]
            rows.append([group, "calibrated" if calibrated else "plain code blend", *summary(curves)])
    print(f"{len(contents)} contents at long side {args.side}; strengths {list(STRENGTHS)}\n")
    print(markdown_table(["styles", "strength as", "uneven ↓", "deviation ↓", "first 5 % mean ↓", "first 5 % worst ↓"],
                         rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
