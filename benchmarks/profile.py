"""Where a voice's time goes: onnxruntime's own profiler, per unit of the voice and per operator.

    python -m benchmarks.profile --voice build/demo/voice [--models model.onnx model.auto.onnx]
                                 [--threads 2] [--sentences 25] [--rounds 3] [--top 10] [--json FILE]

Each model speaks the sentences at zero noise once to warm up, then ``--rounds`` more times under the
profiler, the models taking turns a pass each; the kernel times are summed per unit (the
quantizer's: text encoder, its feed-forward layers, duration predictor, flow, each decoder stage,
``conv_post``; the rest of the graph is ``glue``), per operator and per node, and the median of the
rounds is reported. With several models, each unit's time is also given as a speed-up over the
first model's. The profiler adds a little time to every node: use ``benchmarks.run`` for speed, this
for where it goes.

onnxruntime renames what it rewrites: a fused node keeps the name of the node it started from (QDQ
fusions add ``_token_N``), so it is counted in that node's unit; nodes with a name of its own (a
fused Gelu, the layout Transposes it puts around int8 convolutions) count in the unit of the tensors
they read or write, or of their neighbours (``UnitNames``).
"""

from __future__ import annotations

import argparse
import bisect
import json
import re
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import onnx
import onnxruntime as ort

from benchmarks.results import publish
from benchmarks.run import SENTENCES, read_sentences
from exporter.quant.units import node_units
from runtime import contract
from runtime.voice import SynthesisConfig, Voice

GLUE, INSERTED = "glue", "onnxruntime"


class UnitNames:
    """Which unit of the voice a node of onnxruntime's optimized graph belongs to, from the model file.

    A node keeps its own name, or one onnxruntime derived from it (fusions add ``_token_N`` or a
    suffix after the original name, and keep the module path). Failing that, the tensors it writes
    or reads name it (``/flow/flows.0/Exp_output_0_scale``), and failing that (a chain of Transpose,
    QuantizeLinear and DequantizeLinear that onnxruntime inserted between two int8 nodes) it counts
    with its neighbours in the graph."""

    def __init__(self, source):
        self.units = node_units(source)
        by_path: dict[str, set[str]] = defaultdict(set)
        for name, unit in self.units.items():
            by_path[name.rsplit("/", 1)[0] + "/"].add(unit)
        self.paths = {path: next(iter(u)) for path, u in by_path.items() if len(u) == 1}
        self.nodes = {node.name for node in source.graph.node}
        self.tensors = {out: self.units.get(node.name, GLUE) for node in source.graph.node for out in node.output}

    def by_name(self, name: str) -> str | None:
        """The unit a node or tensor name points to, or None. Names of the top-level graph are glue."""
        name = re.sub(r"(_token_\d+)+$", "", name)
        top = name.startswith("/") and name.count("/") == 1
        while name:
            if name in self.nodes:
                return self.units.get(name, GLUE)
            if name in self.tensors:
                return self.tensors[name]
            if name.endswith("/") and name in self.paths:
                return self.paths[name]
            name = name[:-1] if name.endswith("/") else name.rsplit("/", 1)[0] + "/" if "/" in name else ""
        return GLUE if top else None

    def graph(self, optimized) -> dict[str, str]:
        """Node name -> unit for every node of ``optimized``."""
        found = {}
        for node in optimized.graph.node:
            unit = next(filter(None, map(self.by_name, (node.name, *node.output, *node.input))), None)
            if unit is not None:
                found[node.name] = unit
        producers = {out: node for node in optimized.graph.node for out in node.output}
        consumers: dict[str, list] = defaultdict(list)
        for node in optimized.graph.node:
            for name in node.input:
                consumers[name].append(node)
        changed = True
        while changed:
            changed = False
            for node in optimized.graph.node:
                if node.name in found:
                    continue
                near = [producers[t] for t in node.input if t in producers]
                near += [c for t in node.output for c in consumers[t]]
                unit = next((found[n.name] for n in near if n.name in found), None)
                if unit is not None:
                    found[node.name], changed = unit, True
        return {node.name: found.get(node.name, INSERTED) for node in optimized.graph.node}


class _Profiled:
    """One model in a session with onnxruntime's profiler on, and the unit of each node it will report."""

    def __init__(self, model: Path, threads: int, folder: Path):
        source = onnx.load(str(model), load_external_data=False)
        self.model = model
        options = ort.SessionOptions()
        options.enable_mem_pattern = False  # as the runtime runs it
        options.enable_profiling = True
        options.profile_file_prefix = str(folder / model.stem)
        options.optimized_model_filepath = str(folder / f"{model.stem}.optimized.onnx")  # the names it reports
        options.log_severity_level = 3  # not the warning that the saved graph is for this CPU only
        self.voice = Voice.load(model, threads=threads, session_options=options, streaming=False)  # the whole graph
        self.names = UnitNames(source)
        self.order = list(dict.fromkeys([*self.names.units.values(), GLUE, INSERTED]))
        self.units = self.names.graph(onnx.load(options.optimized_model_filepath))

    def unit(self, name: str) -> str:
        # A few nodes run under a name the saved graph does not have (a Squeeze it re-created).
        return self.units.get(name) or self.names.by_name(name) or INSERTED

    def speak(self, ids: list[list[int]]) -> None:
        zero = SynthesisConfig(noise_scale=0.0, noise_w=0.0)
        for sentence in ids:
            self.voice.ids_to_audio(sentence, zero)

    def rounds(self, per_round: int) -> list[tuple[dict, dict, dict, float]]:
        """(per unit, per op, per node, run ms) for each round after the warm-up."""
        events = json.loads(Path(self.voice.session.end_profiling()).read_text(encoding="utf-8"))
        runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
        starts = [runs[i]["ts"] for i in range(per_round, len(runs), per_round)]  # the warm-up counts nowhere
        out = [(defaultdict(float), defaultdict(float), defaultdict(float), [0.0]) for _ in starts]
        for e in events:
            index = bisect.bisect_right(starts, e["ts"]) - 1
            if index < 0:
                continue
            per_unit, per_op, per_node, run_ms = out[index]
            if e.get("name") == "model_run":
                run_ms[0] += e["dur"] / 1e3
            elif e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                name, op, ms = e["name"][: -len("_kernel_time")], e["args"].get("op_name", "?"), e["dur"] / 1e3
                per_unit[self.unit(name)] += ms
                per_op[op] += ms
                per_node[f"{op} {name}"] += ms
        return [(per_unit, per_op, per_node, run_ms[0]) for per_unit, per_op, per_node, run_ms in out]


def profile(models: list[Path], sentences: list[str], threads: int, rounds: int) -> list[dict]:
    """Per model: median kernel milliseconds per unit, operator and node over ``rounds`` passes of the
    sentences. The models take turns, a whole pass each, so that a machine that slows down or speeds up
    during the run affects them alike."""
    with tempfile.TemporaryDirectory() as tmp:
        profiled = [_Profiled(model, threads, Path(tmp)) for model in models]
        ids = [profiled[0].voice.text_to_ids(text) for text in sentences]
        for _ in range(1 + rounds):  # the first pass warms up
            for p in profiled:
                p.speak(ids)
        results = []
        for p in profiled:
            measured = p.rounds(len(ids))
            units = _median([m[0] for m in measured])
            results.append({
                "model": p.model.name,
                "sentences": len(ids),
                "threads": threads,
                "rounds": rounds,
                "run_ms": round(statistics.median(m[3] for m in measured), 1),
                "kernel_ms": round(sum(units.values()), 1),
                "units": {u: round(units[u], 2) for u in p.order if u in units},
                "ops": _descending(_median([m[1] for m in measured])),
                "nodes": _descending(_median([m[2] for m in measured])),
            })
    return results


def _median(rounds: list[dict[str, float]]) -> dict[str, float]:
    keys = dict.fromkeys(k for r in rounds for k in r)
    return {k: statistics.median(r.get(k, 0.0) for r in rounds) for k in keys}


def _descending(times: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in sorted(times.items(), key=lambda kv: -kv[1])}


def report(results: list[dict], top: int) -> str:
    first = results[0]
    lines = [(f"{first['sentences']} sentences at zero noise, {first['threads']} threads, median of "
              f"{first['rounds']} rounds: kernel time under onnxruntime's profiler (ms, share of the model's total)"),
             ""]
    head = ["unit"] + [r["model"] for r in results] + [f"x {r['model']}" for r in results[1:]]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    columns = [{**r["units"], "total": r["kernel_ms"]} for r in results]
    for unit in dict.fromkeys([u for c in columns for u in c if u != "total"] + ["total"]):
        ms = [c.get(unit, 0.0) for c in columns]
        row = [unit] + [f"{t:.1f} ({t / r['kernel_ms']:.0%})" for t, r in zip(ms, results)]
        row += [f"{ms[0] / t:.2f}" if t and ms[0] else "-" for t in ms[1:]]
        lines.append("| " + " | ".join(row) + " |")
    for r in results:  # indented: a markdown page shows these lists as they are printed
        lines += ["", f"    {r['model']}: top operators, then top nodes"]
        lines += [f"      {op:24s} {ms:9.1f} ms {ms / r['kernel_ms']:6.1%}" for op, ms in list(r["ops"].items())[:top]]
        lines += [f"      {ms:9.1f} ms  {node}" for node, ms in list(r["nodes"].items())[:top]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--voice", type=Path, required=True, help="the voice folder (model.onnx + model.onnx.json)")
    parser.add_argument("--models", nargs="+", help="model files in the folder (default: model.onnx and every "
                        "model.*.onnx); the first is the reference for speed-ups")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=25, help="how many of benchmarks/sentences.txt")
    parser.add_argument("--rounds", type=int, default=3, help="profiled passes per model (medians are reported)")
    parser.add_argument("--top", type=int, default=10, help="operators and nodes listed per model")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--docs", action="store_true", help="also write the report to docs/measured/profile.md (the "
                        "documentation's table: commit it)")
    args = parser.parse_args(argv)
    if not (args.voice / contract.MODEL_FILE).is_file():
        parser.error(f"{args.voice}: no {contract.MODEL_FILE}; export a voice first "
                     "(python -m exporter export ... --out DIR)")
    if min(args.sentences, args.threads, args.rounds) < 1:
        parser.error("--sentences, --threads and --rounds must be at least 1")
    names = args.models or [p.name for p in contract.voice_models(args.voice)]
    missing = [n for n in names if not (args.voice / n).is_file()]
    if missing:
        parser.error(f"not in {args.voice}: {', '.join(missing)}")
    texts = read_sentences(SENTENCES)[: args.sentences]
    print(f"profiling {', '.join(names)}: {args.rounds} rounds after a warm-up ...", file=sys.stderr, flush=True)
    results = profile([args.voice / name for name in names], texts, args.threads, args.rounds)
    print(report(results, args.top))
    if args.docs:
        page = f"# Where the time goes\n\n{report(results, args.top)}"
        print(f"published: {publish('profile', page, argv)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
