"""What `pip install .` (the Docker image) gets: every file the worker reads at run time is in the wheel."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_carries_the_lua_script_and_the_contracts(tmp_path):
    src = tmp_path / "src"          # a copy as a fresh checkout has it: no egg-info, no build dir
    for name in ("stream", "models", "exporters", "schemas"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(src)], check=True, capture_output=True, timeout=300)
    names = zipfile.ZipFile(next(tmp_path.glob("recstream-*.whl"))).namelist()
    runtime_files = [p.relative_to(ROOT).as_posix() for p in (ROOT / "stream").rglob("*.lua")]
    runtime_files += [p.relative_to(ROOT).as_posix() for p in (ROOT / "schemas").glob("*.json")]
    assert runtime_files and all(f in names for f in runtime_files), sorted(set(runtime_files) - set(names))
    assert "stream/cli/__main__.py" in names
