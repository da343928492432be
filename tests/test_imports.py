"""Only npconv/backend.py may import NumPy or CuPy; importing npconv never imports CuPy."""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "npconv"
FORBIDDEN = {"numpy", "cupy", "cupyx", "torch"}


def imported_roots(path: pathlib.Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant):
                roots.add(str(node.args[0].value).split(".")[0])
    return roots


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_only_backend_imports_array_libraries(path):
    found = imported_roots(path) & FORBIDDEN
    if path.name == "backend.py":
        assert "torch" not in found
    else:
        assert not found, f"{path.name} imports {sorted(found)}; go through npconv.backend"


def test_the_checker_sees_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import numpy as np\nfrom cupy import ndarray\n")
    assert imported_roots(sample) == {"numpy", "cupy"}


def run_python(code, **env):
    environ = {k: v for k, v in os.environ.items() if k != "NPCONV_BACKEND"}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=120
    )


def test_import_does_not_load_cupy_or_torch():
    result = run_python(
        "import sys, npconv\n"
        "print(npconv.get_backend(), 'cupy' in sys.modules, 'torch' in sys.modules)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["numpy", "False", "False"]


@pytest.mark.parametrize("value", ["", "numpy", "NumPy"])
def test_numpy_backend_from_environment(value):
    result = run_python("import npconv; print(npconv.get_backend())", NPCONV_BACKEND=value)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "numpy"


@pytest.mark.parametrize("value", ["jax", "torch", "gpu", "nump"])
def test_unknown_backend_fails_at_import(value):
    result = run_python("import npconv", NPCONV_BACKEND=value)
    assert result.returncode != 0
    assert "ValueError" in result.stderr
    assert "NPCONV_BACKEND" in result.stderr and repr(value) in result.stderr
    assert "'numpy'" in result.stderr and "'cupy'" in result.stderr


def test_cupy_backend_without_cupy_fails_with_install_hint():
    code = (
        "import sys\n"
        "sys.modules['cupy'] = None  # make CuPy unimportable, as on a machine without it\n"
        "import npconv\n"
    )
    result = run_python(code, NPCONV_BACKEND="cupy")
    assert result.returncode != 0
    assert "ImportError" in result.stderr and "npconv[cuda12x]" in result.stderr
