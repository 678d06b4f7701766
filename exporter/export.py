"""The export pipeline: load -> trace -> annotate -> verify -> write, all or nothing."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from exporter import pieces, text_model
from exporter.checkpoint import load_voice
from exporter.errors import ExportError
from exporter.io import atomic_dir
from exporter.onnx_export import ExportSpec, export_onnx
from exporter.piper_voice import PIPER_KEY, original_config
from exporter.sidecar import build_sidecar, metadata_props, tokenizer_spec
from exporter.split import architecture_from_graph, architecture_from_vits
from exporter.verify import as_records, check_frontend, verify
from runtime import contract

logger = logging.getLogger(__name__)


@dataclass
class ExportReport:
    out_dir: Path
    onnx_bytes: int
    num_parameters: int
    checks: list = field(default_factory=list)
    seconds: float = 0.0
    streaming: str = ""
    text_model: str = ""

    def table(self) -> str:
        worst = min(c.snr_db for c in self.checks)
        rows = [
            ("model", str(self.out_dir / contract.MODEL_FILE)),
            ("size", f"{self.onnx_bytes / 1e6:.1f} MB"),
            ("parameters", f"{self.num_parameters / 1e6:.2f} M"),
            ("verified", f"{len(self.checks)} sentences, same length, worst SNR {worst:.1f} dB vs PyTorch"),
            ("streaming", self.streaming),
            ("text model", self.text_model),
            ("time", f"{self.seconds:.1f} s"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _graph_parameters(onnx_path: Path) -> int:
    """Weights in the exported graph (training-only modules such as the posterior encoder are not in it)."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)


def _annotate(onnx_path: Path, props: dict[str, str]) -> None:
    model = onnx.load(str(onnx_path))
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(onnx_path))


def _streaming(vits, onnx_path: Path) -> dict:
    """The sidecar's streaming section: the architecture from the checkpoint's config, which must be the
    graph's; a voice that cannot be cut for streaming is exported all the same and spoken whole."""
    try:
        arch = architecture_from_vits(vits)
    except ExportError as exc:
        logger.warning("%s", exc)
        return {"unsupported": str(exc)}
    graph = architecture_from_graph(onnx.load(str(onnx_path), load_external_data=False))
    if graph != arch:
        raise ExportError(f"the checkpoint's config and its traced graph disagree on the decoder ({arch} against "
                          f"{graph}); please report this with your config")
    return pieces.streaming_section(arch)


def export_voice(config_path: Path, checkpoint_path: Path, out_dir: Path, *, force: bool = False,
                 spec: ExportSpec | None = None, text_models: bool = True) -> ExportReport:
    start = time.perf_counter()
    loaded = load_voice(config_path, checkpoint_path)
    logger.debug("checking the runtime's text frontend against TTS's tokenizer")
    check_frontend(loaded, tokenizer_spec(loaded.model, loaded.config))
    d_vector_dim = 0 if loaded.d_vectors is None else int(loaded.d_vectors.shape[1])
    spec = spec or ExportSpec(with_speakers=bool(loaded.speakers), with_languages=bool(loaded.languages),
                              d_vector_dim=d_vector_dim)
    with atomic_dir(out_dir, force=force) as tmp:
        onnx_path = tmp / contract.MODEL_FILE
        logger.info("tracing %s to ONNX (opset %d)", checkpoint_path, spec.opset)
        export_onnx(loaded.model, onnx_path, spec, loaded.d_vectors)
        num_parameters = _graph_parameters(onnx_path)
        sidecar = build_sidecar(loaded, num_parameters=num_parameters, spec=spec)
        piper = original_config(config_path)
        if piper is not None:  # an imported Piper voice: piper-voice gives it back its own config
            sidecar[PIPER_KEY] = piper
        _annotate(onnx_path, metadata_props(sidecar))
        logger.info("verifying onnxruntime against PyTorch")
        checks = verify(loaded, onnx_path)
        sidecar["verification"] = {"min_snr_db": min(c.snr_db for c in checks), "checks": as_records(checks)}
        sidecar["streaming"] = _streaming(loaded.model, onnx_path)
        contract.sidecar_path(onnx_path).write_text(json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n",
                                                   encoding="utf-8")
        streaming = f"not possible: {sidecar['streaming'].get('unsupported')}"
        if "architecture" in sidecar["streaming"]:
            logger.info("writing the streaming pieces and checking them against the whole graph")
            record = pieces.add(tmp, contract.MODEL_FILE)
            streaming = (f"{contract.PIECES_DIR}/ frontend + decoder, {sidecar['streaming']['receptive_field_frames']} "
                         f"frames of context, chunks vs whole {record['verified']['min_snr_db']} dB")
        if text_models:
            record = text_model.add(tmp)
            text = record.get("unavailable") or (f"{record['file']} (string in, audio out; ids identical on "
                                                 f"{record['verified']['texts']} texts)")
        else:
            text = "not asked for"
        onnx_bytes = onnx_path.stat().st_size
    return ExportReport(Path(out_dir), onnx_bytes, num_parameters, checks, time.perf_counter() - start, streaming,
                        text)
