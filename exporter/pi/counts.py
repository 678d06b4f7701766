"""What a Raspberry Pi's core executes to speak a sentence, counted under emulation.

A model runs in onnxruntime inside QEMU user mode (Debian's dynamic ``qemu-aarch64``, which loads TCG plugins),
on the arm-check's cached aarch64 root filesystem (``emulation.ensure_rootfs``), as a Cortex-A72 (Pi 4) or A76
(Pi 5). The plugin ``insnclass.c`` records every translated block's instructions by class
and how often each block ran, by the first thread and by the others (onnxruntime's pool), between markers the
guest sends after each sentence. Counts are exact and repeat on a rerun at one thread; at several threads the
split between threads varies, which is why ``cost`` takes only which blocks the pool runs from such a run.

The counts are no time: ``exporter.pi.cost`` turns them into an estimate with a model of each core.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exporter.pi.emulation import CPUS, VENV_AT, CannotEmulate, Recipe, cache_dir, ensure_rootfs, prepare_host
from runtime import files

# The plugin's classes, in its order (enum in insnclass.c). "_q": a 128-bit vector operation, "_d": a 64-bit one;
# "mull": widening multiplies (SMULL/UMLAL...), "padal": pairwise add-accumulate long (SADALP/UADALP).
CLASSES = ("branch", "int", "imul", "load", "store", "load_v", "store_v", "fp_scalar", "fp16_scalar",
           "fp32_d", "fp32_q", "fp16_d", "fp16_q", "dot_d", "dot_q", "mul_d", "mul_q", "mull", "padal_d", "padal_q",
           "simd_d", "simd_q", "system")
PLUGIN_SOURCE = Path(__file__).with_name("insnclass.c")
MARKER_MAGIC = 0x7E5E0000  # insnclass.c: lseek(-1, MARKER_MAGIC + n, 0) closes segment n
INSTALL_QEMU = "apt-get install qemu-user gcc"  # Debian's dynamic qemu-aarch64 (7.2 in bookworm) loads plugins
# QEMU_CPU names of the Pis whose cores exporter.pi.cost models
COUNTED_CPUS = ("cortex-a72", "cortex-a76")

# Runs in the emulated Python: onnxruntime and numpy only. One warm-up run of the largest feeds (the longest
# sentence; what runs before marker 0 also holds the imports and the session's creation), then each feed once, a
# marker after each. The warm-up makes every allocation the sentences need: a sentence that grew the arena counted
# a few thousand instructions more or less from run to run (the allocator's paths follow the addresses mmap gives).
# With "keep" (run_on, no counting) it also leaves what the core computed in that folder: outputs.npz (the audio
# of each run, flat, trimmed to output_lengths where the graph gives it), optimized.onnx (the graph onnxruntime
# ran: a Conv left between its Casts ran fp16 kernels) and profile.json (each node's kernel).
_GUEST = r"""
import json, os, sys
import numpy as np, onnxruntime as ort

def mark(n):
    try:
        os.lseek(-1, MAGIC + n, 0)
    except OSError:
        pass

spec = json.load(open(sys.argv[1]))
keep = spec["keep"]
# the graph draws its noise (times a zero scale here) from onnxruntime's generator: a fixed seed makes the libm
# calls on it, and so the count, repeat exactly
ort.set_seed(0)
opts = ort.SessionOptions()
opts.intra_op_num_threads = spec["threads"]
opts.inter_op_num_threads = 1
opts.enable_mem_pattern = False  # as runtime.voice does: every sentence has new shapes
# waiting threads sleep instead of spinning: a spinning thread executes a loop no Pi would count as work
opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
if keep:
    opts.optimized_model_filepath = os.path.join(keep, "optimized.onnx")
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(keep, "profile")
sess = ort.InferenceSession(spec["model"], opts, providers=["CPUExecutionProvider"])
inputs = {i.name for i in sess.get_inputs()}
outputs = [o.name for o in sess.get_outputs()]
feeds = [{k: v for k, v in np.load(p).items() if k in inputs} for p in spec["feeds"]]
sess.run(None, max(feeds, key=lambda f: sum(v.size for v in f.values())))
mark(0)
samples, kept = [], {}
for i, f in enumerate(feeds):
    out = sess.run(None, f)
    mark(i + 1)
    samples.append(int(out[0].shape[-1]))
    if keep:
        audio = out[0].reshape(-1)
        if "output_lengths" in outputs:
            audio = audio[: int(out[outputs.index("output_lengths")].reshape(-1)[0])]
        kept[f"out{i}"] = audio
if keep:
    np.savez(os.path.join(keep, "outputs.npz"), **kept)
    os.replace(sess.end_profiling(), os.path.join(keep, "profile.json"))
json.dump({"samples": samples, "onnxruntime": ort.__version__}, open(spec["result"], "w"))
""".replace("MAGIC", str(MARKER_MAGIC))


@dataclass
class Counts:
    """One model on one emulated core at some thread count: each translated block's instructions by class, and
    how often each sentence ran it (by the first thread, by the others)."""

    blocks: np.ndarray  # int64 [blocks, len(CLASSES)]
    execs: np.ndarray  # int64 [sentences, blocks, 2]: executions by the main thread, by the pool's threads
    vaddrs: np.ndarray  # uint64 [blocks]: where each block is (which code the pool runs, across runs)
    samples: list[int]  # audio samples each sentence made
    meta: dict = field(default_factory=dict)  # model hash, cpu, threads, onnxruntime, seconds it took

    def instructions(self, sentence: int | None = None) -> np.ndarray:
        """Executed instructions by class [len(CLASSES)], of one sentence or of all."""
        execs = self.execs if sentence is None else self.execs[sentence:sentence + 1]
        return execs.sum(axis=(0, 2)) @ self.blocks

    def by_class(self, sentence: int | None = None) -> dict[str, int]:
        return dict(zip(CLASSES, (int(x) for x in self.instructions(sentence)), strict=True))

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + f".partial-{os.getpid()}.npz")
        np.savez_compressed(tmp, blocks=self.blocks, execs=self.execs, vaddrs=self.vaddrs,
                            samples=np.asarray(self.samples), meta=json.dumps(self.meta))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Counts:
        with np.load(path) as z:
            return cls(z["blocks"], z["execs"], z["vaddrs"], [int(s) for s in z["samples"]],
                       json.loads(str(z["meta"])))


def parse(text: str, sentences: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The plugin's file -> (blocks [B, classes], execs [sentences, B, 2], vaddrs [B]): what ran before marker
    n >= 1 is sentence n; before marker 0 (imports, load, warm-up) and after the last marker is left out."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("insnclass 1 classes"):
        raise RuntimeError("the counts file does not come from insnclass.c")
    if int(lines[0].split()[-1]) != len(CLASSES):
        raise RuntimeError(f"insnclass.c counts {lines[0].split()[-1]} classes, counts.py knows {len(CLASSES)}")
    if not lines[-1].startswith("end"):
        raise RuntimeError("the counts file ends early: the emulated program did not exit normally")
    blocks, vaddrs = [], []
    rows = []  # (sentence, block, main, others)
    sentence = None
    for line in lines[1:-1]:
        kind, *f = line.split()
        if kind == "seg":  # what follows ran before marker n: n = 0 closes the warm-up, n >= 1 sentence n
            sentence = int(f[2]) - 1 if f[1] == "mark" and int(f[2]) >= 1 else None
        elif kind == "tb":
            if int(f[0]) != len(blocks):
                raise RuntimeError(f"the counts file numbers its blocks out of order at {line!r}")
            vaddrs.append(int(f[1], 16))
            blocks.append([int(x) for x in f[3:]])
        elif kind == "x" and sentence is not None and sentence < sentences:
            rows.append((sentence, int(f[0]), int(f[1]), int(f[2])))
    execs = np.zeros((sentences, len(blocks), 2), dtype=np.int64)
    for sentence, block, main, others in rows:
        execs[sentence, block] = (main, others)
    return np.asarray(blocks, dtype=np.int64).reshape(-1, len(CLASSES)), execs, np.asarray(vaddrs, dtype=np.uint64)


# A private mount namespace shows the emulated program a Pi's /proc/cpuinfo (onnxruntime's cpuinfo reads it;
# the host's x86 one crashes it) without touching the cached root filesystem; -L makes the root
# filesystem's files win over the host's.
# PYTHONHASHSEED and no address randomization (setarch -R): what Python and the allocator do depends on
# them, and the count with it. No thread but the ones counted: onnxruntime's telemetry thread (on by default
# since 1.29) and OpenBLAS's (numpy's) ran beside the main thread, and under load on the host they moved
# the count (by 1e-5: lock contention) and added to what looked like the pool's share.
_LAUNCH = ('mount --bind "$VE_PROC" "$VE_ROOT/proc" && exec setarch -R env -i PYTHONPATH="$VE_SITE" '
           'PYTHONPYCACHEPREFIX="$VE_PYCACHE" PYTHONDONTWRITEBYTECODE=1 PYTHONHASHSEED=0 ORT_DISABLE_TELEMETRY=1 '
           'OPENBLAS_NUM_THREADS=1 LANG=C.UTF-8 LD_LIBRARY_PATH="$VE_LIBS" '
           '"$VE_QEMU" -L "$VE_ROOT" -cpu "$VE_CPU" $VE_PLUGIN "$VE_PYTHON" "$VE_GUEST" "$VE_SPEC"')


def qemu() -> str:
    """Debian's dynamic qemu-aarch64 (package qemu-user), which loads TCG plugins; CannotEmulate without it."""
    found = shutil.which("qemu-aarch64")
    if found is None:
        raise CannotEmulate(f"no qemu-aarch64 that loads TCG plugins (the static one does not): {INSTALL_QEMU}")
    helptext = subprocess.run([found, "-h"], capture_output=True, text=True, check=False).stdout
    if "-plugin" not in helptext:
        raise CannotEmulate(f"{found} was built without TCG plugin support: {INSTALL_QEMU} (Debian's is built with)")
    return found


def plugin() -> Path:
    """insnclass.c built with the host's C compiler, cached by its source."""
    source = PLUGIN_SOURCE.read_bytes()
    built = cache_dir() / "plugins" / f"insnclass-{hashlib.sha256(source).hexdigest()[:12]}.so"
    if built.is_file():
        return built
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        raise CannotEmulate(f"no C compiler to build the counting plugin: {INSTALL_QEMU}")
    built.parent.mkdir(parents=True, exist_ok=True)
    tmp = built.with_name(built.name + f".partial-{os.getpid()}")
    proc = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-o", str(tmp), str(PLUGIN_SOURCE),
                           "-lpthread"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{cc} could not build {PLUGIN_SOURCE}:\n{proc.stderr[-2000:]}")
    os.replace(tmp, built)
    return built


def _feeds_hash(feeds: list[dict[str, np.ndarray]]) -> str:
    h = hashlib.sha256()
    for f in feeds:
        for name in sorted(f):
            h.update(name.encode() + str(f[name].dtype).encode() + str(f[name].shape).encode() + f[name].tobytes())
    return h.hexdigest()


def count(model: Path, feeds: list[dict[str, np.ndarray]], *, cpu: str, threads: int = 1,
          recipe: Recipe | None = None, disas: Path | None = None, cache: bool = True, run: int = 0,
          log: Callable[[str], None] = print, timeout: float = 3600) -> Counts:
    """Run ``model`` on each feed dict (the graph's inputs of one sentence) on the emulated ``cpu``: what each
    sentence executed. Cached by the model's hash, the feeds, the core, the threads, the root filesystem's
    recipe and the plugin (``cache=False``: count again). ``recipe``: another onnxruntime than the host's (its
    root filesystem is built once); ``disas``: also write each distinct instruction executed, with its class
    and QEMU's disassembly (how the decoder is checked); ``run``: the n-th count of the same thing (several
    threads split the work differently on every run: repeats are cached apart)."""
    if cpu not in COUNTED_CPUS:
        raise ValueError(f"unknown core {cpu!r}: choose from {', '.join(COUNTED_CPUS)}")
    recipe = recipe or Recipe.for_host()
    model_hash = files.sha256(model)
    how = hashlib.sha256(PLUGIN_SOURCE.read_bytes() + (_GUEST + _LAUNCH).encode()).hexdigest()
    key = hashlib.sha256(json.dumps([model_hash, _feeds_hash(feeds), cpu, threads, recipe.key(), run, how])
                         .encode()).hexdigest()[:20]
    cached = cache_dir() / "counts" / f"{model.stem}-{cpu}-{threads}t{run or ''}-{key}.npz"
    if cache and cached.is_file() and disas is None:
        return Counts.load(cached)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vits-edge-count-") as tmp:
        out = Path(tmp) / "counts.txt"
        options = (f",out={out}" + (",threads=split" if threads > 1 else "")
                   + (f",disas={disas.resolve()}" if disas else ""))
        result = _emulate(model, feeds, cpu=cpu, threads=threads, recipe=recipe, work=Path(tmp),
                          plugin_options=options, log=log, timeout=timeout)
        blocks, execs, vaddrs = parse(out.read_text(), len(feeds))
    meta = {"model": model.name, "sha256": model_hash, "cpu": cpu, "threads": threads,
            "onnxruntime": result["onnxruntime"], "seconds": round(time.monotonic() - start, 1),
            "counted": time.strftime("%Y-%m-%d %H:%M:%S")}
    counts = Counts(blocks, execs, vaddrs, result["samples"], meta)
    cached.parent.mkdir(parents=True, exist_ok=True)
    counts.save(cached)
    return counts


@dataclass
class Emulated:
    """What a model gave on an emulated core: the first output of each run, and the graph onnxruntime ran."""

    outputs: list[np.ndarray]
    optimized: bytes  # the optimized graph onnxruntime saved (an ONNX file)
    profile: list[dict]  # onnxruntime's profile events (emulated time: where the work is, not how long it takes)
    onnxruntime: str


def run_on(model: Path, feeds: list[dict[str, np.ndarray]], *, cpu: str, threads: int = 1,
           recipe: Recipe | None = None, log: Callable[[str], None] = print, timeout: float = 3600) -> Emulated:
    """Run ``model`` on each feed dict on the emulated ``cpu`` (no counting): its outputs as that core computes
    them (a kernel that exists only for some cores, such as fp16 arithmetic, gives that core's numbers), and the
    graph onnxruntime optimized for it."""
    if cpu not in CPUS:
        raise ValueError(f"unknown core {cpu!r}: choose from {', '.join(CPUS)}")
    with tempfile.TemporaryDirectory(prefix="vits-edge-run-") as tmp:
        work = Path(tmp)
        result = _emulate(model, feeds, cpu=cpu, threads=threads, recipe=recipe or Recipe.for_host(), work=work,
                          keep=True, log=log, timeout=timeout)
        with np.load(work / "outputs.npz") as z:
            outputs = [z[f"out{i}"] for i in range(len(feeds))]
        return Emulated(outputs, (work / "optimized.onnx").read_bytes(),
                        json.loads((work / "profile.json").read_text()), result["onnxruntime"])


def _emulate(model: Path, feeds: list[dict[str, np.ndarray]], *, cpu: str, threads: int, recipe: Recipe,
             work: Path, plugin_options: str | None = None, keep: bool = False, log: Callable[[str], None],
             timeout: float) -> dict:
    """The guest run on ``feeds`` under Debian's dynamic qemu-aarch64 as ``cpu`` (with the counting plugin when
    ``plugin_options`` is given; ``keep``: what the core computed is left in ``work``): the guest's result
    (samples, onnxruntime version)."""
    built = (cache_dir() / f"rootfs-{recipe.key()}" / "recipe.json").is_file()
    prepare_host(counting=True, need_mmdebstrap=not built, log=log)
    root = ensure_rootfs(recipe, log=log)
    binary = qemu()
    paths = []
    for i, f in enumerate(feeds):
        paths.append(str(work / f"feeds{i}.npz"))
        np.savez(paths[-1], **f)
    spec = {"model": str(Path(model).resolve()), "feeds": paths, "threads": threads,
            "result": str(work / "result.json"), "keep": str(work) if keep else None}
    (work / "spec.json").write_text(json.dumps(spec))
    (work / "guest.py").write_text(_GUEST)
    proc_dir = work / "proc"
    proc_dir.mkdir()
    (proc_dir / "cpuinfo").write_text(CPUS[cpu].cpuinfo(os.cpu_count() or 1))
    site = next((root / VENV_AT.lstrip("/") / "lib").glob("python3*/site-packages"))
    python = root / "usr" / "bin" / site.parent.name
    unshare = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        unshare.insert(1, "--map-root-user")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "VE_PROC": str(proc_dir), "VE_ROOT": str(root),
           "VE_SITE": str(site), "VE_QEMU": binary, "VE_CPU": cpu,
           # unquoted in the script: empty when not counting (paths here have no spaces: temporary folders)
           "VE_PLUGIN": f"-plugin {plugin()}{plugin_options}" if plugin_options is not None else "",
           # Debian's numpy finds its BLAS through /etc/alternatives: absolute links, which -L does not follow
           "VE_LIBS": ":".join(str(root / "usr/lib/aarch64-linux-gnu" / d) for d in ("blas", "lapack")),
           "VE_PYTHON": str(python), "VE_PYCACHE": str(work / "pycache"), "VE_GUEST": str(work / "guest.py"),
           "VE_SPEC": str(work / "spec.json")}
    proc = subprocess.run([*unshare, "sh", "-c", _LAUNCH], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0 or not (work / "result.json").is_file():
        raise RuntimeError(f"running {Path(model).name} on an emulated {cpu} failed (exit {proc.returncode}):\n"
                           f"{(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads((work / "result.json").read_text())
