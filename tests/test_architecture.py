"""The architecture is checked, not described: import-linter's contracts (pyproject.toml) hold, an import
that breaks one fails the suite, and no module grows past 300 lines without saying why."""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stream", "models", "exporters", "schemas")
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.argv[0] = 'lint-imports'; lint_imports_command()"]


def lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(LINT + ["--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


def test_import_contracts_hold():
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_an_import_against_the_layers_fails(tmp_path):
    """A copy of the tree where the serving core imports the CLI: the layers contract must break."""
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    emit = tmp_path / "stream" / "core" / "emit.py"
    emit.write_text(emit.read_text() + "\n\ndef _leak():\n    from stream.cli import main  # noqa\n    return main\n")
    out = lint(tmp_path)
    assert out.returncode != 0
    assert "stream.core.emit -> stream.cli" in out.stdout and "BROKEN" in out.stdout


def test_no_module_over_300_lines_without_a_reason():
    long = []
    for pkg in PACKAGES + ("bench",):
        for path in (ROOT / pkg).rglob("*.py"):
            n = len(path.read_text().splitlines())
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            if n > 300 and "Longer than 300 lines" not in doc:
                long.append(f"{path.relative_to(ROOT)}: {n} lines")
    assert not long, long
