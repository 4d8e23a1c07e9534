"""tests/helpers/required.py: outside CI a missing dependency skips its tests with the reason; in CI it fails them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEEDS_MISSING_MODULE = """
from tests.helpers.required import required_import
required_import("no_such_module_for_this_test")

def test_uses_it():
    pass
"""
NEEDS_MISSING_PROGRAM = """
from tests.helpers.required import skip_unless

@skip_unless(False, reason="needs a program that is not installed")
def test_uses_it():
    raise FileNotFoundError("the program")
"""


def summary(tmp_path: Path, *, ci: bool) -> str:
    """pytest's last line for the two subjects, run with or without CI set."""
    for name, source in (("test_module.py", NEEDS_MISSING_MODULE), ("test_program.py", NEEDS_MISSING_PROGRAM)):
        (tmp_path / name).write_text(source)
    env = {key: value for key, value in os.environ.items() if key != "CI"} | ({"CI": "1"} if ci else {})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           "--continue-on-collection-errors", "test_module.py", "test_program.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    return done.stdout.strip().splitlines()[-1]


def test_a_missing_dependency_skips_outside_ci_and_fails_in_ci(tmp_path):
    assert "2 skipped" in summary(tmp_path, ci=False)
    in_ci = summary(tmp_path, ci=True)
    assert "skipped" not in in_ci and "1 failed" in in_ci and "1 error" in in_ci, in_ci
