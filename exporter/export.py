"""The export pipeline: load -> trace -> annotate -> verify -> write, all or nothing."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exporter.checkpoint import load_voice
from exporter.io import atomic_dir
from exporter.onnx_export import ExportSpec, export_onnx
from exporter.sidecar import build_sidecar, metadata_props
from exporter.verify import as_records, verify
from runtime import contract

logger = logging.getLogger(__name__)


@dataclass
class ExportReport:
    out_dir: Path
    onnx_bytes: int
    num_parameters: int
    checks: list = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> str:
        worst = min(c.snr_db for c in self.checks)
        rows = [
            ("model", str(self.out_dir / contract.MODEL_FILE)),
            ("size", f"{self.onnx_bytes / 1e6:.1f} MB"),
            ("parameters", f"{self.num_parameters / 1e6:.2f} M"),
            ("verified", f"{len(self.checks)} sentences, same length, worst SNR {worst:.1f} dB vs PyTorch"),
            ("time", f"{self.seconds:.1f} s"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _graph_parameters(onnx_path: Path) -> int:
    """Weights in the exported graph (training-only modules such as the posterior encoder are not in it)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)


def _annotate(onnx_path: Path, props: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(onnx_path))
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(onnx_path))


def export_voice(config_path: Path, checkpoint_path: Path, out_dir: Path, *, force: bool = False,
                 spec: ExportSpec | None = None) -> ExportReport:
    start = time.perf_counter()
    loaded = load_voice(config_path, checkpoint_path)
    spec = spec or ExportSpec(with_speakers=bool(loaded.speakers), with_languages=bool(loaded.languages))
    with atomic_dir(out_dir, force=force) as tmp:
        onnx_path = tmp / contract.MODEL_FILE
        logger.info("tracing %s to ONNX (opset %d)", checkpoint_path, spec.opset)
        export_onnx(loaded.model, onnx_path, spec)
        num_parameters = _graph_parameters(onnx_path)
        sidecar = build_sidecar(loaded, num_parameters=num_parameters, spec=spec)
        _annotate(onnx_path, metadata_props(sidecar))
        logger.info("verifying onnxruntime against PyTorch")
        checks = verify(loaded, onnx_path)
        sidecar["verification"] = {"min_snr_db": min(c.snr_db for c in checks), "checks": as_records(checks)}
        contract.sidecar_path(onnx_path).write_text(json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n",
                                                   encoding="utf-8")
        onnx_bytes = onnx_path.stat().st_size
    return ExportReport(Path(out_dir), onnx_bytes, num_parameters, checks, time.perf_counter() - start)
