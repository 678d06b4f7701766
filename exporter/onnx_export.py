"""Trace Coqui's ``Vits.inference`` to an ONNX graph with every knob exposed as an input.

TTS's modules are imported where they are used: only once exporter/checkpoint.py has loaded TTS (after
``ensure_tts_importable``), never by importing this module.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from runtime import contract

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportSpec:
    """How the graph is traced: names, dynamic axes, opset."""

    opset: int = 17
    dummy_tokens: int = 50
    with_speakers: bool = False
    with_languages: bool = False
    d_vector_dim: int = 0  # a d-vector voice: sid picks a row of the graph's table, or -1 the speaker_embedding input

    @property
    def input_names(self) -> list[str]:
        names = [contract.INPUT, contract.INPUT_LENGTHS, contract.SCALES]
        if self.with_speakers:
            names.append(contract.SID)
        if self.d_vector_dim:
            names.append(contract.SPEAKER_EMBEDDING)
        if self.with_languages:
            names.append(contract.LANGID)
        return names

    @property
    def output_names(self) -> list[str]:
        return [contract.OUTPUT, contract.OUTPUT_LENGTHS]

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes = {
            contract.INPUT: {0: "batch", 1: "tokens"},
            contract.INPUT_LENGTHS: {0: "batch"},
            contract.OUTPUT: {0: "batch", 2: "samples"},
            contract.OUTPUT_LENGTHS: {0: "batch"},
        }
        for name in (contract.SID, contract.SPEAKER_EMBEDDING, contract.LANGID):
            if name in self.input_names:
                axes[name] = {0: "batch"}
        return axes


class InferenceGraph(torch.nn.Module):
    """``forward(input, input_lengths, scales[, sid][, speaker_embedding][, langid]) -> (audio, output_lengths)``.

    The body is ``Vits.inference`` from coqui-tts 0.28 with two changes: the three scales are
    inputs (Coqui's ``export_onnx`` bakes noise and noise_w in), and the attention mask keeps
    its frame axis (``Vits.inference`` squeezes ``[B, frames, tokens]`` at dim 1, which drops the
    frame axis when an utterance is one frame long and then fails, in PyTorch as in ONNX).
    Export verification checks the graph against TTS's own ``Vits.inference``.

    A d-vector voice (``d_vectors``: each named speaker's d-vector, as TTS picks one by name) holds them as a
    table: ``sid`` selects a row, and a negative ``sid`` takes the caller's own ``speaker_embedding`` instead
    (voice cloning); either is L2-normalised, as ``Vits.inference`` normalises the d-vectors it is given.
    """

    def __init__(self, vits, d_vectors=None, conditioning=(contract.SID, contract.LANGID)):
        super().__init__()
        self.vits = vits
        self.d_vectors = None if d_vectors is None else torch.as_tensor(d_vectors, dtype=torch.float32)
        self.conditioning = tuple(conditioning)  # the names of forward's inputs after scales, in order

    def speaker(self, sid, speaker_embedding):
        """The speaker conditioning ``g`` [B, C, 1], or None for a single-speaker voice."""
        if sid is None:
            return None
        if self.d_vectors is None:
            return self.vits.emb_g(sid).unsqueeze(-1)
        picked = self.d_vectors[torch.clamp_min(sid, 0)]
        chosen = torch.where((sid >= 0).unsqueeze(-1), picked, speaker_embedding)
        return F.normalize(chosen).unsqueeze(-1)

    def forward(self, input, input_lengths, scales, *conditioning):
        from TTS.tts.utils.helpers import generate_path, sequence_mask

        given = dict(zip(self.conditioning, conditioning))
        sid, langid = given.get(contract.SID), given.get(contract.LANGID)
        vits = self.vits
        noise_scale, length_scale, noise_scale_w = scales[0], scales[1], scales[2]
        g = self.speaker(sid, given.get(contract.SPEAKER_EMBEDDING))
        lang_emb = vits.emb_l(langid).unsqueeze(-1) if langid is not None else None
        x, m_p, logs_p, x_mask = vits.text_encoder(input, input_lengths, lang_emb=lang_emb)
        g_dp = g if vits.args.condition_dp_on_speaker else None
        if vits.args.use_sdp:
            logw = vits.duration_predictor(x, x_mask, g=g_dp, reverse=True, noise_scale=noise_scale_w,
                                           lang_emb=lang_emb)
        else:
            logw = vits.duration_predictor(x, x_mask, g=g_dp, lang_emb=lang_emb)
        w_ceil = torch.ceil(torch.exp(logw) * x_mask * length_scale)
        y_lengths = torch.clamp_min(torch.sum(w_ceil, [1, 2]), 1).long()
        y_mask = sequence_mask(y_lengths, None).to(x_mask.dtype).unsqueeze(1)  # [B, 1, frames]
        attn_mask = x_mask * y_mask.transpose(1, 2)  # [B, frames, tokens]
        attn = generate_path(w_ceil.squeeze(1), attn_mask.transpose(1, 2))  # [B, tokens, frames]
        m_p = torch.matmul(attn.transpose(1, 2), m_p.transpose(1, 2)).transpose(1, 2)
        logs_p = torch.matmul(attn.transpose(1, 2), logs_p.transpose(1, 2)).transpose(1, 2)
        z_p = m_p + torch.randn_like(m_p) * torch.exp(logs_p) * noise_scale
        z = vits.flow(z_p, y_mask, g=g, reverse=True)
        z, _, _, y_mask = vits.upsampling_z(z, y_lengths=y_lengths, y_mask=y_mask)
        audio = vits.waveform_decoder((z * y_mask)[:, :, : vits.max_inference_len], g=g)  # [B, 1, samples]
        samples_per_frame = audio.shape[2] // y_mask.shape[2]
        lengths = y_mask.sum(dim=(1, 2)).long() * samples_per_frame
        return audio, torch.clamp(lengths, max=audio.shape[2])


def _relative_embeddings_any_length(self, relative_embeddings, length):
    """Branch-free ``_get_relative_embeddings`` (Coqui's picks a branch on ``length`` at trace time).

    The original pads only when ``length > window + 1``; traced with a long dummy input, the
    pad becomes negative for short inputs and onnxruntime fails on one-token input. Padding by
    ``length`` on both sides is always enough, and the slice below selects the same rows.
    """
    window = self.rel_attn_window_size
    padded = F.pad(relative_embeddings, [0, 0, length, length, 0, 0])
    return padded[:, window + 1 : window + 2 * length]


def _band_to_absolute(band, t: int):
    """``[..., T, 2w+1]`` (relative positions -w..w of each row) -> ``[..., T, T]`` with zeros beyond the band:
    padded to ``T + 2w + 1`` columns and read back with rows one element shorter, each row shifts by its
    index (the same skew as Coqui's ``_relative_position_to_absolute_position``, on the band only)."""
    k = band.size(-1)
    w = (k - 1) // 2
    lead = band.shape[:-2]
    flat = F.pad(band, [0, t]).reshape(*lead, t * (t + k))[..., : t * (t + k - 1)]
    return flat.reshape(*lead, t, t + k - 1)[..., w : w + t]


def _absolute_to_band(x, w: int):
    """``[..., T, T]`` -> ``[..., T, 2w+1]``: entry ``r`` of row ``i`` is ``x[i, i + r - w]`` (0 outside)."""
    t = x.size(-1)
    lead = x.shape[:-2]
    flat = F.pad(x, [w, w]).reshape(*lead, t * (t + 2 * w))
    flat = F.pad(flat, [0, t])
    return flat[..., : t * (t + 2 * w + 1)].reshape(*lead, t, t + 2 * w + 1)[..., : 2 * w + 1]


def _attention_banded(self, query, key, value, mask=None):
    """Coqui's ``RelativePositionMultiHeadAttention.attention`` with the relative-position terms computed on the
    band where they can be non-zero.

    Coqui pads the ``2w+1`` relative embeddings with zero rows to ``2T-1`` positions, multiplies them with
    every query (``[T, 2T-1]``) and skews the result to absolute positions (and back for the values):
    O(T^2 d) work per layer for terms that are zero outside ``|i - j| <= w``. Here only the ``2w+1`` rows
    are multiplied and the band is skewed into place: the same products and sums (the zero rows add
    nothing), and the frontend of a 440-token sentence 15-20% faster.
    """
    b, d, t_s, t_t = (*key.size(), query.size(2))
    query = query.view(b, self.num_heads, self.k_channels, t_t).transpose(2, 3)
    key = key.view(b, self.num_heads, self.k_channels, t_s).transpose(2, 3)
    value = value.view(b, self.num_heads, self.k_channels, t_s).transpose(2, 3)
    scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(self.k_channels)
    band = torch.matmul(query, self.emb_rel_k.unsqueeze(0).transpose(-2, -1))  # [b, h, T, 2w+1]
    scores = scores + _band_to_absolute(band, t_s) / math.sqrt(self.k_channels)
    if mask is not None:
        scores = scores.masked_fill(mask == 0, -1e4)
    p_attn = F.softmax(scores, dim=-1)
    output = torch.matmul(p_attn, value)
    weights = _absolute_to_band(p_attn, self.rel_attn_window_size)  # p_attn[i, i + r]
    output = output + torch.matmul(weights, self.emb_rel_v.unsqueeze(0))
    return output.transpose(2, 3).contiguous().view(b, d, t_t), p_attn


def _remove_weight_norm(model) -> None:
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            # Give the module its own class first: removing a parametrization edits the class,
            # which deepcopy shares with the original model (same trick as Coqui's export_onnx).
            cls = type(module)
            module.__class__ = type(cls.__name__, cls.__bases__, dict(vars(cls)))
            parametrize.remove_parametrizations(module, "weight")
        elif hasattr(module, "weight_g") and hasattr(module, "weight_v"):
            torch.nn.utils.remove_weight_norm(module)


def inference_copy(vits):
    """A copy of the model ready to trace: eval, no weight norm, trace-safe attention."""
    from TTS.tts.layers.glow_tts.transformer import RelativePositionMultiHeadAttention

    memo = {id(getattr(vits, name, None)): None for name in ("disc", "onnx_sess")}
    model = copy.deepcopy(vits, memo).cpu().eval()
    _remove_weight_norm(model)
    for module in model.modules():
        if isinstance(module, RelativePositionMultiHeadAttention):
            module._get_relative_embeddings = types.MethodType(_relative_embeddings_any_length, module)
            if (module.rel_attn_window_size is not None and not module.proximal_bias
                    and module.input_length is None):
                module.attention = types.MethodType(_attention_banded, module)
    return model


@contextlib.contextmanager
def _quiet_tracer():
    """The tracer warns about every Python int in Coqui's code; they are expected here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


def export_onnx(vits, path: Path, spec: ExportSpec, d_vectors=None) -> None:
    """Trace ``vits`` to ``path`` (the legacy tracer: the dynamo exporter fails on VITS's spline)."""
    graph = InferenceGraph(inference_copy(vits), d_vectors, spec.input_names[3:]).eval()
    tokens = torch.randint(1, max(2, vits.args.num_chars), (1, spec.dummy_tokens), dtype=torch.long)
    args = [tokens, torch.tensor([spec.dummy_tokens]), torch.tensor([0.667, 1.0, 0.8])]
    if spec.with_speakers:
        args.append(torch.tensor([0]))
    if spec.d_vector_dim:
        args.append(torch.ones(1, spec.d_vector_dim))
    if spec.with_languages:
        args.append(torch.tensor([0]))
    with _quiet_tracer(), torch.no_grad():
        torch.onnx.export(
            graph,
            tuple(args),
            str(path),
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_axes=spec.dynamic_axes,
            opset_version=spec.opset,
            do_constant_folding=True,
            dynamo=False,
        )
