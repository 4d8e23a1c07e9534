"""Best quality against time: the network's result refined by optimisation (`quality="best"`), snapshots
after 0, 25, 50, 100, 200 steps, next to per-image optimisation from the content (`mode="optimize"`) at
the same step counts, on evaluation pairs, with the metrics of benchmarks/evaluate.py.

    .venv/bin/python -m benchmarks.bench_quality --threads 2 --out quality.json     # 4 × 4 pairs, curve on 4
    .venv/bin/python -m benchmarks.bench_quality --curve-pairs 0                      # fast against best only
    .venv/bin/python -m benchmarks.bench_quality --contents 1 --styles 1 --content-side 64 --steps 0 2 \\
        --best-steps 2 --no-optimize                                                  # smoke check, a minute

Pairs: --contents C × --styles S, evenly spaced over the sorted files of the split (eval: 8 × 8, so
C = S = 4 takes every other one), each content shrunk to --content-side (512) long side, strength 1.
Per pair:
  fast    `Stylizer.stylize` (quality="fast")
  best    `Stylizer.stylize(..., quality="best")` with --best-steps (the library's default): the numbers the
          issue's targets are checked against (Gram gain ≥ 0.70, SSIM ≥ 0.45, ≥ 0.2 more Gram gain than
          fast on the same pairs, median ≤ 45 s an image, colour distance no worse than fast's)
  curve   on the first --curve-pairs pairs: one refinement of max(--steps) steps read at each of --steps
          (0: the network's result), and `stylegan.optimize.optimize_iter` from the content (the optimisation
          mode, style read at 512 px) read at the same step counts (--no-optimize skips it)
A step is one loss evaluation (L-BFGS's line search may overrun a snapshot by a few: the step count
reached is reported). Seconds: wall time of the work up to a snapshot, measuring excluded.
Metrics (benchmarks/evaluate.py's `references`, `measure`, `averages`): colour distance, style
identified (nearest among all the split's styles), Gram gain, SSIM (Y), at long side --metric-side.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.common import DEFAULT_DATA, markdown_table, publish, system_info
from benchmarks.evaluate import METRIC_HEADERS, SPLITS, averages, measure, references, split_files, thumbnail
from stylegan import Stylizer
from stylegan.images import resize_long_side, to_pil, to_tensor
from stylegan.optimize import OPTIMIZE_STYLE_LONG_SIDE, REFINE_STEPS, optimize_iter, style_targets

TARGETS = {"gram_gain": 0.70, "ssim": 0.45, "gain_over_fast": 0.2, "median_seconds": 45.0}


def spread(count: int, wanted: int) -> list[int]:
    """`wanted` indices evenly spaced over range(count), starting at 0."""
    if not 1 <= wanted <= count:
        raise SystemExit(f"asked for {wanted} of {count} files")
    return [index * count // wanted for index in range(wanted)]


def snapshots(results, targets: list[int], evaluations: list[int]) -> dict[int, tuple[int, float, Image.Image]]:
    """{target: (steps reached, seconds, image)} from an iterator of (steps, image), read at the first
    result with at least `target` steps; `evaluations` holds the step count of the latest result."""
    taken: dict[int, tuple[int, float, Image.Image]] = {}
    seconds, started = 0.0, time.perf_counter()
    for image in results:
        seconds += time.perf_counter() - started
        for target in targets:
            if target not in taken and evaluations[-1] >= target:
                taken[target] = (evaluations[-1], seconds, image)
        if len(taken) == len(targets):
            break
        started = time.perf_counter()
    return taken


def refine_curve(stylizer: Stylizer, content: Image.Image, style: Image.Image, steps: list[int]):
    evaluations = [0]

    def count(fraction: float, message: str) -> None:
        evaluations.append(round(fraction * max(steps)))

    every = min([step for step in steps if step > 0] or [1])
    results = stylizer.stylize_iter(content, style, 1.0, steps=max(max(steps), 1), every=every, progress=count)
    with contextlib.closing(results):
        return snapshots(results, steps, evaluations)


def optimize_curve(stylizer: Stylizer, content: Image.Image, style: Image.Image, steps: list[int]):
    pixels = to_tensor(content)
    style_pixels = resize_long_side(to_tensor(style), OPTIMIZE_STYLE_LONG_SIDE)
    evaluations = [0]

    def results():
        yield content  # 0 steps: the content itself
        every = min([step for step in steps if step > 0] or [1])
        targets = style_targets([(style_pixels, 1.0)], stylizer.vgg)
        for reached, optimized in optimize_iter(pixels, targets, stylizer.vgg, strength=1.0,
                                                steps=max(max(steps), 1), every=every):
            evaluations.append(reached)
            yield to_pil(optimized)

    return snapshots(results(), steps, evaluations)


def summary(entries: list[dict], style_names: list[str]) -> dict:
    return {**averages(entries, style_names), "median_seconds": statistics.median(e["seconds"] for e in entries),
            "steps_reached": statistics.median(e.get("steps", 0) for e in entries)}


def run(args: argparse.Namespace) -> dict:
    content_files, style_files = split_files(args.data, args.split)
    content_files = [content_files[index] for index in spread(len(content_files), args.contents)]
    contents = [(path.stem, thumbnail(Image.open(path).convert("RGB"), args.content_side)) for path in content_files]
    styles = [(path.stem, Image.open(path).convert("RGB")) for path in style_files]
    chosen_styles = spread(len(styles), args.styles)
    pairs = [(content, style) for content in range(len(contents)) for style in chosen_styles]
    # Curve pairs: one per content and style first (a diagonal), so a few still spread over both.
    diagonal = sorted(pairs, key=lambda pair: (pairs.index(pair) % (len(chosen_styles) + 1) != 0, pairs.index(pair)))
    curve_pairs = diagonal[:args.curve_pairs]
    with contextlib.redirect_stdout(sys.stderr):
        stylizer = Stylizer.from_pretrained(args.model, revision=args.revision, device=args.device)
    refs = references(stylizer.vgg, contents, styles, args.metric_side)
    style_names = [name for name, _ in styles]

    def entry(image: Image.Image, content: int, style: int, seconds: float, steps: int = 0) -> dict:
        return {"content": contents[content][0], "style": style_names[style], "seconds": seconds, "steps": steps,
                **measure(image, content, style, refs, stylizer.vgg, args.metric_side)}

    stylizer.stylize(contents[0][1], styles[chosen_styles[0]][1], 1.0)  # warm-up, untimed
    methods: dict[str, list[dict]] = {"fast": [], f"best ({args.best_steps} steps)": []}
    for number, (content, style) in enumerate(pairs, start=1):
        print(f"  {number}/{len(pairs)} {contents[content][0]} × {style_names[style]}", file=sys.stderr, flush=True)
        for method, quality in zip(methods, ("fast", "best")):
            started = time.perf_counter()
            steps = {"steps": args.best_steps} if quality == "best" else {}
            image = stylizer.stylize(contents[content][1], styles[style][1], 1.0, quality=quality, **steps)
            methods[method].append(entry(image, content, style, time.perf_counter() - started,
                                         args.best_steps if quality == "best" else 0))
    curves: dict[str, dict[int, list[dict]]] = {"best": {step: [] for step in args.steps}}
    if not args.no_optimize:
        curves["optimize from the content"] = {step: [] for step in args.steps}
    for number, (content, style) in enumerate(curve_pairs, start=1):
        print(f"  curve {number}/{len(curve_pairs)} {contents[content][0]} × {style_names[style]}", file=sys.stderr,
              flush=True)
        for method, curve in (("best", refine_curve), ("optimize from the content", optimize_curve)):
            if method in curves:
                for step, (reached, seconds, image) in curve(stylizer, contents[content][1], styles[style][1],
                                                             args.steps).items():
                    curves[method][step].append(entry(image, content, style, seconds, reached))
    fast, best = methods.values()
    gains = [b["gram_gain"] - f["gram_gain"] for f, b in zip(fast, best)]
    report = {"system": system_info(args.threads), "split": args.split, "content_side": args.content_side,
              "metric_side": args.metric_side, "best_steps": args.best_steps,
              "model": {"repo": stylizer.model_info.repo, "revision": stylizer.model_info.revision},
              "contents": [name for name, _ in contents], "styles": [style_names[index] for index in chosen_styles],
              "methods": {method: {**summary(entries, style_names), "pairs": entries}
                          for method, entries in methods.items()},
              "gain_over_fast": float(np.mean(gains)),
              "curves": {method: {str(step): {**summary(entries, style_names), "pairs": entries}
                                  for step, entries in curve.items() if entries}
                         for method, curve in curves.items()}}
    result = report["methods"][f"best ({args.best_steps} steps)"]
    report["targets"] = {"gram_gain": result["gram_gain"] >= TARGETS["gram_gain"],
                         "ssim": result["ssim"] >= TARGETS["ssim"],
                         "gain_over_fast": report["gain_over_fast"] >= TARGETS["gain_over_fast"],
                         "median_seconds": result["median_seconds"] <= TARGETS["median_seconds"],
                         "colour_distance": result["colour_distance"] <= report["methods"]["fast"]["colour_distance"]}
    return report


def format_report(report: dict) -> str:
    system = report["system"]
    header = (f"{len(report['contents'])} contents × {len(report['styles'])} styles of {report['split']}, contents at "
              f"long side {report['content_side']}, strength 1; metrics at {report['metric_side']}; "
              f"CPU {system['cpu']}, {system['threads']} thread(s), GPU {system['gpu']}")

    def row(result: dict) -> list[object]:
        identified = f"{result['style_identified']:.2f} ({result['n_identified']}/{result['n_pairs']})"
        return [result["colour_distance"], identified, result["gram_gain"], result["ssim"]]

    done = [[method, *row(result), result["n_pairs"], result["median_seconds"]]
            for method, result in report["methods"].items()]
    curve = [[method, step, result["steps_reached"], *row(result), result["n_pairs"], result["median_seconds"]]
             for method, steps in report["curves"].items() for step, result in steps.items()]
    targets = ", ".join(f"{name} {'met' if met else 'NOT met'}" for name, met in report["targets"].items())
    parts = [header, markdown_table(["method", *METRIC_HEADERS, "pairs", "median s / image"], done),
             f"Best minus fast, Gram gain on the same pairs: {report['gain_over_fast']:+.3f}. Targets: {targets}."]
    if curve:
        parts += ["Quality against time:",
                  markdown_table(["method", "steps", "steps reached (median)", *METRIC_HEADERS, "pairs",
                                  "median s / image"], curve)]
    return "\n\n".join(parts)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the corpus (default: %(default)s)")
    parser.add_argument("--split", choices=SPLITS, default="eval")
    parser.add_argument("--model", help="Hub repo or local folder of an exported model (default: the bundled model)")
    parser.add_argument("--revision", help="Hub revision to pin")
    parser.add_argument("--device", help="torch device (default: cuda if available)")
    parser.add_argument("--contents", type=int, default=4, help="contents, evenly spaced (default 4)")
    parser.add_argument("--styles", type=int, default=4, help="styles, evenly spaced (default 4)")
    parser.add_argument("--content-side", type=int, default=512, help="contents' long side (default 512)")
    parser.add_argument("--metric-side", type=int, default=512)
    parser.add_argument("--best-steps", type=int, default=REFINE_STEPS,
                        help=f"steps of the best-quality row (default: the library's, {REFINE_STEPS})")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 25, 50, 100, 200], help="curve snapshots")
    parser.add_argument("--curve-pairs", type=int, default=4, help="pairs the curves run on (0: none)")
    parser.add_argument("--no-optimize", action="store_true", help="no optimisation-from-the-content curve")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: all)")
    parser.add_argument("--out", type=Path, help="write the results, every pair's numbers included, as JSON here")
    args = parser.parse_args(argv)
    if args.best_steps < 1 or min(args.steps) < 0:
        parser.error("--best-steps must be ≥ 1 and --steps ≥ 0")
    args.steps = sorted(set(args.steps))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = run(args)
    publish(format_report(report), report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
