"""Run aarch64 code on this x86 machine: QEMU user-mode emulation through binfmt_misc, in a cached
Debian bookworm root filesystem (the base of Raspberry Pi OS 64-bit).

Emulation proves that the code and the models run, and what they compute, on the Pi's instruction
set; never how fast (it is 20-80x slower than native). It can count what the Pi's core executes
(``exporter.pi.counts``): ``make arm-check`` (tests/arm/check.py) and the Pi estimates both run here.

* ``prepare_host`` installs what is missing (as root: qemu-user-static, binfmt-support, mmdebstrap),
  mounts binfmt_misc and enables the ``qemu-aarch64`` entry; ``diagnose`` says what still stands in
  the way. Anything that cannot be fixed raises ``CannotEmulate`` with the reason: callers skip,
  loudly, instead of passing.
* ``ensure_rootfs`` builds the root filesystem once per ``Recipe`` (Debian suite, packages, Python,
  onnxruntime and numpy versions) under ``~/.cache/vits-edge/arm/rootfs-KEY``: built in a temporary
  folder and renamed when complete, so an interrupted build never leaves half a cache.
* ``Machine`` runs a command in a throwaway copy of that root filesystem (an overlay, so the cached
  base stays pristine) with ``QEMU_CPU`` set, the host's /sys, a Raspberry Pi's ``/proc/cpuinfo``
  and one host folder shared in.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

RECIPE_STEPS = 1  # bump when the build steps below change: the cache key changes with it
MIN_ONNXRUNTIME = (1, 22)  # 1.21's aarch64 wheel dies with "Illegal instruction" on a Pi 4 (Cortex-A72)
SHARE_AT = "/vits-edge"  # where Machine.run shows the shared host folder
WHEELS_AT = "/opt/vits-edge-wheels"  # the aarch64 wheels, kept in the rootfs so pip can install offline
VENV_AT = "/opt/venv"
PROBE = "import sys, numpy, onnxruntime; print(sys.version.split()[0], numpy.__version__, onnxruntime.__version__)"

# program -> the Debian package that has it
TOOLS = {
    "qemu-aarch64-static": "qemu-user-static",
    "update-binfmts": "binfmt-support",
    "mmdebstrap": "mmdebstrap",
    "unshare": "util-linux",
    "chroot": "coreutils",
    "mount": "mount",
}
# ... and to count what the Pi's core executes (exporter/pi/counts.py): QEMU that loads TCG plugins, a C compiler
COUNTING_TOOLS = {"qemu-aarch64": "qemu-user", "cc": "gcc"}


class CannotEmulate(RuntimeError):
    """This machine cannot run aarch64 code now; the message says why. Callers skip, never pass."""


class UnsafeOnnxruntime(ValueError):
    """The onnxruntime asked for is known to crash on a Raspberry Pi: a failure, not a skip."""


@dataclass(frozen=True)
class PiCpu:
    """What QEMU emulates and what a Raspberry Pi's kernel shows in /proc/cpuinfo for it."""

    board: str
    part: str  # MIDR part number
    variant: str
    revision: int
    features: str  # the kernel's hwcap names; QEMU's own hwcaps decide what onnxruntime uses

    def cpuinfo(self, processors: int) -> str:
        cores = [f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {self.features}\nCPU implementer\t: 0x41\n"
                 f"CPU architecture: 8\nCPU variant\t: {self.variant}\nCPU part\t: {self.part}\n"
                 f"CPU revision\t: {self.revision}\n" for i in range(processors)]
        return "\n".join(cores) + f"\nModel\t\t: {self.board}\n"


# QEMU_CPU name -> the Pi it stands for. The default QEMU CPU ("max") advertises SVE and i8mm,
# which no Pi has: onnxruntime would pick kernels no Pi runs.
CPUS = {
    "cortex-a72": PiCpu("Raspberry Pi 4 Model B", "0xd08", "0x0", 3, "fp asimd evtstrm crc32 cpuid"),
    "cortex-a76": PiCpu("Raspberry Pi 5 Model B", "0xd0b", "0x4", 1,
                        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
                        "dcpop asimddp"),
}


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])


# Raspberry Pi OS (64-bit) releases: Debian 13 trixie is what a fresh install is based on now; 12 bookworm
# is still on most Pis. Each with its own python3.
SUITES = {"bookworm": "3.11", "trixie": "3.13"}


@dataclass(frozen=True)
class Recipe:
    """Everything the cached root filesystem is made from; its hash names the cache folder."""

    onnxruntime: str
    numpy: str
    suite: str = "bookworm"  # Raspberry Pi OS (64-bit) is Debian bookworm with the Pi's kernel
    python: str = "3.11"  # bookworm's python3
    packages: tuple[str, ...] = ("python3", "python3-venv", "espeak-ng")
    wheel_platform: str = "manylinux_2_28_aarch64"  # bookworm's glibc 2.36 takes manylinux_2_28 wheels
    steps: int = RECIPE_STEPS
    # "debian": numpy from the suite's python3-numpy (``numpy`` is then its version), for an onnxruntime built
    # against numpy 1.x, which PyPI no longer has for aarch64 (the Pi estimates' calibration runs the onnxruntime
    # sherpa-onnx ran); onnxruntime is then installed without its dependencies
    numpy_from: str = "pypi"

    @classmethod
    def for_host(cls, suite: str = "bookworm") -> Recipe:
        """The host venv's onnxruntime and numpy versions, so that ARM and x86 run the same code, on Debian
        ``suite`` with its own Python (``SUITES``)."""
        if suite not in SUITES:
            raise ValueError(f"unknown Debian suite {suite!r}: choose from {', '.join(SUITES)}")
        ort = importlib.metadata.version("onnxruntime")
        if _version_tuple(ort) < MIN_ONNXRUNTIME:
            raise UnsafeOnnxruntime(f"onnxruntime {ort}: the aarch64 builds before 1.22 crash on a Raspberry Pi 4 "
                             "(Illegal instruction); install onnxruntime>=1.22 (pyproject.toml requires it)")
        return cls(onnxruntime=ort, numpy=importlib.metadata.version("numpy"), suite=suite, python=SUITES[suite])

    def key(self) -> str:
        fields = asdict(self)
        if self.numpy_from == "pypi":  # the keys of the root filesystems made before numpy_from existed
            del fields["numpy_from"]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """``$VITS_EDGE_ARM_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/vits-edge/arm`` (outside the repo)."""
    if os.environ.get("VITS_EDGE_ARM_CACHE"):
        return Path(os.environ["VITS_EDGE_ARM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vits-edge" / "arm"


# root's tools (chroot, mount) live in sbin, which a non-login PATH may lack
_SEARCH_PATH = os.pathsep.join(dict.fromkeys([p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
                                             + ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]))


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=_SEARCH_PATH)


def binfmt_dir() -> Path:
    return Path(os.environ.get("VITS_EDGE_ARM_BINFMT", "/proc/sys/fs/binfmt_misc"))


# -- can this machine emulate? ---------------------------------------------------------------------
def diagnose(*, euid: int | None = None, which: Callable[[str], str | None] = _which,
             binfmt: Path | None = None, need_mmdebstrap: bool = True) -> list[str]:
    """What stands in the way of running aarch64 programs in a chroot here ([] when nothing does)."""
    euid = os.geteuid() if euid is None else euid
    binfmt = binfmt_dir() if binfmt is None else binfmt
    problems = []
    if euid != 0:
        problems.append("not root: chroot, mount and binfmt_misc need root (CI runs as root)")
    missing = [f"{tool} (apt-get install {pkg})" for tool, pkg in TOOLS.items()
               if which(tool) is None and (need_mmdebstrap or tool != "mmdebstrap")]
    if missing:
        problems.append("missing " + ", ".join(missing))
    entry = binfmt / "qemu-aarch64"
    if not (binfmt / "register").exists():
        problems.append(f"binfmt_misc is not mounted at {binfmt} (mount -t binfmt_misc binfmt_misc {binfmt})")
    elif not entry.exists():
        problems.append(f"no qemu-aarch64 entry in {binfmt} (update-binfmts --enable qemu-aarch64)")
    else:
        text = entry.read_text()
        flags = re.search(r"^flags:\s*(\S*)", text, re.MULTILINE)
        if not text.startswith("enabled"):
            problems.append(f"{entry} is disabled (update-binfmts --enable qemu-aarch64)")
        elif not flags or "F" not in flags.group(1):
            # without F the kernel looks for the interpreter inside the chroot, where it is not
            problems.append(f"{entry} lacks the F flag: use qemu-user-static's registration (binfmt-support)")
    return problems


def _run_quiet(argv: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PATH": _SEARCH_PATH, "DEBIAN_FRONTEND": "noninteractive"})


def prepare_host(*, install: bool = True, need_mmdebstrap: bool = True, counting: bool = False,
                 log: Callable[[str], None] = print) -> None:
    """Fix what can be fixed (as root), then raise CannotEmulate naming whatever still blocks emulation;
    ``counting``: also what counting instructions needs (``COUNTING_TOOLS``)."""
    tools = {**TOOLS, **(COUNTING_TOOLS if counting else {})}
    if os.geteuid() == 0 and install:
        missing = sorted({pkg for tool, pkg in tools.items() if _which(tool) is None
                          and (need_mmdebstrap or tool != "mmdebstrap")})
        if missing and _which("apt-get"):
            log(f"arm: installing {' '.join(missing)} with apt-get")
            update = _run_quiet(["apt-get", "update", "-qq"])
            done = _run_quiet(["apt-get", "install", "-y", "-qq", *missing]) if update.returncode == 0 else update
            if done.returncode != 0:
                raise CannotEmulate(f"apt-get could not install {' '.join(missing)}: {done.stderr.strip()[-500:]}")
        binfmt = binfmt_dir()
        if not (binfmt / "register").exists():
            mounted = _run_quiet(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)])
            if mounted.returncode != 0:
                raise CannotEmulate(f"binfmt_misc is not mounted at {binfmt} and mounting it failed: "
                                    f"{mounted.stderr.strip()}")
        entry = binfmt / "qemu-aarch64"
        if _which("update-binfmts") and (not entry.exists() or not entry.read_text().startswith("enabled")):
            _run_quiet(["update-binfmts", "--enable", "qemu-aarch64"])
    problems = diagnose(need_mmdebstrap=need_mmdebstrap)
    if problems:
        raise CannotEmulate("; ".join(problems))


# -- the root filesystem ---------------------------------------------------------------------------
def _os_release(path: Path = Path("/etc/os-release")) -> dict[str, str]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    return {k: v.strip().strip('"') for k, _, v in (line.partition("=") for line in lines) if v}


def _apt_entries(etc: Path) -> list[tuple[str, str, str | None]]:
    """(uri, suite, signed-by) of every enabled ``deb`` source in the one-line and deb822 files."""
    entries = []
    for path in [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            m = re.match(r"\s*deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)", line)
            if m:
                signed = re.search(r"signed-by=(\S+)", m.group(1) or "")
                entries.append((m.group(2), m.group(3), signed.group(1) if signed else None))
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        for block in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            key = None
            for line in block.splitlines():
                if line.startswith("#"):
                    continue
                if line[:1] in (" ", "\t") and key:
                    fields[key] += " " + line.strip()
                elif ":" in line:
                    key, _, value = line.partition(":")
                    key = key.strip().lower()
                    fields[key] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                for suite in fields.get("suites", "").split():
                    entries.append((uri, suite, fields.get("signed-by") or None))
    return entries


def debian_sources(suite: str, *, etc: Path = Path("/etc/apt"), os_release: dict | None = None) -> list[str]:
    """One-line apt sources for ``suite`` on the machine's own Debian mirrors (``$VITS_EDGE_ARM_MIRROR`` wins)."""
    if os.environ.get("VITS_EDGE_ARM_MIRROR"):
        return [f"deb {os.environ['VITS_EDGE_ARM_MIRROR']} {suite} main"]
    release = _os_release() if os_release is None else os_release
    host = release.get("VERSION_CODENAME")
    if release.get("ID") != "debian" or not host:
        raise CannotEmulate("this machine is not Debian, so its apt sources name no Debian mirror for the aarch64 "
                            "root filesystem: set VITS_EDGE_ARM_MIRROR to a Debian mirror URI")
    lines = []
    for uri, s, signed in _apt_entries(etc):
        if s in (host, f"{host}-updates", f"{host}-security"):
            opts = f"[signed-by={signed}] " if signed else ""
            line = f"deb {opts}{uri} {suite}{s[len(host):]} main"
            if line not in lines:
                lines.append(line)
    if not lines:
        raise CannotEmulate(f"no Debian {host} source in {etc}: set VITS_EDGE_ARM_MIRROR to a Debian mirror URI")
    return lines


def _remove_stale_partials(cache: Path) -> None:
    for tmp in cache.glob("*.partial-*"):
        m = re.search(r"\.partial-(\d+)-", tmp.name)
        pid = int(m.group(1)) if m else 0
        try:
            os.kill(pid, 0)
            alive = pid > 0
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            shutil.rmtree(tmp, ignore_errors=True)


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def ensure_rootfs(recipe: Recipe, *, log: Callable[[str], None] = print) -> Path:
    """The cached root filesystem for ``recipe``, built first if needed (~3 min, ~450 MB)."""
    cache = cache_dir()
    final = cache / f"rootfs-{recipe.key()}"
    if (final / "recipe.json").is_file():
        return final / "root"
    cache.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(cache)
    sources = debian_sources(recipe.suite)
    tmp = Path(tempfile.mkdtemp(prefix=f"rootfs-{recipe.key()}.partial-{os.getpid()}-", dir=cache))
    start = time.monotonic()
    try:
        root = tmp / "root"
        log(f"arm: building the Debian {recipe.suite} arm64 root filesystem in {final} (once per recipe)")
        # its own mount namespace: whatever mmdebstrap mounts dies with it, even if it is killed
        debian_numpy = recipe.numpy_from == "debian"
        packages = [*recipe.packages, *(["python3-numpy"] if debian_numpy else [])]
        proc = subprocess.run([_which("unshare"), "--mount", "--propagation", "private", "mmdebstrap", "--mode=root",
                               "--arch=arm64", "--variant=minbase", f"--include={','.join(packages)}",
                               recipe.suite, str(root), *sources], check=False, capture_output=True, text=True,
                              timeout=1800, env={**os.environ, "PATH": _SEARCH_PATH})
        (tmp / "mmdebstrap.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise CannotEmulate(f"mmdebstrap could not build the root filesystem from {sources} (no network to the "
                                f"Debian mirror?):\n{_tail(proc.stderr)}")
        wheels = root / WHEELS_AT.lstrip("/")
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--platform",
                               recipe.wheel_platform, "--python-version", recipe.python, "--implementation", "cp",
                               "-d", str(wheels), f"onnxruntime=={recipe.onnxruntime}",
                               *(["--no-deps"] if debian_numpy else [f"numpy=={recipe.numpy}"])],
                              check=False, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise CannotEmulate(f"pip could not download the aarch64 wheels of onnxruntime {recipe.onnxruntime} and "
                                f"numpy {recipe.numpy} (no network to the package index?):\n{_tail(proc.stderr)}")
        machine = Machine(root, None, share=tmp)
        machine.check(["python3", "-m", "venv", *(["--system-site-packages"] if debian_numpy else []), VENV_AT],
                      cpu="cortex-a72")
        machine.check([f"{VENV_AT}/bin/pip", "install", "-q", "--no-index", "--find-links", WHEELS_AT,
                       f"onnxruntime=={recipe.onnxruntime}",
                       *(["--no-deps"] if debian_numpy else [f"numpy=={recipe.numpy}"])],
                      cpu="cortex-a72", timeout=1200)
        probe = machine.check([f"{VENV_AT}/bin/python", "-c", PROBE], cpu="cortex-a72").stdout.split()
        espeak = machine.check(["espeak-ng", "--version"], cpu="cortex-a72").stdout.strip()
        if not probe or not probe[0].startswith(recipe.python + ".") or probe[1:] != [recipe.numpy, recipe.onnxruntime]:
            raise RuntimeError(f"the new root filesystem has python/numpy/onnxruntime {probe}, not {recipe}")
        info = {"recipe": asdict(recipe), "key": recipe.key(), "sources": sources, "python": probe[0],
                "espeak_ng": espeak, "seconds": round(time.monotonic() - start, 1),
                "built": time.strftime("%Y-%m-%d %H:%M:%S")}
        (tmp / "recipe.json").write_text(json.dumps(info, indent=2) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:  # another run finished first: keep its copy
            if not (final / "recipe.json").is_file():
                raise
        log(f"arm: root filesystem ready in {info['seconds']} s")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final / "root"


# -- running in it ---------------------------------------------------------------------------------
def _processors() -> int:
    """How many CPUs the host's /sys lists: onnxruntime's cpuinfo checks /proc/cpuinfo against it."""
    try:
        ranges = Path("/sys/devices/system/cpu/possible").read_text().strip().split(",")
        return sum(int(b) - int(a) + 1 for a, _, b in (r.partition("-") if "-" in r else (r, "", r) for r in ranges))
    except (OSError, ValueError):
        return os.cpu_count() or 1


# Mounts live in a private mount namespace (unshare), so they vanish with the command, however it ends.
_SCRIPT = r"""
set -eu
root="$VE_ROOT"
if [ -n "$VE_LOWER" ]; then
  mount -t overlay overlay -o "lowerdir=$VE_LOWER,upperdir=$VE_UPPER,workdir=$VE_WORK" "$root"
fi
mount -t proc proc "$root/proc"
# onnxruntime's cpuinfo segfaults on the host's x86 /proc/cpuinfo next to /sys: show it a Pi's
mount --rbind /sys "$root/sys"
mount --bind "$VE_CPUINFO" "$root/proc/cpuinfo"
mkdir -p "$root$VE_SHARE_AT"
mount --bind "$VE_SHARE" "$root$VE_SHARE_AT"
chroot=$(command -v chroot)
exec env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 QEMU_CPU="$VE_CPU" \
  "$chroot" "$root" /usr/bin/env -C "$VE_CWD" "$@"
"""


class Machine:
    """Commands run in ``base`` under QEMU; with ``scratch`` they write to an overlay there, not to ``base``."""

    def __init__(self, base: Path, scratch: Path | None, *, share: Path):
        self.base, self.scratch, self.share = Path(base), scratch and Path(scratch), Path(share)
        self.root, self.lower = self.base, ""
        if self.scratch is not None:
            for sub in ("upper", "work", "merged"):
                (self.scratch / sub).mkdir(parents=True, exist_ok=True)
            if "overlay" in Path("/proc/filesystems").read_text():
                self.root, self.lower = self.scratch / "merged", str(self.base)
            else:  # no overlayfs: a private copy (~450 MB, seconds)
                self.root = self.scratch / "rootfs"
                if not self.root.exists():
                    subprocess.run(["cp", "-a", "--reflink=auto", str(self.base), str(self.root)], check=True)

    def _cpuinfo(self, cpu: str) -> Path:
        where = (self.scratch or self.share) / f"cpuinfo-{cpu}"
        where.write_text(CPUS[cpu].cpuinfo(_processors()))
        return where

    def _command(self, argv: list[str], cpu: str, cwd: str) -> tuple[list[str], dict]:
        if cpu not in CPUS:
            raise ValueError(f"unknown CPU {cpu!r}: choose from {', '.join(CPUS)}")
        env = {"PATH": _SEARCH_PATH, "VE_ROOT": str(self.root),
               "VE_LOWER": self.lower, "VE_CPUINFO": str(self._cpuinfo(cpu)), "VE_SHARE": str(self.share),
               "VE_SHARE_AT": SHARE_AT, "VE_CPU": cpu, "VE_CWD": cwd}
        if self.lower:
            env.update(VE_UPPER=str(self.scratch / "upper"), VE_WORK=str(self.scratch / "work"))
        unshare = [_which("unshare") or "unshare", "--mount", "--propagation", "private"]
        return [*unshare, "sh", "-c", _SCRIPT, "sh", *argv], env

    def run(self, argv: list[str], *, cpu: str, cwd: str = "/", timeout: float = 900) -> subprocess.CompletedProcess:
        """``argv`` inside, with ``QEMU_CPU=cpu``; the shared folder is at ``SHARE_AT``."""
        command, env = self._command(argv, cpu, cwd)
        return subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout, env=env)

    def start(self, argv: list[str], *, cpu: str, log: Path, cwd: str = "/") -> subprocess.Popen:
        """``argv`` inside, in the background (a server): its stdout piped, its stderr to ``log``. The chroot
        shares the host's network, so a server listening on loopback inside is reached from the host."""
        command, env = self._command(argv, cpu, cwd)
        with open(log, "wb") as err:
            return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, env=env)

    def check(self, argv: list[str], *, cpu: str, cwd: str = "/", timeout: float = 900) -> subprocess.CompletedProcess:
        """``run``, raising with the command's output when it fails."""
        proc = self.run(argv, cpu=cpu, cwd=cwd, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"under QEMU_CPU={cpu}: {' '.join(argv)} exited {proc.returncode}:\n"
                               f"{_tail(proc.stdout + proc.stderr, 30)}")
        return proc

    def probe(self) -> None:
        """CannotEmulate unless an aarch64 program really runs in the chroot."""
        proc = self.run(["uname", "-m"], cpu="cortex-a72", timeout=120)
        if proc.returncode != 0 or proc.stdout.strip() != "aarch64":
            raise CannotEmulate(f"an aarch64 program does not run in the chroot (exit {proc.returncode}): "
                                f"{_tail(proc.stdout + proc.stderr, 5)}")
