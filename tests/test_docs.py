"""The README and docs/ are for users: every command they show exists and takes the flags they give it, every
link leads somewhere, and they hold no work diary (issue numbers, commit hashes)."""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache

import pytest
from tests_helpers import REPO

PAGES = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]
# an issue's number, a GitHub reference (not Unicode's "UAX #15"), a commit hash
DIARY = re.compile(r"\b[Ii]ssue \d+|(?<!UAX )#\d{2,}\b|\bcommit [0-9a-f]{7}\b"
                   r"|\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b")
SUBCOMMANDS = {"exporter": ("export", "quantize", "variants", "split", "text-model", "import-piper", "piper-voice"),
               "benchmarks.fuzz": ("text", "wyoming")}


def _commands():
    """``(page, module, subcommand, flags)`` for every ``python -m MODULE ...`` line in a shell block."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for block in re.findall(r"```sh\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                for match in re.finditer(r"python -m ([\w.]+)((?:\s+(?!\||&&|#)\S+)*)", line):
                    module, rest = match.group(1), match.group(2).split()
                    sub = rest[0] if module in SUBCOMMANDS and rest and rest[0] in SUBCOMMANDS[module] else None
                    yield page.name, module, sub, sorted({w.split("=")[0] for w in rest if w.startswith("--")})


@cache
def _help(module: str, sub: str | None) -> str:
    proc = subprocess.run([sys.executable, "-m", module, *([sub] if sub else []), "--help"], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, f"python -m {module} {sub or ''} --help: {proc.stderr[-2000:]}"
    return proc.stdout


COMMANDS = sorted(set((m, s, tuple(f)) for _, m, s, f in _commands()) - {("pip", None, ())})


def test_the_pages_show_commands():
    modules = {m for m, _, _ in COMMANDS}
    assert {"runtime.synthesize", "runtime.serve", "runtime.batch", "exporter", "benchmarks.run"} <= modules


@pytest.mark.parametrize("module, sub, flags", [c for c in COMMANDS if c[0] not in ("pip", "venv")],
                         ids=lambda v: v if isinstance(v, str) else None)
def test_every_documented_command_takes_its_flags(module, sub, flags):
    text = _help(module, sub)
    if sub is None:
        usage = re.sub(r"--[\w-]+\s+\{[^}]*\}", "", text.split("\n\n")[0])  # an option's choices are not subcommands
        assert not re.search(r"\{[\w-]+(,[\w-]+)+\}", usage), \
            f"python -m {module} has subcommands: list them in SUBCOMMANDS so each is checked with its own flags"
    missing = [flag for flag in flags if not re.search(rf"{re.escape(flag)}\b", text)]
    assert not missing, f"python -m {module} {sub or ''} does not know {missing}"


def test_every_link_leads_somewhere():
    broken = []
    for page in [*PAGES, *sorted((REPO / "docs" / "measured").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert not broken, broken


def test_the_readme_is_a_front_door_and_the_docs_no_diary():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    assert readme.index("make demo") < readme.index("## ") and readme.index("make test") < readme.index("## ")
    diary = []
    for page in PAGES[:1] + PAGES[2:]:  # the changelog may name versions, never issues
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if DIARY.search(line):
                diary.append(f"{page.name}:{number}: {line.strip()[:100]}")
    assert not diary, diary
