"""The batch job on Ray (the ``cluster`` extra): Ray Data reads the items, an actor pool holds one ``Speaker`` (the
job's voices, loaded once) per actor, and the rows stream back to the driver, which alone writes the manifest.

Without ``address`` (or ``RAY_ADDRESS``) Ray starts on this machine, listening on loopback only; with one (``auto``
or ``HOST:PORT``, as ``ray start --head`` prints) the job joins that cluster: every node then needs vits-edge
installed and the voices and the output folder at the same path (shared storage).

Ray Data restarts a killed actor and sends its batch again (at least once): a WAV is written atomically from noise
drawn from its id, so a retried item writes the same bytes, and the manifest drops the second row."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
from collections.abc import Iterator

import numpy as np

from runtime.batch.jobs import JobError, Speaker

logger = logging.getLogger("runtime.batch")
ACTOR_NAME = "VitsEdgeSpeaker"  # the actors' process title is ray::MapWorker(MapBatches(VitsEdgeSpeaker))


def available() -> bool:
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # a broken install, or the module blocked in sys.modules
        return False


class VitsEdgeSpeaker:
    """One Ray Data actor: the voices loaded once, then batches of items (JSON strings) -> rows (JSON strings)."""

    def __init__(self, voices: dict[str, str], threads: int, out: str, alignments: bool, variant: str | None):
        self.speaker = Speaker(voices, threads, out, alignments, variant)

    def __call__(self, batch: dict) -> dict:
        rows = self.speaker.batch([json.loads(item) for item in batch["item"]])
        return {"row": np.array([json.dumps(row, ensure_ascii=False) for row in rows], dtype=object)}


def connect(address: str | None):
    """``ray``, initialised: joined to ``address`` (or to ``RAY_ADDRESS``, as ``ray job submit`` sets it), or a new
    instance started on this machine (loopback only, no dashboard), even when one is already running here (join
    that one with ``--address auto``)."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
    quiet = not logger.isEnabledFor(logging.DEBUG)
    if address is None:
        # a local instance nobody else joins: Ray's own switch that binds it to 127.0.0.1 (read at import)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if address not in (None, "auto") and "://" not in address:
        _reachable(address)
    # ray (the cluster extra, heavy) is imported here: after the switches above, which it reads at import
    import ray
    import ray.data

    if quiet:  # Ray's own notes (token auth on, progress bars off, execution finished) are not the job's
        for name in ("ray", "ray.data"):  # ray.data has a handler of its own
            logging.getLogger(name).setLevel(logging.ERROR)
    if not ray.is_initialized():
        try:
            if address is None:
                ray.init(address="local", include_dashboard=False, object_store_memory=256 * 2**20, configure_logging=False,
                         log_to_driver=not quiet)
            else:
                ray.init(address=address, configure_logging=False, log_to_driver=not quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise JobError(f"could not join the Ray cluster at {address}: {exc} (a cluster with token authentication, "
                           f"Ray's default, needs RAY_AUTH_MODE=token and its token in ~/.ray/auth_token or "
                           f"RAY_AUTH_TOKEN; start one with `ray start --head`, or leave out --address to run on this "
                           f"machine)") from exc
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the job prints its own progress
    context.print_on_execution_start = False
    return ray


def _reachable(address: str, timeout: float = 5.0) -> None:
    """Fail at once, with the fix, when nothing answers at ``HOST:PORT`` (Ray itself keeps retrying for minutes)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise JobError(f"could not join the Ray cluster at {address}: {exc} (start one with `ray start --head` and "
                       f"pass the address it prints, or leave out --address to run on this machine)") from exc


def node_cpus(ray) -> list[int]:
    """CPUs of every live node of the cluster."""
    return [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")] or [1]


def run(items: list[dict], *, voices: dict[str, str], out: str, workers: int, threads: int, alignments: bool,
        variant: str | None, batch_size: int, ray) -> Iterator[dict]:
    """Yield a result row (a manifest row, or ``{"id", "error"}``) for every item, in the order they finish; a
    retried item may come twice (the manifest keeps the first)."""
    if not items:
        return
    blocks = max(1, -(-len(items) // batch_size))  # a batch a block: a killed actor loses one batch of work
    dataset = ray.data.from_items([{"item": json.dumps(item, ensure_ascii=False)} for item in items],
                                  override_num_blocks=blocks)
    spoken = dataset.map_batches(
        VitsEdgeSpeaker, fn_constructor_kwargs={"voices": voices, "threads": threads, "out": out,
                                                "alignments": alignments, "variant": variant},
        batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=min(workers, blocks)), num_cpus=threads)
    try:
        for row in spoken.iter_rows():
            yield json.loads(row["row"])
    except ray.exceptions.RayError as exc:
        raise JobError(f"the Ray job failed: {exc}\n(on a cluster, every node needs vits-edge installed and the "
                       f"voices and --out at the same path; run the same command again to resume)") from exc
