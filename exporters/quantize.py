"""int8 dynamic quantization of an exported model (weights int8, activations quantized at run time)."""
from __future__ import annotations

from pathlib import Path


def quantize_int8(src: str | Path, dst: str | Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    return Path(dst)
