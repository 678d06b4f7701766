"""The contenders as they run inside their worker process: load once, then synthesize on request.

Every engine gets the same sentences as the same phoneme sequence: ``ids`` (our frontend's token
ids, fed to PyTorch and to our runtime as they are) and ``symbols`` (the same ids as vocabulary
symbols, which Piper maps through its own ``phoneme_id_map`` and sherpa-onnx takes as codepoints).
``synth(i, noise)`` speaks sentence ``i`` with the voice's default noise or with zero noise;
``first_audio()`` turns the paragraph into its first sentence of audio the way a user of that
engine would (its own sentence splitting and frontend where it has them).

Each engine imports its libraries in ``import_libs`` and ``load``, not at the top: every contender runs in a
process of its own whose import time and peak memory are measured, and must hold only what it runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class Engine:
    ttfa_note = ""

    def __init__(self, spec: dict):
        self.spec = spec
        self.threads = int(spec["threads"])
        self.ids: list[list[int]] = spec["ids"]
        self.symbols: list[list[str]] = spec["symbols"]
        self.paragraph: str = spec["paragraph"]
        self.paragraph_count: int = spec["paragraph_sentences"]
        self.sample_rate = 0

    def import_libs(self) -> None:
        """Import what the engine needs (timed apart from loading the model)."""

    def load(self) -> None:
        raise NotImplementedError

    def synth(self, index: int, noise: bool) -> np.ndarray:
        raise NotImplementedError

    def first_audio(self) -> np.ndarray:
        raise NotImplementedError


# -- PyTorch ----------------------------------------------------------------------------------------
def remove_weight_norm(model) -> None:
    """Fold weight norm into plain weights (needed before swapping modules for quantized ones)."""
    import torch
    from torch.nn.utils import parametrize

    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight")
        elif hasattr(module, "weight_g") and hasattr(module, "weight_v"):
            torch.nn.utils.remove_weight_norm(module)


def quantize_dynamic_int8(model):
    """The usual advice: ``torch.ao.quantization.quantize_dynamic`` on the Linear and Conv1d layers.

    ConvTranspose1d (HiFi-GAN's upsamplers) stays fp32: torch 2.13's dynamic ConvTranspose1d is
    broken (about -3 dB SNR on a single layer with random weights, where Conv1d gives 29 dB), and
    onnxruntime's dynamic quantization leaves it fp32 too.
    """
    import warnings

    import torch
    import torch.ao.nn.quantized.dynamic as nnqd
    from torch import nn
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    mapping = {nn.Linear: nnqd.Linear, nn.Conv1d: nnqd.Conv1d}
    remove_weight_norm(model)
    with warnings.catch_warnings():  # torch 2.10+ points eager-mode users at torchao
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {cls: default_dynamic_qconfig for cls in mapping}, mapping=mapping,
                                dtype=torch.qint8, inplace=True)


def _load_tts_config(config_path: str):
    from exporter.tts_compat import ensure_tts_importable

    ensure_tts_importable()
    from TTS.config import load_config

    return load_config(config_path)


def prepare_torch_int8(config_path: str, checkpoint_path: str, out_dir: str, threads: int) -> None:
    """Quantize the Coqui model and save it with its config (run in its own process)."""
    import torch

    torch.set_num_threads(threads)
    config = _load_tts_config(config_path)
    from TTS.tts.models.vits import Vits

    model = Vits(config)
    model.load_checkpoint(config, checkpoint_path, eval=True)
    model.disc = None  # training only; the reloaded model is built without it
    config.model_args.init_discriminator = False
    model = quantize_dynamic_int8(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pth")
    config.save_json(str(out / "config.json"))
    (out / "quantization.json").write_text(json.dumps({
        "recipe": "torch.ao.quantization.quantize_dynamic", "dtype": "qint8",
        "modules": ["Linear", "Conv1d"], "weight_norm": "removed first",
    }, indent=2) + "\n")


class TorchEngine(Engine):
    """TTS's own ``Vits.inference`` on the Coqui checkpoint (fp32, or reloaded dynamic int8)."""

    ttfa_note = "runtime.sentences split + TTS tokenizer (espeak-ng) + Vits.inference on the first sentence"

    def import_libs(self) -> None:
        import torch

        torch.set_num_threads(self.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        self.config = _load_tts_config(self.spec["config"])
        from TTS.tts.models.vits import Vits  # noqa: F401

    def load(self) -> None:
        import torch
        from TTS.tts.models.vits import Vits

        config = self.config
        if self.spec.get("quantized"):
            model = quantize_dynamic_int8(Vits(config))
            model.load_state_dict(torch.load(self.spec["checkpoint"], map_location="cpu", weights_only=True))
            model.eval()
        else:
            model = Vits(config)  # what a Coqui user does: load_config, Vits, load_checkpoint
            model.load_checkpoint(config, self.spec["checkpoint"], eval=True)
        self.model = model
        self.defaults = (model.inference_noise_scale, model.length_scale, model.inference_noise_scale_dp)
        self.sid = 0 if getattr(model, "emb_g", None) is not None else None
        self.langid = 0 if getattr(model, "emb_l", None) is not None else None
        self.sample_rate = int(config.audio.sample_rate)

    def _run(self, ids: list[int], noise: bool) -> np.ndarray:
        import torch

        from exporter.verify import torch_audio

        model = self.model
        noise_scale, _, noise_w = self.defaults if noise else (0.0, None, 0.0)
        model.inference_noise_scale, model.inference_noise_scale_dp = noise_scale, noise_w
        with torch.no_grad():
            return torch_audio(model, ids, self.sid, self.langid)

    def synth(self, index: int, noise: bool) -> np.ndarray:
        return self._run(self.ids[index], noise)

    def first_audio(self) -> np.ndarray:
        from runtime.sentences import split_sentences

        first = split_sentences(self.paragraph)[0]
        return self._run(self.model.tokenizer.text_to_ids(first), noise=True)


# -- our runtime --------------------------------------------------------------------------------------
class OrtEngine(Engine):
    """vits-edge's ``runtime.voice.Voice`` (onnxruntime) on model.onnx or a quantized sibling."""

    ttfa_note = "Voice.stream(paragraph): its sentence splitter and frontend, the first chunk it decodes"

    def import_libs(self) -> None:
        from runtime.voice import SynthesisConfig, Voice  # noqa: F401

    def load(self) -> None:
        from runtime.voice import Voice

        self.voice = Voice.load(self.spec["model"], threads=self.threads)
        self.sample_rate = self.voice.sample_rate

    def synth(self, index: int, noise: bool) -> np.ndarray:
        from runtime.voice import SynthesisConfig

        syn = SynthesisConfig() if noise else SynthesisConfig(noise_scale=0.0, noise_w=0.0)
        return self.voice.ids_to_audio(self.ids[index], syn)

    def first_audio(self) -> np.ndarray:
        return next(iter(self.voice.stream(self.paragraph))).audio


# -- piper-tts ----------------------------------------------------------------------------------------
class PiperEngine(Engine):
    """piper-tts's ``PiperVoice`` on the original Piper voice, with our thread count."""

    ttfa_note = "PiperVoice.synthesize(paragraph): Piper's espeak-ng phonemizes it all, then the first sentence"

    def import_libs(self) -> None:
        import onnxruntime  # noqa: F401
        from piper import PiperVoice  # noqa: F401

    def load(self) -> None:
        import onnxruntime as ort
        from piper import PiperVoice
        from piper.config import PiperConfig

        # PiperVoice.load uses onnxruntime's default thread count; build the same session with ours.
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        config = json.loads(Path(self.spec["config"]).read_text(encoding="utf-8"))
        session = ort.InferenceSession(self.spec["model"], sess_options=options, providers=["CPUExecutionProvider"])
        self.voice = PiperVoice(session=session, config=PiperConfig.from_dict(config))
        self.piper_ids = [self.voice.phonemes_to_ids(symbols) for symbols in self.symbols]
        self.sample_rate = self.voice.config.sample_rate

    def synth(self, index: int, noise: bool) -> np.ndarray:
        from piper import SynthesisConfig

        syn = SynthesisConfig() if noise else SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
        return np.asarray(self.voice.phoneme_ids_to_audio(self.piper_ids[index], syn), dtype=np.float32).reshape(-1)

    def first_audio(self) -> np.ndarray:
        return next(iter(self.voice.synthesize(self.paragraph))).audio_float_array


# -- sherpa-onnx ----------------------------------------------------------------------------------------
class SherpaEngine(Engine):
    """sherpa-onnx's ``OfflineTts``; it has no phonemizer of its own, so phonemes go in as codepoints."""

    ttfa_note = "OfflineTts.generate on the paragraph's phonemes (no frontend: sherpa-onnx 2 has none), first callback"

    def import_libs(self) -> None:
        import sherpa_onnx  # noqa: F401

    def _tts(self, noise: bool):
        import sherpa_onnx

        noise_scale, length_scale, noise_w = self.spec["scales"]
        vits = sherpa_onnx.OfflineTtsVitsModelConfig(
            model=self.spec["model"], tokens=self.spec["tokens"], noise_scale=noise_scale if noise else 0.0,
            noise_scale_w=noise_w if noise else 0.0, length_scale=length_scale)
        model = sherpa_onnx.OfflineTtsModelConfig(vits=vits, num_threads=self.threads, provider="cpu")
        return sherpa_onnx.OfflineTts(sherpa_onnx.OfflineTtsConfig(model=model, max_num_sentences=1))

    def load(self) -> None:
        self.tts = {True: self._tts(noise=True)}
        self.sample_rate = self.tts[True].sample_rate

    def _config(self, sentences: list[list[str]]):
        import sherpa_onnx

        config = sherpa_onnx.GenerationConfig()
        config.phoneme_codepoints = [[ord(s) for s in symbols] for symbols in sentences]
        config.silence_scale = 1.0  # sherpa's default (0.2) shortens pauses; keep the model's own audio
        config.sid = 0
        return config

    def synth(self, index: int, noise: bool) -> np.ndarray:
        if noise not in self.tts:  # the zero-noise pass runs last, after peak memory was read
            self.tts[noise] = self._tts(noise)
        audio = self.tts[noise].generate("", self._config([self.symbols[index]]))
        return np.asarray(audio.samples, dtype=np.float32)

    def first_audio(self) -> np.ndarray:
        chunks: list[np.ndarray] = []

        def first(samples, progress):
            chunks.append(np.array(samples, dtype=np.float32))
            return 0  # stop after the first sentence

        self.tts[True].generate("", self._config(self.symbols[: self.paragraph_count]), first)
        return chunks[0] if chunks else np.zeros(0, np.float32)


ENGINES = {"torch": TorchEngine, "ort": OrtEngine, "piper": PiperEngine, "sherpa": SherpaEngine}
