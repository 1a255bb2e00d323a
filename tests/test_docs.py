"""The API reference: the Sphinx build passes with warnings as errors, and the public modules say
what is public (``__all__``) and keep everything else private by name."""

import ast
import importlib
import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
API_MODULES = [
    "hyperr1.geometry",
    "hyperr1.native",
    "hyperr1.native.dispatch",
    "hyperr1.nn",
    "hyperr1.optim",
    "hyperr1.embeddings",
    "hyperr1.rewards",
]


def top_level_names(path: Path) -> list[str]:
    """Names a module defines at its top level: functions, classes and assigned variables."""
    names = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return names


@pytest.mark.parametrize("name", API_MODULES)
def test_public_names_are_exactly_all_and_documented(name):
    module = importlib.import_module(name)
    if not hasattr(module, "__all__"):
        pytest.skip(f"{name} has no __all__ yet")
    exported = set(module.__all__)
    defined = {n for n in top_level_names(Path(module.__file__)) if n != "__all__"}
    assert exported <= defined, f"{name}.__all__ names what it does not define: {sorted(exported - defined)}"
    public = {n for n in defined if not n.startswith("_")}
    assert public == exported, f"public but not in {name}.__all__: {sorted(public - exported)}"
    for n in exported:
        obj = getattr(module, n)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert inspect.getdoc(obj), f"{name}.{n} has no docstring"


NO_SPHINX = importlib.util.find_spec("sphinx") is None


@pytest.mark.skipif(NO_SPHINX, reason="sphinx is not installed (pip install -e .[docs])")
def test_the_api_reference_builds_without_warnings(tmp_path):
    """What `make docs` runs, into a scratch directory: a broken docstring is an error."""
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", str(tmp_path / "html")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "html" / "api" / "geometry.html").read_text(encoding="utf-8")
    assert "hyperr1.geometry.pairwise_dist" in page and r"\operatorname{arcosh}" in page  # autodoc + math
