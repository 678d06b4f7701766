"""Quantization-aware fine-tuning of a QDQ plan's vocoder against the voice's own fp32 model, with no dataset.

The teacher makes the data: the fp32 frontend and flow pieces turn built-in and generated sentences into
latents ``z`` (several noise and length scales, seeded), and the fp32 vocoder says what each crop of
``z`` should sound like. The student is the plan's own QDQ vocoder run with onnxruntime's int8 arithmetic
simulated (exporter/quant/fakequant.py): its fp32 weights, activation scales and zero points are trained,
then written back into the same QDQ file (so the runtime needs nothing new).

The loss (``Loss``): multi-resolution STFT distance of the audio (auraloss's spectral convergence + log
magnitude, the log term weighting the quiet parts where int8's hiss is heard) plus, with ``features`` > 0, the
teacher's own intermediate activations at every quantized tensor (normalised mean squared error). The real
voice's checkpoint has no discriminator (Piper ships inference weights only); with ``adversarial`` > 0 one is
learned from scratch beside the student (exporter/quant/adversarial.py: HiFi-GAN's, at a width a CPU trains),
the teacher's audio its "real", and the student is also trained to fool it and to match its feature maps.

Work happens in ``voice_dir/.finetune/``: the latents (``latents-*.npz``, shared by every plan trained there)
and, in ``<plan>/``, a checkpoint every
``checkpoint_every`` steps (``state.pt``, loaded with ``weights_only``); a stopped run resumes from the
last checkpoint and ends where an uninterrupted run ends (each step's crops come from a generator
seeded by the step number).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from exporter.errors import ExportError
from exporter.io import atomic_write_bytes
from exporter.quant import polyphase
from exporter.quant.budget import Budget
from exporter.quant.build import build
from exporter.quant.judge import Judge
from exporter.quant.plans import FINETUNED, preset
from exporter.quant.variants import add_pieces, make_default, record
from exporter.split import split
from runtime import chunking, contract, cpu, files
from runtime.config import FP32
from runtime.voice import SynthesisConfig, Voice

# Sentences the teacher speaks to make training latents. They share nothing with the calibration
# sentences (exporter/quant/calibration.py), the judged ones (budget.JUDGE_SENTENCES) or the benchmark's.
TRAINING_SENTENCES = (
    "A small boat drifted slowly toward the harbour lights.",
    "My grandmother kept every letter she ever received in a wooden box.",
    "Could the meeting be moved to Wednesday afternoon instead?",
    "The engineer checked the pressure gauge twice before opening the valve.",
    "Seven purple balloons floated above the crowded market square.",
    "Nobody expected the quiet student to win the chess tournament.",
    "Put the kettle on, and I will find the biscuits.",
    "Heavy snow closed the mountain pass for nearly a week.",
    "Which of these three paintings do you like best, and why?",
    "The recipe calls for two eggs, a cup of flour and a pinch of salt.",
    "Listen carefully: the next announcement concerns all passengers.",
    "Bright autumn leaves covered the path through the old forest.",
    "He whispered the password, but the guard did not hear him.",
    "Our flight was delayed by fog, so we missed the connection.",
    "Thank you so much for the lovely flowers!",
    "The museum opens at nine and closes at half past five.",
    "Jazz musicians gathered in the basement club every Friday night.",
    "If the battery runs low, the lamp will start to blink.",
    "She painted the fence a pale shade of green.",
    "Are you absolutely certain that the door was locked?",
    "A thousand tiny stars shimmered over the silent desert.",
    "The children built a sandcastle with towers, bridges and a moat.",
    "Please remember to water the tomatoes while I am away.",
    "Breaking news: the river has risen above its banks.",
)
HELD_OUT_BATCHES = 4
NOISE_SCALES = (0.333, 0.667, 0.8)
LENGTH_SCALES = (0.85, 1.0, 1.2)


@dataclass(frozen=True)
class FinetuneConfig:
    """The training; the defaults are what measured best on the real voice (docs/int8.md, "Fine-tuned int8"): 3000
    steps take ~25 min on 2 cores (0.50 s a step on a 2-core Xeon, 2026-12-07), the whole preset about 30."""

    steps: int = 3000
    batch: int = 4
    crop_frames: int = 32  # per crop: 32 frames = 8192 samples at hop 256 (0.37 s at 22.05 kHz)
    lr_weights: float = 1e-4  # 3e-4 trained worse (loss 0.61 against 0.39 at step 800); cosine decay to 0
    lr_scales: float = 3e-3  # on log(scale): a relative step
    lr_zero_points: float = 0.05  # in integer steps
    features: float = 1.0  # weight of the teacher's intermediate activations in the loss; 0: audio only
    generated: int = 24  # generated sentences (words of the built-in ones, shuffled) beside the built-in ones
    seed: int = 0
    checkpoint_every: int = 25
    # The adversarial term (exporter/quant/adversarial.py): its weight against the spectral and feature losses
    # (0: none), the discriminator's width (1.0: HiFi-GAN's published one), its learning rate, and the steps it
    # trains alone before the student hears from it (it starts from nothing; the student starts close to fp32).
    adversarial: float = 0.0
    discriminator_width: float = 0.0625  # 1/16: 0.47 M parameters, 0.13 s a step more on 2 cores
    lr_discriminator: float = 2e-4
    discriminator_warmup: int = 300

    def key(self, plan: str, voice: str) -> str:
        """A run's folder name: the plan, the training, and the voice (``voice_key``): a re-exported voice never
        resumes a checkpoint of the old one."""
        fields = {k: v for k, v in asdict(self).items() if k != "checkpoint_every"}
        return hashlib.sha256(json.dumps([plan, fields, voice], sort_keys=True).encode()).hexdigest()[:12]

    def data_key(self, voice: str) -> str:
        """What the teacher's latents depend on (every plan of a voice trains on the same ones)."""
        fields = [self.seed, self.generated, self.crop_frames, TRAINING_SENTENCES, NOISE_SCALES, LENGTH_SCALES, voice]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:12]


def voice_key(voice_dir: Path) -> str:
    """The fp32 model's bytes (the teacher)."""
    return files.sha256(Path(voice_dir) / contract.MODEL_FILE)[:16]


def training_texts(cfg: FinetuneConfig) -> list[str]:
    """The built-in sentences, and ``cfg.generated`` more made of their words in a seeded random order."""
    rng = np.random.default_rng(cfg.seed)
    words = " ".join(TRAINING_SENTENCES).replace(",", "").replace(".", "").replace("?", "").replace("!", "") \
        .replace(":", "").split()
    generated = []
    for _ in range(cfg.generated):
        n = int(rng.integers(4, 14))
        sentence = " ".join(words[int(i)] for i in rng.integers(0, len(words), n))
        generated.append(sentence[0].upper() + sentence[1:].lower() + ("?" if rng.random() < 0.2 else "."))
    return list(TRAINING_SENTENCES) + generated


def teacher_latents(voice_dir: Path, cfg: FinetuneConfig) -> list[np.ndarray]:
    """``z`` of every training text at a seeded draw of (noise scale, length scale), from fp32's pieces."""
    voice = Voice.load(voice_dir, variant=FP32)
    if voice.pieces is None:
        raise ExportError(f"{voice_dir}: fine-tuning needs the voice's streaming pieces (they cut the vocoder): "
                          f"run `python -m exporter split {voice_dir}`")
    rng = np.random.default_rng(cfg.seed)
    out = []
    for text in training_texts(cfg):
        ids = voice.text_to_ids(text)
        for _ in range(2):
            noise, length = float(rng.choice(NOISE_SCALES)), float(rng.choice(LENGTH_SCALES))
            syn = SynthesisConfig(noise_scale=noise, length_scale=length)
            encoded = voice.pieces.encode(voice.feeds(ids, syn), rng)
            latents = voice.pieces.latents(encoded, noise, rng)
            frames = latents.shape[2]
            if frames >= cfg.crop_frames:
                out.append(voice.pieces.flow_frames(latents, 0, frames))
    return out


class Loss:
    """Multi-resolution STFT distance of the audio (auraloss's ``STFTLoss`` terms at each resolution: spectral
    convergence over the batch, and log magnitude with each crop pair divided by the teacher crop's STFT peak,
    so that auraloss's magnitude floor ``eps`` lies 60 dB under that peak, as the budget's log-mel and MCD floors
    do, exporter/quality.py: below it the int8 noise floor is neither heard nor measured, and a loss that chased
    it would spend the steps there), plus ``features`` times the normalised squared error of the quantized tensors
    against the teacher's."""

    RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))
    DYNAMIC_RANGE = 1e-3  # magnitude: 60 dB

    def __init__(self, features: float):
        self.features = features
        self.terms = {r: self._terms(*r) for r in self.RESOLUTIONS}

    def _terms(self, fft: int, hop: int):
        import auraloss  # with torch: only for fine-tuning

        return (auraloss.freq.STFTLoss(fft, hop, fft, w_sc=1.0, w_log_mag=0.0),
                auraloss.freq.STFTLoss(fft, hop, fft, w_sc=0.0, w_log_mag=1.0, eps=self.DYNAMIC_RANGE ** 2))

    def __call__(self, student, teacher, s_feats: dict, t_feats: dict) -> tuple:
        import torch

        audio = 0.0
        s, t = student.reshape(student.shape[0], 1, -1), teacher.reshape(teacher.shape[0], 1, -1)
        resolutions = [r for r in self.RESOLUTIONS if r[0] <= s.shape[2]]
        terms = [self.terms[r] for r in resolutions] or [self._terms(s.shape[2] // 2, s.shape[2] // 8)]
        for convergence, log_magnitude in terms:
            with torch.no_grad():
                window = torch.hann_window(log_magnitude.win_length, device=t.device)
                peak = torch.stft(t[:, 0], log_magnitude.fft_size, log_magnitude.hop_size, window=window,
                                  return_complex=True).abs().amax(dim=(1, 2)).clamp_min(1e-8).reshape(-1, 1, 1)
            audio = audio + convergence(s, t) + log_magnitude(s / peak, t / peak)
        audio = audio / len(terms)
        feats = torch.zeros((), device=s.device)
        if self.features and t_feats:
            feats = sum(((s_feats[k] - v) ** 2).mean() / (v ** 2).mean().clamp_min(1e-12)
                        for k, v in t_feats.items()) / len(t_feats)
        return audio + self.features * feats, float(audio.detach()), float(feats.detach())


def finetune(voice_dir: Path, qdq_model: Path, plan: str, cfg: FinetuneConfig | None = None, *,
             report=print, stop_after: int | None = None, work: Path | None = None) -> dict:
    """Train the int8 vocoder of ``qdq_model`` (a file ``build`` wrote for ``plan``) and write it back in place.
    ``stop_after``: stop (as an interruption would) after that many steps of this call, checkpoint kept.
    Returns what was done: steps, losses at the start and the end, seconds."""
    # torch, and the simulation built on it, are heavy and only for fine-tuning: quantize's other presets run without
    import torch

    from exporter.quant.adversarial import Discriminator, discriminator_loss, generator_loss
    from exporter.quant.fakequant import FakeQuantGraph

    cfg = cfg or FinetuneConfig()
    voice_dir = Path(voice_dir)
    teacher = voice_key(voice_dir)
    work = Path(work) if work else voice_dir / ".finetune" / cfg.key(plan, teacher)
    work.mkdir(parents=True, exist_ok=True)
    architecture = Voice.load(voice_dir, variant=FP32).config.streaming.get("architecture")

    data_path = work.parent / f"latents-{cfg.data_key(teacher)}.npz"  # shared by the plans trained beside this one
    if not data_path.is_file():
        report(f"fine-tune: the fp32 teacher speaks {len(training_texts(cfg))} sentences at noise scales "
               f"{NOISE_SCALES} and length scales {LENGTH_SCALES}")
        latents = teacher_latents(voice_dir, cfg)
        tmp = work / "latents.tmp.npz"
        np.savez(tmp, *latents)
        os.replace(tmp, data_path)
    with np.load(data_path) as npz:
        latents = [npz[k] for k in sorted(npz.files, key=lambda k: int(k.split("_")[1]))]

    model = onnx.load(str(qdq_model))
    vocoder = split(model, architecture)[2]
    fp32_model = onnx.load(str(voice_dir / contract.MODEL_FILE))
    polyphase.rewrite(fp32_model, lambda node: True)
    fp32 = {t.name: onnx.numpy_helper.to_array(t) for t in fp32_model.graph.initializer}
    device = "cuda" if torch.cuda.is_available() else "cpu"  # never required: 2 CPU cores take ~25 min
    graph = FakeQuantGraph(vocoder, fp32).to_device(device)
    recorded = {n.input[0] for n in vocoder.graph.node if n.op_type == "QuantizeLinear"
                and n.input[0] not in graph.constants}
    groups = [{"params": list(graph.weights.values()), "lr": cfg.lr_weights},
              {"params": list(graph.act_log_scale.values()), "lr": cfg.lr_scales},
              {"params": list(graph.act_zero_point.values()), "lr": cfg.lr_zero_points}]
    optimizer = torch.optim.Adam(groups)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps)))
    loss_fn = Loss(cfg.features)
    critic = critic_optimizer = None
    critic_losses: list[float] = []
    if cfg.adversarial:
        torch.manual_seed(cfg.seed)  # the same discriminator on every run (and on resuming)
        critic = Discriminator(cfg.discriminator_width).to(device)
        critic_optimizer = torch.optim.Adam(critic.parameters(), lr=cfg.lr_discriminator, betas=(0.8, 0.99))
    crops = len(chunking.crop_names(chunking.split_chain(chunking.layers(architecture))[1]))

    state_path = work / "state.pt"
    step, history = 0, []
    if state_path.is_file():
        state = torch.load(state_path, weights_only=True, map_location=device)
        graph.load_state_dict(state["graph"])
        optimizer.load_state_dict(state["optimizer"])
        if critic is not None:
            critic.load_state_dict(state["critic"])
            critic_optimizer.load_state_dict(state["critic_optimizer"])
        schedule.load_state_dict(state["schedule"])
        step, history = int(state["step"]), [tuple(h) for h in state["history"].tolist()]
        report(f"fine-tune: resuming at step {step} of {cfg.steps} ({state_path})")

    def batch(k: int):
        rng = np.random.default_rng([cfg.seed, k])
        picks = []
        for _ in range(cfg.batch):
            z = latents[int(rng.integers(len(latents)))]
            start = int(rng.integers(0, z.shape[2] - cfg.crop_frames + 1))
            picks.append(z[0, :, start:start + cfg.crop_frames])
        return {contract.Z: torch.from_numpy(np.stack(picks)).to(device),
                contract.CROP_STARTS: torch.zeros(crops, dtype=torch.int64, device=device),
                contract.CROP_ENDS: torch.full((crops,), 1 << 40, dtype=torch.int64, device=device)}

    def save():
        buffer = io.BytesIO()
        torch.save({"step": step, "before": before, "graph": graph.state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    **({"critic": critic.state_dict(), "critic_optimizer": critic_optimizer.state_dict()}
                       if critic is not None else {}),
                    "history": torch.tensor(history, dtype=torch.float64).reshape(-1, 3)},
                   buffer)
        atomic_write_bytes(state_path, buffer.getvalue())

    def held_out() -> float:
        """The loss on fixed crops no training step draws (their generator's seeds are past any step)."""
        total = 0.0
        with torch.no_grad():
            for j in range(HELD_OUT_BATCHES):
                feeds = batch(1 << 30 | j)
                target, t_feats = graph(feeds, quantized=False, teacher=True, record=recorded)
                out, s_feats = graph(feeds, record=recorded)
                total += loss_fn(out, target, s_feats, t_feats)[0].item()
        return total / HELD_OUT_BATCHES

    if step == 0 and not state_path.is_file():
        before = held_out()
    else:
        before = float(state["before"])
    start_time, first = time.perf_counter(), step
    progress_every = max(1, cfg.steps // 20)  # twenty lines of progress, whatever the length
    while step < cfg.steps and (stop_after is None or step - first < stop_after):
        feeds = batch(step)
        with torch.no_grad():
            target, t_feats = graph(feeds, quantized=False, teacher=True, record=recorded if cfg.features else None)
        out, s_feats = graph(feeds, record=recorded if cfg.features else None)
        loss, audio, feats = loss_fn(out, target, s_feats, t_feats)
        if critic is not None:
            # the discriminator learns to tell the teacher's audio from the student's; then, past its warm-up, the
            # student is pushed to fool it and to match its feature maps (HiFi-GAN's weights: 1 and 2)
            critic_loss = discriminator_loss(critic(target), critic(out.detach()))
            critic_optimizer.zero_grad()
            critic_loss.backward()
            critic_optimizer.step()
            critic_losses.append(float(critic_loss.detach()))
            if step >= cfg.discriminator_warmup:
                with torch.no_grad():
                    real = critic(target)
                fooled, matching = generator_loss(real, critic(out))
                loss = loss + cfg.adversarial * (fooled + 2 * matching)
        if not torch.isfinite(loss):
            raise ExportError(f"fine-tuning diverged at step {step} (loss {float(loss)}): lower the learning rates")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        step += 1
        history.append((loss.item(), audio, feats))
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save()
        if step % progress_every == 0 or step == cfg.steps:
            rate = (time.perf_counter() - start_time) / max(step - first, 1)
            recent = np.asarray(history[-progress_every:])
            critic_note = (f", discriminator {np.mean(critic_losses[-progress_every:]):.3f}" if critic_losses else "")
            report(f"  step {step}/{cfg.steps}: loss {recent[:, 0].mean():.4f} (audio {recent[:, 1].mean():.4f}, "
                   f"features {recent[:, 2].mean():.4f}{critic_note}); {rate:.2f} s a step, "
                   f"{rate * (cfg.steps - step) / 60:.1f} min left")
    if step < cfg.steps:
        save()
        return {"steps": step, "finished": False}
    after = held_out()
    changed = graph.write_back(model)
    atomic_write_bytes(Path(qdq_model), model.SerializeToString())
    return {"steps": step, "finished": True, "initializers": changed,
            "held_out_loss_before": round(before, 4), "held_out_loss_after": round(after, 4),
            "seconds": round(time.perf_counter() - start_time, 1), "config": asdict(cfg), "work": str(work)}


def finetune_voice(voice_dir: Path, *, target: str | None = None, budget=None, cfg: FinetuneConfig | None = None,
                   report=print, stop_after: int | None = None) -> Path | None:
    """``quantize --preset finetuned``: build the plan, fine-tune its vocoder (resuming a stopped run), judge the
    result with the same budget as ``auto``, and write ``model.finetuned.onnx`` only if it is inside it.
    Returns None when ``stop_after`` stopped the training first (the checkpoint stays for the next run)."""
    voice_dir, cfg, budget = Path(voice_dir), cfg or FinetuneConfig(), budget or Budget()
    plan = preset(FINETUNED, target)
    work = voice_dir / ".finetune" / cfg.key(plan.describe(), voice_key(voice_dir))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    trained = work / "trained.onnx"
    if not trained.is_file():
        report(f"finetuned: building {plan.describe()}")
        staged = work / "untrained.tmp.onnx"
        build(voice_dir, plan, staged, work / "ranges.json")
        os.replace(staged, work / "untrained.onnx")
        shutil.copyfile(work / "untrained.onnx", trained)
    done = finetune(voice_dir, trained, plan.describe(), cfg, report=report, stop_after=stop_after,
                    work=work)
    if not done["finished"]:
        report(f"finetuned: stopped at step {done['steps']} of {cfg.steps}; run the same command to go on")
        return None
    report(f"finetuned: {done['steps']} steps in {done['seconds'] / 60:.1f} min, loss on held-out crops "
           f"{done['held_out_loss_before']} -> {done['held_out_loss_after']}; judging against fp32")
    judge = Judge(voice_dir, budget, report=report)  # timed on 2 threads, as the device runs it
    row = judge.trial(trained, plan, "final")
    measured = row.recorded()
    measured.update(fp32_heard=judge.reference, timed_on=cpu.describe(),
                    seconds=round(time.perf_counter() - start, 1), finetune=done)
    if not row.within_budget:
        rejected = work / "model.finetuned.rejected.onnx"
        os.replace(trained, rejected)
        (work / "rejected.json").write_text(json.dumps(measured, indent=2) + "\n", encoding="utf-8")
        raise ExportError(f"the fine-tuned plan is outside the budget, not written: {row.verdict}. "
                          f"It is kept for listening at {rejected} (its measurements beside it); more steps "
                          f"(--finetune-steps) or another loss may get further")
    dst = voice_dir / f"model.{FINETUNED}.onnx"
    os.replace(trained, dst)
    record(voice_dir, dst.name, {"config": dataclasses.asdict(plan), "measured": measured,
                                  "budget": dataclasses.asdict(budget)})
    shutil.rmtree(work.parent, ignore_errors=True)  # .finetune: the latents, and any other plan's stopped run
    add_pieces(voice_dir, dst.name)
    make_default(voice_dir, dst.name, plan, measured["timed_on"])
    return dst
