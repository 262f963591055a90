"""The model registry: a directory per model name, a directory per version with a manifest, and a
PROMOTED pointer that serving follows.

    artifacts/models/seqrec/PROMOTED              -> "v3-1a2b3c4d"
    artifacts/models/seqrec/v3-1a2b3c4d/model.onnx
    artifacts/models/seqrec/v3-1a2b3c4d/vocab.json     item ids, index = position (0 = padding)
    artifacts/models/seqrec/v3-1a2b3c4d/manifest.json  version, created_at, training-data hash, metrics,
                                                       opset, parity figures, model config
    artifacts/models/seqrec/v3-1a2b3c4d/holdout/       the same model before fine-tuning, a model directory of
                                                       its own (vocab nulls: items it never trained on); only
                                                       backtests serve it (exporters/pipeline.holdout_files)

Writes are atomic (temp dir + rename; pointer via rename), so a worker polling PROMOTED never sees
a half-written version. A model that failed parity cannot be registered.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import orjson

from stream.errors import RegistryError


class Registry:
    def __init__(self, root: str | Path, name: str = "seqrec"):
        self.root = Path(root) / name
        self.name = name

    def versions(self) -> list[dict]:
        if not self.root.exists():
            return []
        out = []
        for d in sorted(self.root.iterdir()):
            m = d / "manifest.json"
            if d.is_dir() and m.exists():
                out.append(orjson.loads(m.read_bytes()))
        return sorted(out, key=lambda m: m["seq"])

    def register(self, files: dict[str, Path], manifest: dict) -> str:
        parity = manifest.get("parity") or {}
        if not parity.get("passed"):
            raise RegistryError(f"refusing to register: ONNX parity did not pass ({parity.get('max_abs_diff')})")
        self.root.mkdir(parents=True, exist_ok=True)
        seq = 1 + max((m["seq"] for m in self.versions()), default=0)
        digest = hashlib.sha256(Path(files["model.onnx"]).read_bytes()).hexdigest()[:8]
        version = f"v{seq}-{digest}"
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".tmp-"))
        for name, src in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / name)
        manifest = {**manifest, "name": self.name, "version": version, "seq": seq,
                    "created_at": int(time.time() * 1000), "files": sorted(files)}
        (tmp / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        os.rename(tmp, self.root / version)
        return version

    def promote(self, version: str, reason: str = "manual") -> None:
        previous = self.promoted()
        self._point(version)
        self.log({"action": "promote", "version": version, "previous": previous, "reason": reason})

    def rollback(self) -> str:
        """Put back the version the current one replaced (repeatable: each rollback goes one further back);
        returns it."""
        current = self.promoted()
        entry = self._entry(current)
        target = entry.get("previous") if entry else None
        if not target:
            raise RegistryError(f"nothing to roll back to in {self.root}: {current or 'no version'} "
                                "replaced no earlier version")
        before = self._entry(target)
        self._point(target)
        self.log({"action": "rollback", "version": target, "previous": before.get("previous") if before else None,
                  "from": current})
        return target

    def _entry(self, version: str | None) -> dict | None:
        """The latest history entry that put `version` in service."""
        return next((h for h in reversed(self.history()) if h.get("version") == version
                     and h["action"] in ("promote", "rollback")), None)

    def _point(self, version: str) -> None:
        if not (self.root / version / "manifest.json").exists():
            known = ", ".join(m["version"] for m in self.versions()) or "none"
            raise RegistryError(f"no version {version!r} in {self.root} (known: {known})")
        tmp = self.root / ".PROMOTED.tmp"
        tmp.write_text(version)
        os.replace(tmp, self.root / "PROMOTED")

    def log(self, entry: dict) -> None:
        """Append a decision (promotion, rollback, a candidate kept out) to history.jsonl."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "history.jsonl", "ab") as fh:
            fh.write(orjson.dumps({"at": int(time.time() * 1000), **entry}) + b"\n")

    def history(self) -> list[dict]:
        try:
            return [orjson.loads(x) for x in (self.root / "history.jsonl").read_bytes().splitlines() if x.strip()]
        except FileNotFoundError:
            return []

    def annotate(self, version: str, **fields) -> None:
        """Add fields to a version's manifest (e.g. its shadow check and the decision), atomically."""
        path = self.root / version / "manifest.json"
        m = {**orjson.loads(path.read_bytes()), **fields}
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(m, option=orjson.OPT_INDENT_2))
        os.replace(tmp, path)

    def promoted(self) -> str | None:
        try:
            return (self.root / "PROMOTED").read_text().strip() or None
        except FileNotFoundError:
            return None

    def path(self, version: str) -> Path:
        return self.root / version
