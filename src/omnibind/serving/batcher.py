"""Dynamic batching of encoder calls: the raw values of many requests embedded in one forward pass.

A forward pass of a transformer over one short text costs nearly as much as over thirty on a CPU (measured
with MiniLM on 2 cores: 12.9 ms for one text, 3.1 ms per text in batches of 32), so a server that embeds
each query alone spends most of its time on overhead. As in infinity's ``BatchHandler`` and
text-embeddings-inference's queue, callers (the worker threads answering requests) submit
``(modality, value)`` and block for their vector; one background thread takes the first waiting value,
collects more for up to ``wait_ms`` (or until ``max_batch`` are waiting), groups them by modality and
calls ``embed(values, modality)`` once per modality under ``torch.no_grad``. Given ``in_flight`` (the
requests being answered), it does not wait when every one of them is already waiting: a lone request
goes at once instead of paying ``wait_ms`` for company that cannot come.

A value that makes its group's call fail must not fail the others: the group is then embedded one value
at a time, so each caller gets its own vector or its own exception (the type ``embed`` raised).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from omnibind.serving.errors import ApiError

Embed = Callable[[list[Any], str], Tensor]  # (values, modality) -> [n, D], e.g. OmniModel.embed


@dataclass(frozen=True)
class BatchStats:
    """Encoder calls made so far: ``batches`` calls embedding ``values`` values, the largest ``largest``."""

    batches: int = 0
    values: int = 0
    largest: int = 0

    @property
    def mean(self) -> float:
        """Values per encoder call (0 before the first)."""
        return self.values / self.batches if self.batches else 0.0


@dataclass
class _Waiting:
    modality: str
    value: Any
    answer: Future[np.ndarray]


class Batcher:
    """Collects values from many threads and embeds them together, one encoder call per modality.

    Args:
        embed: ``(values, modality) -> Tensor[n, D]``, one row per value (the model's ``embed``, on a
            model in eval mode); called only from the batcher's own thread.
        wait_ms: how long the first waiting value waits for others, in milliseconds (> 0).
        max_batch: the most values taken at once; when this many wait, they go without waiting longer.
        in_flight: the number of requests being answered (those waiting here included); the first value
            waits only while there are more of them than values waiting. None: it always waits.

    Example:
        >>> import torch
        >>> batcher = Batcher(lambda values, m: torch.ones(len(values), 4) / 2, wait_ms=1, max_batch=8)
        >>> batcher.embed("text", ["a", "b"])[1].tolist()
        [0.5, 0.5, 0.5, 0.5]
        >>> batcher.close()
    """

    def __init__(
        self, embed: Embed, wait_ms: float, max_batch: int, in_flight: Callable[[], int] | None = None
    ) -> None:
        if not wait_ms > 0 or max_batch < 1:
            raise ValueError(f"wait_ms must be > 0 and max_batch >= 1, got {wait_ms} and {max_batch}")
        self._embed = embed
        self.wait_s = wait_ms / 1000
        self.max_batch = max_batch
        self._in_flight = in_flight
        self._cond = threading.Condition()
        self._waiting: deque[_Waiting] = deque()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._stats = BatchStats()

    # ---- callers ---------------------------------------------------------------------------------
    def submit(self, modality: str, value: Any) -> Future[np.ndarray]:
        """Queue one value; the future holds its unit vector ``float32[D]`` or the exception it raised."""
        answer: Future[np.ndarray] = Future()
        with self._cond:
            if self._closed:
                raise ApiError(503, "the server is shutting down; retry on another instance")
            if self._thread is None:  # started on first use, so an app whose lifespan never ran works too
                self._start_thread()
            self._waiting.append(_Waiting(modality, value, answer))
            self._cond.notify()
        return answer

    def embed(self, modality: str, values: Sequence[Any]) -> list[np.ndarray]:
        """Embed ``values`` of one modality (blocking); raises the first value's exception, if any."""
        answers = [self.submit(modality, v) for v in values]
        return [a.result() for a in answers]

    def stats(self) -> BatchStats:
        with self._cond:
            return self._stats

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Accept values again after :meth:`close` (an app's lifespan starting again)."""
        with self._cond:
            self._closed = False
            if self._thread is None:
                self._start_thread()

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking values, answer those already waiting, and end the thread (within ``timeout`` s)."""
        with self._cond:
            self._closed = True
            thread, self._thread = self._thread, None
            self._cond.notify()
        if thread is not None:
            thread.join(timeout)

    def _start_thread(self) -> None:
        # a daemon: a process that never closes its batcher (a test client without a lifespan) still exits
        self._thread = threading.Thread(target=self._run, name="omnibind-batcher", daemon=True)
        self._thread.start()

    # ---- the batcher's thread --------------------------------------------------------------------
    def _run(self) -> None:
        with torch.no_grad():  # grad mode is per thread: set it in the thread that calls the encoder
            while (batch := self._take()) is not None:
                groups: dict[str, list[_Waiting]] = {}
                for waiting in batch:
                    groups.setdefault(waiting.modality, []).append(waiting)
                for modality, group in groups.items():
                    self._answer(modality, group)

    def _take(self) -> list[_Waiting] | None:
        """The next batch: the first waiting value and those that arrive within ``wait_s`` of taking it
        (while others may come), at most ``max_batch``; None once closed with nothing left to answer."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._waiting) or self._closed)
            if not self._waiting:
                return None
            deadline = time.monotonic() + self.wait_s
            while len(self._waiting) < self.max_batch and not self._closed and self._others_coming():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return [self._waiting.popleft() for _ in range(min(self.max_batch, len(self._waiting)))]

    def _others_coming(self) -> bool:
        return self._in_flight is None or self._in_flight() > len(self._waiting)

    def _answer(self, modality: str, group: list[_Waiting]) -> None:
        try:
            rows = self._rows(modality, [w.value for w in group])
        except Exception:  # noqa: BLE001 - which value failed is unknown: ask each alone below
            rows = None
        if rows is not None:
            for waiting, row in zip(group, rows, strict=True):
                waiting.answer.set_result(row)
            return
        for waiting in group:
            try:
                waiting.answer.set_result(self._rows(modality, [waiting.value])[0])
            except Exception as exc:  # noqa: BLE001 - handed to its caller, who raises it
                waiting.answer.set_exception(exc)

    def _rows(self, modality: str, values: list[Any]) -> np.ndarray:
        """``float32[n, D]`` for ``n`` values, counted in the stats."""
        rows = self._embed(values, modality).numpy()
        if rows.shape[0] != len(values):
            raise RuntimeError(f"the encoder of '{modality}' gave {len(rows)} rows for {len(values)} values")
        with self._cond:
            s = self._stats
            self._stats = BatchStats(s.batches + 1, s.values + len(values), max(s.largest, len(values)))
        return rows
