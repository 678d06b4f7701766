"""The batch job on this machine's processes: each worker loads the voices once and speaks batches of items.

A worker that dies (killed, out of memory) breaks the pool: a new pool is started and every item not yet in the
manifest is sent again. An item that was being spoken when workers died three times is recorded as an error (it
may be what kills them), so a job always ends.

Stopped (SIGTERM or SIGINT in the driver, ``Interrupted``): the batches in flight are abandoned, not waited for
(a batch is several items; the next run speaks them again). The driver cancels what is queued and sends each
worker SIGTERM; a worker writing a WAV lets the exception run through ``atomic_open`` (its temporary is removed)
and exits, an idle one exits at once. Workers ignore SIGINT: Ctrl-C reaches the whole process group, and the
driver alone decides how the job stops."""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from runtime.batch.jobs import FATAL, Speaker
from runtime.signals import Interrupted

logger = logging.getLogger("runtime.batch")
MAX_DEATHS = 3  # an item in flight when workers died this often is given up
STOP_S = 5.0  # a worker told to stop that is still there after this long is killed

_speaker: Speaker | None = None
_speaking = False


def _start(voices: dict[str, str], threads: int, out: str, alignments: bool, variant: str | None) -> None:
    global _speaker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop)
    _speaker = Speaker(voices, threads, out, alignments, variant)


def _stop(signum: int, frame) -> None:
    if _speaking:
        raise Interrupted(signum)  # through the WAV being written (its temporary removed), to _speak
    os._exit(128 + signum)  # between batches: nothing to clean up


def _speak(items: list[dict]) -> list[dict]:
    global _speaking
    _speaking = True
    try:
        return _speaker.batch(items)
    except Interrupted as exc:  # not sent back as the batch's result: the worker is done
        os._exit(exc.exit_code)
    finally:
        _speaking = False


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Abandon what the pool has in flight: nothing more is started, each worker is told to stop (SIGTERM) and killed
    if it is still there after ``STOP_S``."""
    # the pool's own processes (private, but multiprocessing.active_children() would take a caller's other children),
    # read before shutdown() forgets them
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
    for worker in workers:
        worker.join(STOP_S)
        if worker.is_alive():
            worker.kill()
            worker.join()


def run(items: list[dict], *, voices: dict[str, str], out: str, workers: int, threads: int, alignments: bool,
        variant: str | None, batch_size: int,
        on_start: Callable[[ProcessPoolExecutor], None] | None = None) -> Iterator[dict]:
    """Yield a result row (a manifest row, or ``{"id", "error"}``) for every item, in the order they finish."""
    todo = list(items)
    deaths: dict[str, int] = {}
    context = multiprocessing.get_context("spawn")  # no onnxruntime thread pools inherited half-made
    while todo:
        batches = [todo[k:k + batch_size] for k in range(0, len(todo), batch_size)]
        finished: set[str] = set()
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_start,
                                 initargs=(voices, threads, out, alignments, variant)) as pool:
            if on_start is not None:
                on_start(pool)
            pending = {}
            queue = iter(batches)
            try:
                for batch in list(itertools.islice(queue, workers * 2)):  # two in flight per worker
                    pending[pool.submit(_speak, batch)] = batch
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        rows = future.result()  # BrokenProcessPool when a worker died: its batch still pending
                        del pending[future]
                        for row in rows:
                            yield row
                            if FATAL in row:  # no worker can speak: the driver stops the job
                                return
                            finished.add(row["id"])
                        following = next(queue, None)
                        if following is not None:
                            pending[pool.submit(_speak, following)] = following
            except BrokenProcessPool:
                in_flight = [item for batch in pending.values() for item in batch if item["id"] not in finished]
                for item in in_flight:
                    deaths[item["id"]] = deaths.get(item["id"], 0) + 1
                pool.shutdown(wait=False, cancel_futures=True)
                logger.warning("a worker process died: a new pool speaks the %d items not yet recorded",
                               len([i for i in todo if i["id"] not in finished]))
            except BaseException:  # stopped (Interrupted, the driver's own error, or the caller closed us)
                _stop_workers(pool)
                raise
        given_up = [item for item in todo if item["id"] not in finished and deaths.get(item["id"], 0) >= MAX_DEATHS]
        for item in given_up:
            finished.add(item["id"])
            yield {"id": item["id"], "error": f"a worker process died while speaking it, {MAX_DEATHS} times"}
        todo = [item for item in todo if item["id"] not in finished]
