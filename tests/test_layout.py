"""The house's shape: the model library stands alone (nothing of the archive application, the app,
SQLite, ZIP handling, XMP writing or the command line), and imports go one way."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIBRARY = REPO / "stylegan"
# What the model library never loads, directly or through anything it imports.
NEVER_LOADED = ("archivist", "app", "training", "gradio", "sqlite3", "pyexiv2", "c2pa", "cryptography")
# What no module of the library imports itself (torch loads zipfile and argparse on its own).
NEVER_IMPORTED = (*NEVER_LOADED, "zipfile", "argparse")


def imported_names(path: Path) -> set[str]:
    """Top-level names of every module `path` imports, at any depth of its code (relative imports excluded)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_library_module_imports_the_application_or_its_formats():
    for path in sorted(LIBRARY.glob("*.py")):
        assert not imported_names(path) & set(NEVER_IMPORTED), path.name


def test_importing_every_library_module_loads_nothing_of_the_application():
    script = ("import importlib, importlib.util, json, pkgutil, sys, stylegan\n"
              "for module in pkgutil.iter_modules(stylegan.__path__):\n"
              "    if module.name != 'onnx_backend' or importlib.util.find_spec('onnxruntime'):  # [onnx] extra\n"
              "        importlib.import_module('stylegan.' + module.name)\n"
              "stylegan.Stylizer, stylegan.Generator, stylegan.Discriminator\n"
              "print(json.dumps(sorted(sys.modules)))")
    completed = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    loaded = set(json.loads(completed.stdout))
    assert "stylegan.inference" in loaded
    assert not {name for name in loaded if name.split(".")[0] in NEVER_LOADED}
