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


def project_modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the project (the packages, the app, the tests)."""
    modules = {"app": REPO / "app.py"}
    for package in ("stylegan", "archivist", "training", "benchmarks", "tests"):
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def module_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {target.id for target in targets if isinstance(target, ast.Name)}
    return names


def test_each_fact_has_one_home():
    homes = {"IMAGE_SUFFIXES": "stylegan.images", "PNG_SIGNATURE": "stylegan.images",
             "ProgressCallback": "stylegan.progress", "VGG_CHANNELS": "stylegan.features",
             "MIN_FEATURE_SIDE": "stylegan.features", "MIN_SIDE": "stylegan.generator"}
    defined = {name: sorted(module for module, path in project_modules().items()
                            if name in module_level_names(path)) for name in homes}
    assert defined == {name: [home] for name, home in homes.items()}


def test_files_are_renamed_into_place_by_the_one_atomic_write_helper():
    # The archive renames files staged by the helper inside its transaction; a checkpoint is a folder.
    allowed = {"stylegan.files", "archivist.archive", "training.checkpoint"}
    renaming = set()
    for module, path in project_modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr in ("replace", "rename")
                    and isinstance(node.value, ast.Name) and node.value.id == "os"):
                renaming.add(module)
    assert renaming - {"tests.helpers.archive_writer"} <= allowed  # the crash test wraps os.replace to kill the writer


def runs_at_import(tree: ast.Module) -> list[ast.stmt]:
    """The module-level statements that importing runs: not function bodies, not `if __name__ == "__main__":`."""
    main_guard = "__name__ == '__main__'"
    return [node for node in tree.body if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and not (isinstance(node, ast.If) and ast.unparse(node.test) == main_guard)]


def writes_environment(node: ast.AST) -> bool:
    def is_environ(value: ast.AST) -> bool:
        return ast.unparse(value) == "os.environ"

    if isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
        targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
        return any(isinstance(target, ast.Subscript) and is_environ(target.value) for target in targets)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return ((node.func.attr in ("setdefault", "update", "pop", "clear") and is_environ(node.func.value))
                or ast.unparse(node.func) in ("os.putenv", "os.unsetenv"))
    return False


def test_importing_writes_no_environment_variables():
    for module, path in project_modules().items():
        for statement in runs_at_import(ast.parse(path.read_text(encoding="utf-8"))):
            written = [ast.unparse(node) for node in ast.walk(statement) if writes_environment(node)]
            assert not written, (module, written)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports anywhere in its code (functions and TYPE_CHECKING included)."""
    modules = project_modules()
    graph = {}
    for module, path in modules.items():
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                parent = package[:len(package) - node.level + 1] if node.level else []
                base = ".".join(parent + ([node.module] if node.module else []))
                imported |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                             for alias in node.names}
        graph[module] = {name for name in imported if name in modules and name != module}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, 1972)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for imported in graph[module]:
            if imported not in order:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], order[imported])
        if low[module] == order[module]:
            component = [stack.pop()]
            while component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in graph:
        if module not in order:
            visit(module)
    return cycles


def test_no_import_cycles():
    graph = import_graph()
    assert graph["training.trainer"] >= {"training.reports", "training.batches"}  # the graph sees the imports
    assert graph["training.export"] >= {"training.model_card"}  # ... those inside functions too
    assert import_cycles(graph) == []
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_go_one_way():
    """app -> archivist -> stylegan <- training: the library imports none of the others, and the archive
    application nothing of the app or of training."""
    outward = {package: {imported.split(".")[0] for module, imports in import_graph().items()
                         if module.split(".")[0] == package for imported in imports} - {package}
               for package in ("stylegan", "archivist", "training")}
    assert outward == {"stylegan": set(), "archivist": {"stylegan"}, "training": {"stylegan"}}
