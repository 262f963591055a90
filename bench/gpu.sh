#!/usr/bin/env bash
# The GPU benchmarks, in one run: the transformer scorer (onnxruntime's CUDA provider with plain run and
# with IOBinding, the serving path; torch eager on CUDA; beside CPU onnxruntime and torch, batch 1/32/256)
# and SeqRec training (seconds per epoch on CUDA vs CPU, same data and seed).
# On a GPU machine, from the repository root:
#   bash bench/gpu.sh       -> bench/results/scorer-gpu.json, bench/results/training-gpu.json
# With the PyPI index it installs onnxruntime-gpu in place of onnxruntime into a venv of its own (.venv-gpu).
# Without one:  GPU_WHEELS=/path bash bench/gpu.sh   (a folder of wheels for that venv), or, on an image whose
# python already has torch:  GPU_PYTHON=python3 GPU_SITE=/path bash bench/gpu.sh   where /path holds
# onnxruntime-gpu and orjson unpacked (pip install --target layout); it goes ahead of the image's packages.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ -n "${GPU_PYTHON:-}" ]; then
  PY=$GPU_PYTHON
  export PYTHONPATH="${GPU_SITE:+$GPU_SITE:}$PWD"
else
  VENV=${GPU_VENV:-.venv-gpu}
  FIND=()
  [ -n "${GPU_WHEELS:-}" ] && FIND=(--no-index --find-links "$GPU_WHEELS")
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "${FIND[@]}" "onnxruntime-gpu[cuda,cudnn]" torch onnx numpy orjson tqdm
  fi
  PY=$VENV/bin/python
  export PYTHONPATH=$PWD
fi
"$PY" -c "import torch, onnxruntime as o; print('torch', torch.__version__, torch.cuda.is_available(), '| onnxruntime', o.__version__, o.get_available_providers())"
"$PY" -m bench.scorer
"$PY" -m bench.training --events "${GPU_TRAIN_EVENTS:-200000}" --epochs "${GPU_TRAIN_EPOCHS:-2}"
