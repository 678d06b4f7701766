"""Check an exported graph against PyTorch: same length and high SNR at zero noise."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from exporter.errors import ExportError
from runtime import contract
from runtime.text import FrontendError, tokenizer_from_spec

VERIFY_SENTENCES = (
    "Hello world.",
    "The quick brown fox jumps over the lazy dog, twice!",
    "Is it 3:30 already? Then we are late.",
)
MIN_SNR_DB = 60.0
# The frontend check's text beside VERIFY_SENTENCES: numbers, abbreviations, symbols, accents, odd spacing.
FRONTEND_TEXTS = (
    "Dr. Smith paid $5.50 for 2 books on Jan. 3rd; that's 50% off!",
    "Crème brûlée, naïve café — «voilà» & co. (déjà vu) [sic] \"quoted\"",
    "Ünïcödé: Straße, señor, smörgåsbord, Łódź, Ελληνικά, русский, 日本語 🙂",
    "  tabs\tand\nnewlines   and  spaces  ",
    "A-B: c;d... e?! f' g/h 1,000,000 3.14 10:45 pm",
)


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


def torch_audio(vits, ids: list[int], sid: int | None = None, langid: int | None = None,
                d_vector=None) -> np.ndarray:
    """TTS's own ``Vits.inference`` for one utterance, as float32 samples; a d-vector voice is given its
    speaker's ``d_vector`` (as TTS's ``synthesize`` gives it: unnormalised, ``inference`` normalises it)."""
    import torch  # heavy, and only here: the pieces' and text models' checks use this module without torch

    aux = {"x_lengths": torch.tensor([len(ids)]), "durations": None,
           "d_vectors": None if d_vector is None else torch.as_tensor(np.asarray(d_vector, np.float32))[None],
           "speaker_ids": None if sid is None or d_vector is not None else torch.tensor([sid]),
           "language_ids": None if langid is None else torch.tensor([langid])}
    return vits.inference(torch.tensor([ids], dtype=torch.long), aux_input=aux)["model_outputs"][0, 0].numpy()


def onnx_feeds(ids_batch: list[list[int]], scales, sid=None, langid=None, embedding=None) -> dict[str, np.ndarray]:
    lengths = np.array([len(ids) for ids in ids_batch], dtype=np.int64)
    tokens = np.zeros((len(ids_batch), int(lengths.max())), dtype=np.int64)
    for row, ids in enumerate(ids_batch):
        tokens[row, : len(ids)] = ids
    feeds = {contract.INPUT: tokens, contract.INPUT_LENGTHS: lengths, contract.SCALES: np.asarray(scales, np.float32)}
    if sid is not None:
        feeds[contract.SID] = np.full(len(ids_batch), sid, dtype=np.int64)
    if embedding is not None:
        feeds[contract.SPEAKER_EMBEDDING] = np.tile(np.asarray(embedding, np.float32).reshape(1, -1), (len(ids_batch), 1))
    if langid is not None:
        feeds[contract.LANGID] = np.full(len(ids_batch), langid, dtype=np.int64)
    return feeds


def _spread(values: list, count: int) -> list:
    """``count`` picks from ``values``: the first, the last, then the middle (cycled when there are fewer)."""
    if not values:
        return [None] * count
    picks = [values[0], values[-1], values[len(values) // 2]]
    return [picks[i % len(picks)] for i in range(count)]


def verify(loaded, onnx_path: Path, sentences=VERIFY_SENTENCES, min_snr_db: float = MIN_SNR_DB) -> list[Check]:
    """Run onnxruntime and PyTorch on ``sentences`` with zero noise; raise if they disagree. A voice with speakers
    or languages is checked with its first, last and a middle one (a d-vector voice's last sentence with a
    caller's own d-vector: sid -1)."""
    vits = loaded.model
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    sids = _spread(sorted(set(loaded.speakers.values())), len(sentences))
    languages = _spread(list(loaded.languages.items()), len(sentences))
    table = loaded.d_vectors
    checks = []
    with zero_noise(vits):
        for k, (text, sid, lang) in enumerate(zip(sentences, sids, languages)):
            language, langid = lang or (None, None)
            embedding = None
            if table is not None:
                embedding = table[sid]
                if k == len(sentences) - 1:  # a caller's own d-vector, not of unit length
                    embedding = np.random.default_rng(k).standard_normal(table.shape[1]).astype(np.float32) * 3
                    sid = -1
            ids = vits.tokenizer.text_to_ids(text, language=language) or [0]
            ref = torch_audio(vits, ids, sid, langid, embedding)
            audio, lengths = session.run(None, onnx_feeds([ids], [0.0, float(vits.length_scale), 0.0], sid, langid,
                                                          embedding))
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


@contextlib.contextmanager
def quiet_vocabulary():
    """TTS's tokenizer and the runtime's warn of each character a voice's vocabulary lacks (and drop it): about the
    user's text, not about the export's own check sentences."""
    logs = [logging.getLogger(name) for name in ("runtime.text", "TTS.tts.utils.text.tokenizer")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)


def check_frontend(loaded, spec: dict, texts=VERIFY_SENTENCES + FRONTEND_TEXTS) -> int:
    """The runtime's text frontend, built from the sidecar's ``tokenizer`` spec, must give TTS's own ids for
    ``texts`` in every language of the voice; otherwise the export fails naming the first text that differs.
    Returns the number of texts compared."""
    try:
        runtime = tokenizer_from_spec(spec)
    except FrontendError as exc:
        raise ExportError(f"the vits-edge runtime cannot reproduce this voice's text frontend ({exc}); it is not "
                          "exported, since it would speak the wrong ids") from exc
    compared = 0
    for language in list(loaded.languages) or [None]:
        for text in texts:
            with quiet_vocabulary():
                want = loaded.model.tokenizer.text_to_ids(text, language=language)
                got = runtime.text_to_ids(text, language=language)
            if want != got:
                raise ExportError(f"the runtime's text frontend gives other ids than TTS's for {text!r}"
                                  f"{f' in {language}' if language else ''} ({len(got)} ids against {len(want)}); "
                                  "please report this with your config")
            compared += 1
    return compared


def as_records(checks: list[Check]) -> list[dict]:
    return [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(c).items()} for c in checks]
