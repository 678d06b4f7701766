"""Check an exported graph against PyTorch: same length and high SNR at zero noise."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from exporter.errors import ExportError
from runtime import contract

VERIFY_SENTENCES = (
    "Hello world.",
    "The quick brown fox jumps over the lazy dog, twice!",
    "Is it 3:30 already? Then we are late.",
)
MIN_SNR_DB = 60.0


@dataclass
class Check:
    text: str
    tokens: int
    torch_samples: int
    onnx_samples: int
    snr_db: float


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - test) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * np.log10(max(signal, 1e-20) / noise)


@contextlib.contextmanager
def zero_noise(vits):
    saved = vits.inference_noise_scale, vits.inference_noise_scale_dp
    vits.inference_noise_scale, vits.inference_noise_scale_dp = 0.0, 0.0
    try:
        yield vits
    finally:
        vits.inference_noise_scale, vits.inference_noise_scale_dp = saved


def torch_audio(vits, ids: list[int], sid: int | None = None, langid: int | None = None) -> np.ndarray:
    """TTS's own ``Vits.inference`` for one utterance, as float32 samples."""
    import torch

    aux = {"x_lengths": torch.tensor([len(ids)]), "d_vectors": None, "durations": None,
           "speaker_ids": None if sid is None else torch.tensor([sid]),
           "language_ids": None if langid is None else torch.tensor([langid])}
    return vits.inference(torch.tensor([ids], dtype=torch.long), aux_input=aux)["model_outputs"][0, 0].numpy()


def onnx_feeds(ids_batch: list[list[int]], scales, sid=None, langid=None) -> dict[str, np.ndarray]:
    lengths = np.array([len(ids) for ids in ids_batch], dtype=np.int64)
    tokens = np.zeros((len(ids_batch), int(lengths.max())), dtype=np.int64)
    for row, ids in enumerate(ids_batch):
        tokens[row, : len(ids)] = ids
    feeds = {contract.INPUT: tokens, contract.INPUT_LENGTHS: lengths, contract.SCALES: np.asarray(scales, np.float32)}
    if sid is not None:
        feeds[contract.SID] = np.full(len(ids_batch), sid, dtype=np.int64)
    if langid is not None:
        feeds[contract.LANGID] = np.full(len(ids_batch), langid, dtype=np.int64)
    return feeds


def verify(loaded, onnx_path: Path, sentences=VERIFY_SENTENCES, min_snr_db: float = MIN_SNR_DB) -> list[Check]:
    """Run onnxruntime and PyTorch on ``sentences`` with zero noise; raise if they disagree."""
    import onnxruntime as ort

    vits = loaded.model
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    sid = 0 if loaded.speakers else None
    langid = 0 if loaded.languages else None
    language = next(iter(loaded.languages), None)
    checks = []
    with zero_noise(vits):
        for text in sentences:
            ids = vits.tokenizer.text_to_ids(text, language=language) or [0]
            ref = torch_audio(vits, ids, sid, langid)
            audio, lengths = session.run(None, onnx_feeds([ids], [0.0, float(vits.length_scale), 0.0], sid, langid))
            out = audio[0, 0, : int(lengths[0])]
            snr = snr_db(ref, out) if len(ref) == len(out) else float("-inf")
            checks.append(Check(text, len(ids), len(ref), len(out), snr))
    for c in checks:
        if c.torch_samples != c.onnx_samples:
            raise ExportError(
                f"verification failed: for {c.text!r} PyTorch made {c.torch_samples} samples but the ONNX "
                f"graph {c.onnx_samples}. The export is wrong; please report this with your config."
            )
        if c.snr_db < min_snr_db:
            raise ExportError(
                f"verification failed: for {c.text!r} the ONNX output is only {c.snr_db:.1f} dB SNR from "
                f"PyTorch (need >= {min_snr_db:.0f} dB)."
            )
    return checks


def as_records(checks: list[Check]) -> list[dict]:
    return [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(c).items()} for c in checks]
