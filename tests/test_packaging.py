"""What `pip install .` installs: the dependencies requirements.txt pins, and every file the packages read.
(The install itself, into a fresh virtual environment, takes minutes and several GB; it was shown by hand.)"""
from __future__ import annotations

import tomllib
from pathlib import Path

from training.model_card import TEMPLATE

REPO = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def requirement_lines(path: Path) -> set[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return {line for line in lines if line and not line.startswith("-r ")}


def test_requirements_files_pin_what_the_project_declares():
    extras = PROJECT["project"]["optional-dependencies"]
    runtime = set(PROJECT["project"]["dependencies"]).union(*(extras[name] for name in ("app", "train", "onnx")))
    assert requirement_lines(REPO / "requirements.txt") == runtime
    assert requirement_lines(REPO / "requirements-dev.txt") == set(extras["dev"]) - {"archive-style-gan[app,train,onnx]"}
    assert "torch==2.14.1" in PROJECT["project"]["dependencies"]  # unpinned, pip would take a CUDA build of GBs


def test_package_data_covers_every_file_the_packages_read():
    package_data = PROJECT["tool"]["setuptools"]["package-data"]
    for package, read in (("stylegan", "default_model/**/*"), ("training", "*.md")):
        root = REPO / package
        needed = {path for path in root.glob(read) if path.is_file()}
        packaged = {path for pattern in package_data[package] for path in root.glob(pattern) if path.is_file()}
        assert needed and needed <= packaged, sorted(path.relative_to(root).as_posix() for path in needed - packaged)
    assert set(PROJECT["tool"]["setuptools"]["packages"]) == {"stylegan", "archivist", "training"}


def test_the_model_card_template_is_package_data_with_one_home():
    assert TEMPLATE.read_text(encoding="utf-8") == (REPO / "model_card.md").read_text(encoding="utf-8")
    assert (REPO / "training" / "model_card.md").resolve() == (REPO / "model_card.md").resolve()  # a link
