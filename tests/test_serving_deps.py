"""The serving path (worker, its drivers, the ONNX scorer, the ranker, the content encoder, the CLI)
must not need torch (nor transformers: the text encoder runs on onnxruntime + tokenizers)."""
import subprocess
import sys

from conftest import ROOT


def test_worker_path_never_imports_torch(encoder_dir):
    code = ("import sys\n"
            "import stream.drivers.worker, stream.drivers.faust_driver, stream.core.scoring.transformer, stream.core.pipeline, stream.cli\n"
            "import stream.evaluation.backtest, stream.core.storage.registry, stream.core.ranking.ranker, stream.core.content, stream.core.ranking.explore\n"
            "from stream.core.ranking.ranker import OnlineRanker, RankerConfig\n"
            "from stream.core.content import ContentEncoder\n"
            "OnlineRanker(RankerConfig(model='fm'))\n"
            f"ContentEncoder({str(encoder_dir[0])!r}).encode(['running shoes'])\n"
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"
