"""Loaded voices and the synthesis workers that every connection shares.

Voices are loaded when first asked for (never to answer ``describe``) and kept while the loaded ones fit
in ``max_loaded_mb`` (the size of the files each runs); past it the least recently used is dropped
(a request still speaking with it finishes first: it holds its own reference).

Fairness: synthesis runs on ``workers`` threads; a request takes a worker for one step of its audio
(a sentence's frontend, or one decoder chunk: tens of milliseconds on a Pi-class CPU, never a whole
sentence), then queues again behind the others (FIFO). So N clients share the CPU 1/N each, and a
newcomer's first audio waits for at most one step of each request ahead of it, not for their whole texts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from runtime.config import VoiceError
from runtime.serve.catalog import VoiceEntry
from runtime.voice import Voice

logger = logging.getLogger(__name__)

_DONE = object()


class Engine:
    def __init__(self, catalog: dict[str, VoiceEntry], *, workers: int = 1, threads: int | None = None,
                 max_loaded_mb: float = 512.0):
        if workers < 1:
            raise ValueError("--workers must be at least 1")
        self.catalog = catalog
        self.threads = threads
        self.max_loaded_bytes = max_loaded_mb * 1024 * 1024
        self.loaded: OrderedDict[str, Voice] = OrderedDict()
        self._load_locks: dict[str, asyncio.Lock] = {}
        self._slots = asyncio.Semaphore(workers)  # FIFO: waiters are woken in the order they came
        self._pool = ThreadPoolExecutor(max_workers=workers + 1, thread_name_prefix="vits-edge")
        self.loads = 0  # voices loaded so far (for tests and logs)

    async def voice(self, name: str) -> Voice:
        """The loaded voice ``name`` (loading it, and dropping the least recently used past the cap)."""
        if name in self.loaded:
            self.loaded.move_to_end(name)
            return self.loaded[name]
        lock = self._load_locks.setdefault(name, asyncio.Lock())
        async with lock:
            if name not in self.loaded:
                entry = self.catalog[name]
                start = time.perf_counter()
                loop = asyncio.get_running_loop()
                try:
                    voice = await loop.run_in_executor(self._pool, lambda: Voice.load(entry.model,
                                                                                      threads=self.threads))
                except (OSError, VoiceError) as exc:
                    raise VoiceError(f"voice {name} could not be loaded: {exc}") from exc
                self.loads += 1
                logger.info("loaded voice %s (%s) in %.2f s", name, entry.model, time.perf_counter() - start)
                self.loaded[name] = voice
                self._evict(keep=name)
            self.loaded.move_to_end(name)
            return self.loaded[name]

    def _evict(self, keep: str) -> None:
        while len(self.loaded) > 1 and sum(self.catalog[n].size_bytes for n in self.loaded) > self.max_loaded_bytes:
            name = next(n for n in self.loaded if n != keep)
            del self.loaded[name]
            logger.info("unloaded voice %s (over --max-loaded-mb %.0f)", name, self.max_loaded_bytes / 2**20)

    async def next(self, chunks: Iterator):
        """One step of a request's audio on a worker, after the requests queued before it: the next item of
        ``chunks``, or None when it is done."""
        async with self._slots:
            item = await asyncio.get_running_loop().run_in_executor(self._pool, next, chunks, _DONE)
        return None if item is _DONE else item

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
