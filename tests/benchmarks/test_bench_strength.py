"""The strength benchmark: its summary of change curves, and a run on the bundled model."""
from __future__ import annotations

from benchmarks import bench_strength


def test_summary_counts_uneven_curves_and_the_deviation_from_proportional() -> None:
    proportional = [0.05, 0.25, 0.5, 0.75, 1.0]
    front_loaded = [0.5, 0.9, 1.0, 1.0, 1.0]  # flat at the top: uneven, and half the change by 0.05
    uneven, deviation, first_mean, first_worst = bench_strength.summary([proportional, front_loaded])
    assert uneven == "1/2"
    assert deviation == round((0 + (0.65 + 0.5 + 0.25) / 3) / 2, 3)
    assert (first_mean, first_worst) == (round((0.05 + 0.5) / 2, 3), 0.5)


def test_a_run_on_the_bundled_model_prints_both_ways(capsys) -> None:
    assert bench_strength.main(["--contents", "0", "--presets", "2", "--no-validation", "--side", "96"]) == 0
    table = capsys.readouterr().out
    assert "| presets | plain code blend | " in table and "| presets | calibrated | " in table
