"""What the band transfer's parts cost: `transfer_bands` at --size² with the luminance quantiles alone, with
the orientation shares too, with the chroma quantiles as well (0.3.0's band transfer) and with the coarse
bands' RGB covariance matched too (today's), a style's `band_signature` with the quantiles alone and as
today, and the search that places every luminance band value of the --size² picture among its band's
quantiles (the knots of its quantile map) by the cell table (`stylegan.palette.segments`, today's) and by
a binary search, alternated in one process, median of --repeats calls.

    .venv/bin/python -m benchmarks.bench_bands --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from benchmarks.common import markdown_table, synthetic_image
from stylegan.bands import (
    BAND_LEVELS,
    BAND_QUANTILES,
    CHROMA_START,
    COVARIANCE_START,
    SIGNATURE_SIDE,
    band_signature,
    laplacian_pyramid,
    transfer_bands,
)
from stylegan.bands import _band_quantiles as band_quantiles
from stylegan.images import luminance, resize_to_area, to_tensor
from stylegan.palette import segments, strictly_increasing


def quantile_signature(images: torch.Tensor) -> torch.Tensor:
    """The signature without orientation shares, as `band_signature` measured it before them."""
    bands, _ = laplacian_pyramid(luminance(resize_to_area(images, SIGNATURE_SIDE)), BAND_LEVELS)
    return torch.stack([band_quantiles(band) for band in bands], dim=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_bands", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="the stylised image's side (default 512)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, help="CPU threads (default: all)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    style = to_tensor(synthetic_image(1000, 800, seed=1))
    image = to_tensor(synthetic_image(args.size, args.size, seed=2))
    signature = band_signature(style)[0]
    bands, _ = laplacian_pyramid(luminance(image), BAND_LEVELS)
    knots = [(band.flatten(1), strictly_increasing(band_quantiles(band))) for band in bands]
    calls = {("transfer_bands", "quantiles only"): lambda: transfer_bands(image, signature[:, :BAND_QUANTILES]),
             ("transfer_bands", "orientations, then quantiles"): lambda: transfer_bands(image, signature[:, :CHROMA_START]),
             ("transfer_bands", "and chroma quantiles"): lambda: transfer_bands(image, signature[:, :COVARIANCE_START]),
             ("transfer_bands", "and the covariance step (today)"): lambda: transfer_bands(image, signature),
             ("band_signature", "quantiles only"): lambda: quantile_signature(style),
             ("band_signature", "today's"): lambda: band_signature(style),
             ("search", "cell table (today)"): lambda: [segments(xp, values) for values, xp in knots],
             ("search", "binary search"): lambda: [torch.searchsorted(xp, values) for values, xp in knots]}
    times: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
    for _ in range(args.repeats + 2):
        for key, call in calls.items():
            started = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - started)
    rows = [[*key, round(1000 * statistics.median(values[2:]), 1)] for key, values in times.items()]
    print(f"transfer at {args.size}², signature of a 1000×800 style; {torch.get_num_threads()} thread(s)\n")
    print(markdown_table(["call", "band transfer", "ms (median)"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
