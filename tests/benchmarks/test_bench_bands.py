"""The band-transfer cost benchmark runs and prints all eight timings."""
from __future__ import annotations

from benchmarks import bench_bands


def test_a_small_run_prints_every_call_every_way(capsys) -> None:
    assert bench_bands.main(["--size", "96", "--repeats", "1", "--threads", "1"]) == 0
    table = capsys.readouterr().out
    rows = {"transfer_bands": ("quantiles only", "orientations, then quantiles", "and chroma quantiles",
                               "and the covariance step (today)"),
            "band_signature": ("quantiles only", "today's"),
            "search": ("cell table (today)", "binary search")}
    for call, ways in rows.items():
        for way in ways:
            assert f"| {call} | {way} | " in table
