"""Turn a trained Piper voice (``VOICE.onnx`` + ``VOICE.onnx.json``) into a Coqui VITS checkpoint.

Piper trains the original VITS code and exports it to ONNX; the ONNX initializers keep the
original parameter names, which map one to one onto Coqui's ``Vits``:

* modules were renamed: ``enc_p`` -> ``text_encoder``, ``dec`` -> ``waveform_decoder``,
  ``dp`` -> ``duration_predictor``; ``m``/``logs`` -> ``translation``/``log_scale``;
* the original flows interleave parameter-free ``Flip`` modules that Coqui folds into its
  coupling layers, so ``flow.flows.{0,2,4,6}`` -> ``{0,1,2,3}`` and ``dp.flows.{1,3,5,7}`` ->
  ``{1,2,3,4}``;
* Piper removed weight norm before exporting, so folded weights are split back into
  Coqui's weight-norm parametrisation (``g = ||W||`` per output channel, ``v = W``);
* the ONNX exporter renamed a few tensors: the 32 flow WaveNet convolution weights became
  ``onnx::Conv_NNNN`` (their consuming node's name gives the path), the token embedding is
  called ``sid`` (it feeds ``/enc_p/emb/Gather``), and ``dp.flows.0.logs`` was folded into the
  constant ``/dp/flows.0/Exp_output_0 = exp(-logs)``.

Parameters that inference never uses are absent from the ONNX file (the posterior encoder,
the duration predictor's training-only ``post_*`` layers and its first ConvFlow, which
reverse mode skips). They are written as zeros and listed in the checkpoint so nobody
mistakes the result for a trainable checkpoint.

The text settings make TTS's own tokenizer produce Piper's ids: espeak-ng ``en-us`` phonemes,
``add_blank`` and ``use_eos_bos`` give ``^ _ p1 _ p2 ... pN _ $``, and every phoneme keeps its
Piper id. TTS's vocabulary always orders its specials eos, bos, blank, which cannot put ``_``,
``^``, ``$`` at Piper's ids 0, 1, 2, so ``$`` and ``_`` are repeated at ids 256 and 257 (TTS maps
a repeated symbol to its last id) and the embedding gains two rows that copy Piper's rows 2
and 0: the audio is the same as with Piper's ids, and ids 0-255 mean what they mean in Piper.
What still differs from ``piper-tts`` is the phonemizer itself: TTS runs the system espeak-ng
binary on cleaned text (``phoneme_cleaners``) and restores punctuation itself; Piper links its own
espeak-ng build. On the 25 dev sentences 13 id sequences are identical; the rest differ in
espeak-ng's data version (``iʲ`` vs ``i``, ``ɔː`` vs ``oː``) and in how ``...``, ``3:30`` and ``Dr.``
are read (measured by ``tests/test_piper_import.py``).

torch and TTS are imported where they are used (seconds; TTS after ``ensure_tts_importable``).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from exporter.errors import ExportError
from exporter.io import atomic_dir
from exporter.piper_voice import PIPER_CONFIG
from exporter.tts_compat import ensure_tts_importable

logger = logging.getLogger(__name__)

# VitsArgs shared by Piper's x_low/low/medium/high voices; the rest is read from the weights.
_PIPER_ARGS = {
    "hidden_channels": 192,
    "num_heads_text_encoder": 2,
    "num_layers_text_encoder": 6,
    "kernel_size_text_encoder": 3,
    "kernel_size_flow": 5,
    "use_sdp": True,
    "init_discriminator": False,
}
# Applied in order; the first matching rule renames the parameter.
_RENAMES = [
    (r"^enc_p\.", "text_encoder."),
    (r"^dec\.", "waveform_decoder."),
    (r"^flow\.flows\.(\d+)\.", lambda m: f"flow.flows.{int(m.group(1)) // 2}."),
    (r"^dp\.flows\.0\.m$", "duration_predictor.flows.0.translation"),
    (r"^dp\.flows\.0\.logs$", "duration_predictor.flows.0.log_scale"),
    (r"^dp\.flows\.(\d+)\.", lambda m: f"duration_predictor.flows.{(int(m.group(1)) + 1) // 2}."),
    (r"^dp\.", "duration_predictor."),
]
_PIPER_PREFIXES = ("enc_p", "dec", "flow", "dp")
BLANK_PAD, BOS, EOS = "_", "^", "$"


def coqui_name(piper_name: str) -> str:
    """Map an original VITS parameter name onto Coqui's ``Vits``."""
    for pattern, repl in _RENAMES:
        name, n = re.subn(pattern, repl, piper_name)
        if n:
            return name
    raise ExportError(f"unexpected Piper parameter {piper_name!r}")


def read_piper_weights(onnx_path: Path) -> dict[str, np.ndarray]:
    """Return the voice's parameters under their original VITS names."""
    model = onnx.load(str(onnx_path))
    inits = {t.name: t for t in model.graph.initializer}
    weights = {n: numpy_helper.to_array(t) for n, t in inits.items() if n.split(".")[0] in _PIPER_PREFIXES}
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[1].startswith("onnx::Conv_") and node.input[1] in inits:
            # /flow/flows.6/enc/in_layers.0/Conv -> flow.flows.6.enc.in_layers.0.weight
            path = node.name.strip("/").rsplit("/", 1)[0].replace("/", ".")
            weights[f"{path}.weight"] = numpy_helper.to_array(inits[node.input[1]])
        elif node.name == "/enc_p/emb/Gather" and node.input[0] in inits:
            weights["enc_p.emb.weight"] = numpy_helper.to_array(inits[node.input[0]])
    if "/dp/flows.0/Exp_output_0" in inits:  # exp(-logs), constant-folded by the exporter
        weights["dp.flows.0.logs"] = -np.log(numpy_helper.to_array(inits["/dp/flows.0/Exp_output_0"]))
    missing = [k for k in ("enc_p.emb.weight", "dp.flows.0.logs", "dec.conv_pre.weight") if k not in weights]
    if missing:
        raise ExportError(f"{onnx_path} does not look like a Piper VITS voice: cannot find {', '.join(missing)}.")
    return weights


def _split_weight_norm(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of weight norm along dim 0: returns (g, v) with g * v / ||v|| == w."""
    g = np.sqrt((w.astype(np.float64) ** 2).sum(axis=tuple(range(1, w.ndim)), keepdims=True))
    return g.astype(np.float32), w


def piper_args(weights: dict[str, np.ndarray]) -> dict:
    """VitsArgs for the voice: sizes are read off the weights, the rest is Piper's architecture."""

    def count(prefix: str) -> int:
        return len({k[len(prefix) :].split(".")[0] for k in weights if k.startswith(prefix)})

    n_ups = count("dec.ups.")
    n_kernels = count("dec.resblocks.") // n_ups
    resblock_1 = any(k.startswith("dec.resblocks.0.convs1.") for k in weights)
    up_kernels = [int(weights[f"dec.ups.{i}.weight"].shape[-1]) for i in range(n_ups)]
    args = dict(_PIPER_ARGS)
    args.update(
        num_chars=int(weights["enc_p.emb.weight"].shape[0]),
        hidden_channels=int(weights["enc_p.emb.weight"].shape[1]),
        hidden_channels_ffn_text_encoder=int(weights["enc_p.encoder.ffn_layers.0.conv_1.weight"].shape[0]),
        num_layers_text_encoder=count("enc_p.encoder.attn_layers."),
        num_layers_flow=count("flow.flows.0.enc.in_layers."),
        upsample_initial_channel_decoder=int(weights["dec.conv_pre.weight"].shape[0]),
        upsample_kernel_sizes_decoder=up_kernels,
        upsample_rates_decoder=[k // 2 for k in up_kernels],  # Piper pairs kernel 2r with rate r
        resblock_type_decoder="1" if resblock_1 else "2",
        resblock_kernel_sizes_decoder=[
            int(weights[f"dec.resblocks.{i}.{'convs1' if resblock_1 else 'convs'}.0.weight"].shape[-1])
            for i in range(n_kernels)
        ],
        resblock_dilation_sizes_decoder=[[1, 3, 5]] * n_kernels if resblock_1 else [[1, 2], [2, 6], [3, 12]][:n_kernels],
    )
    return args


def piper_vocab(id_map: dict[str, list[int]], num_chars: int) -> list[str]:
    """The voice's symbols in id order; unused ids get private-use characters no text produces."""
    vocab = [chr(0xE000 + i) for i in range(num_chars)]
    for symbol, ids in id_map.items():
        if len(ids) != 1 or len(symbol) != 1:
            raise ExportError(f"phoneme_id_map entry {symbol!r}: {ids} is not one id for one symbol; not supported.")
        vocab[ids[0]] = symbol
    if vocab[:3] != [BLANK_PAD, BOS, EOS]:
        raise ExportError("phoneme_id_map does not put '_', '^', '$' at ids 0, 1, 2 as Piper does.")
    return vocab


def piper_config(piper_json: dict, args: dict):
    """A Coqui ``VitsConfig`` whose tokenizer reproduces the voice's ids (see module docstring)."""
    from TTS.tts.configs.shared_configs import CharactersConfig
    from TTS.tts.configs.vits_config import VitsArgs, VitsConfig

    vocab = piper_vocab(piper_json["phoneme_id_map"], args["num_chars"] - len(_SPECIALS_AGAIN))
    inference = piper_json.get("inference", {})
    hop = int(np.prod(args["upsample_rates_decoder"]))
    model_args = VitsArgs(
        **args,
        inference_noise_scale=float(inference.get("noise_scale", 0.667)),
        length_scale=float(inference.get("length_scale", 1.0)),
        inference_noise_scale_dp=float(inference.get("noise_w", 0.8)),
    )
    config = VitsConfig(
        model_args=model_args,
        use_phonemes=True,
        phonemizer="espeak",
        phoneme_language=piper_json.get("espeak", {}).get("voice", "en-us"),
        text_cleaner=PIPER_TEXT_CLEANER,
        add_blank=True,
        enable_eos_bos_chars=True,
        characters=CharactersConfig(
            characters_class="TTS.tts.utils.text.characters.IPAPhonemes",
            # vocab = [eos, bos, blank] + characters: ids 0-2 are '$', '^', '_'; ids 3.. are Piper's;
            # '$' and '_' repeat at the end, and TTS maps a repeated symbol to its last id.
            characters="".join(vocab[3:]) + "".join(_SPECIALS_AGAIN),
            punctuations="",
            pad=None,
            eos=EOS,
            bos=BOS,
            blank=BLANK_PAD,
            is_unique=False,
            is_sorted=False,
        ),
    )
    config.audio.sample_rate = int(piper_json["audio"]["sample_rate"])
    config.audio.hop_length = hop
    config.audio.win_length = hop * 4
    config.audio.fft_size = hop * 4
    return config


# Symbols TTS's vocabulary layout cannot place at Piper's ids; they get extra embedding rows
# that copy Piper's rows for them (see the module docstring).
_SPECIALS_AGAIN = (EOS, BLANK_PAD)

# Piper hands raw text to espeak-ng, which expands numbers and abbreviations itself; the
# cleaner that stays closest to that is measured in tests/test_piper_import.py.
PIPER_TEXT_CLEANER = "phoneme_cleaners"


def import_piper(onnx_path: Path, out_dir: Path, *, force: bool = False) -> Path:
    """Write ``out_dir/config.json`` and ``out_dir/model.pth`` for a Piper voice."""
    import torch

    ensure_tts_importable()
    from TTS.tts.models.vits import Vits

    onnx_path = Path(onnx_path)
    json_path = onnx_path.with_name(onnx_path.name + ".json")
    for path in (onnx_path, json_path):
        if not path.is_file():
            raise ExportError(f"{path} not found: a Piper voice is VOICE.onnx with VOICE.onnx.json beside it.")
    try:
        piper_json = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{json_path} is not valid JSON: {exc}") from exc
    if int(piper_json.get("num_speakers", 1)) > 1:
        raise ExportError(f"{json_path}: multi-speaker Piper voices are not supported yet (single-speaker only).")
    if "phoneme_id_map" not in piper_json or piper_json.get("phoneme_type", "espeak") != "espeak":
        raise ExportError(f"{json_path}: only espeak-phoneme Piper voices with a phoneme_id_map are supported.")

    weights = read_piper_weights(onnx_path)
    emb = weights["enc_p.emb.weight"]
    piper_ids = {BLANK_PAD: 0, BOS: 1, EOS: 2}
    weights["enc_p.emb.weight"] = np.concatenate([emb] + [emb[[piper_ids[s]]] for s in _SPECIALS_AGAIN])
    config = piper_config(piper_json, piper_args(weights))
    model = Vits(config)
    state = model.state_dict()
    loaded, unused_in_inference = {}, []
    for piper_name, value in weights.items():
        name = coqui_name(piper_name)
        if f"{name[: -len('.weight')]}.parametrizations.weight.original0" in state and name.endswith(".weight"):
            g, v = _split_weight_norm(value)
            base = name[: -len(".weight")] + ".parametrizations.weight"
            loaded[base + ".original0"], loaded[base + ".original1"] = g, v
        else:
            loaded[name] = value.reshape(state[name].shape) if name in state else value
    for name, ref in state.items():
        if name not in loaded:
            unused_in_inference.append(name)
            loaded[name] = np.zeros(tuple(ref.shape), dtype=np.float32)
        elif tuple(loaded[name].shape) != tuple(ref.shape):
            raise ExportError(f"{name}: voice has shape {tuple(loaded[name].shape)}, Coqui Vits expects {tuple(ref.shape)}.")
    extra = sorted(set(loaded) - set(state))
    if extra:
        raise ExportError(f"{onnx_path}: parameters with no place in Coqui's Vits: {extra[:5]}")
    bad_unused = [n for n in unused_in_inference if not n.startswith(_UNUSED_AT_INFERENCE)]
    if bad_unused:
        raise ExportError(f"{onnx_path}: inference parameters missing from the voice: {bad_unused[:5]}")

    state_dict = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in loaded.items()}
    with atomic_dir(out_dir, force=force) as tmp:
        torch.save({"model": state_dict, "unused_in_inference": unused_in_inference}, tmp / "model.pth")
        config.save_json(str(tmp / "config.json"))
        # Piper's own config, kept: `export` records it in the voice's sidecar, `piper-voice` writes it back
        (tmp / PIPER_CONFIG).write_text(json.dumps(piper_json, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    logger.info("imported %s: %d tensors from the voice, %d unused-at-inference zeros", onnx_path.name,
                len(weights), len(unused_in_inference))
    return Path(out_dir)


_UNUSED_AT_INFERENCE = (
    "posterior_encoder.",
    "duration_predictor.post_",
    "duration_predictor.flows.1.",
)
