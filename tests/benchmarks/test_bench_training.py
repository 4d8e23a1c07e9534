"""The training-speed benchmark runs end to end on synthetic images and checks its loops agree."""
from __future__ import annotations

import json

import pytest

from benchmarks import bench_training


@pytest.mark.slow
def test_bench_training_quick_run_times_every_loop_and_their_losses_agree(tmp_path, capsys):
    report_path = tmp_path / "report.json"
    # An empty --data folder: the benchmark draws synthetic contents and styles.
    assert bench_training.main(["--quick", "--steps", "1", "--warmup", "0", "--max-images", "2", "--threads", "1",
                                "--ablation", "--data", str(tmp_path / "no-corpus"), "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert set(report["steps"]) == set(bench_training.VARIANTS)
    for (entry,) in report["steps"].values():
        assert entry["step"] > 0 and all(entry[section] >= 0 for section in bench_training.SECTIONS)
        accounted = sum(entry[section] for section in bench_training.SECTIONS)
        assert 0.5 * entry["step"] <= accounted <= entry["step"] * (1 + 1e-9)  # the sections lie within the step
    assert report["equality_check"]["losses"] <= bench_training.LOSS_RTOL
    printed = capsys.readouterr().out
    assert "ours / straightforward" in printed and "**whole step**" in printed
