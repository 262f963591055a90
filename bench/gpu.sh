#!/usr/bin/env bash
# The GPU benchmark of the transformer scorer: onnxruntime's CUDA provider (plain run and IOBinding, the serving
# path) and torch eager on CUDA, beside CPU onnxruntime and torch, at batch 1/32/256, in one run.
# On a GPU machine, from the repository root:   bash bench/gpu.sh      -> bench/results/scorer-gpu.json
# It installs onnxruntime-gpu in place of onnxruntime into a venv of its own (.venv-gpu); a machine without
# the PyPI index can pass a folder of wheels: GPU_WHEELS=/path bash bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
VENV=${GPU_VENV:-.venv-gpu}
FIND=()
[ -n "${GPU_WHEELS:-}" ] && FIND=(--no-index --find-links "$GPU_WHEELS")
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "${FIND[@]}" onnxruntime-gpu torch onnx numpy orjson confluent-kafka redis tokenizers \
      tqdm prometheus-client
  "$VENV/bin/pip" install -q --no-deps --no-build-isolation -e .
fi
"$VENV/bin/python" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
"$VENV/bin/python" -m bench.scorer
