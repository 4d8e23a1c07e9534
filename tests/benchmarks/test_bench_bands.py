"""The band-transfer cost benchmark runs and prints all four timings."""
from __future__ import annotations

from benchmarks import bench_bands


def test_a_small_run_prints_both_calls_both_ways(capsys) -> None:
    assert bench_bands.main(["--size", "96", "--repeats", "1", "--threads", "1"]) == 0
    table = capsys.readouterr().out
    for call in ("transfer_bands", "band_signature"):
        for way in ("quantiles only", "orientations, then quantiles"):
            assert f"| {call} | {way} | " in table
