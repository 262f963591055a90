"""The serving path (worker, its drivers, the ONNX scorer, the CLI) must not need torch."""
import subprocess
import sys

from conftest import ROOT


def test_worker_path_never_imports_torch():
    code = ("import sys\n"
            "import stream.worker, stream.faust_driver, stream.onnx_scorer, stream.pipeline, stream.cli\n"
            "import stream.backtest, exporters.registry\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
