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

A value that makes its group's call fail must not fail the others: the group is then split in halves until
each caller gets its own vector or its own exception (the type ``embed`` raised).

A value may come with a search (``submit(m, value, search=(target, k))``): the batcher then also ranks,
in its own thread, all the batch's vectors bound for one target with one ``search(target, vectors, ks)``
call (a blocked matrix product over the index instead of one scan per query), and the caller's future
holds that call's answer for it. The request then needs no second trip through a worker thread.
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
# (target, vectors [n, D], ks [n]) -> one answer per row (a search response), e.g. Service.search_rows
Search = Callable[[str, np.ndarray, list[int]], list[Any]]


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
    answer: Future[Any]
    search: tuple[str, int] | None = None  # (target, k): answer with the search, not the vector


class Batcher:
    """Collects values from many threads and embeds them together, one encoder call per modality.

    Args:
        embed: ``(values, modality) -> Tensor[n, D]``, one row per value (the model's ``embed``, on a
            model in eval mode); called only from the batcher's own thread.
        wait_ms: how long the first waiting value waits for others, in milliseconds (> 0).
        max_batch: the most values taken at once; when this many wait, they go without waiting longer.
        in_flight: the number of requests being answered (those waiting here included); the first value
            waits only while there are more of them than values waiting. None: it always waits.
        search: ``(target, vectors [n, D], ks) -> answers``, called from the batcher's thread for the
            values submitted with a search; None: such values are refused.

    Example:
        >>> import torch
        >>> batcher = Batcher(lambda values, m: torch.ones(len(values), 4) / 2, wait_ms=1, max_batch=8)
        >>> batcher.embed("text", ["a", "b"])[1].tolist()
        [0.5, 0.5, 0.5, 0.5]
        >>> batcher.close()
    """

    def __init__(
        self,
        embed: Embed,
        wait_ms: float,
        max_batch: int,
        in_flight: Callable[[], int] | None = None,
        search: Search | None = None,
    ) -> None:
        if not wait_ms > 0 or max_batch < 1:
            raise ValueError(f"wait_ms must be > 0 and max_batch >= 1, got {wait_ms} and {max_batch}")
        self._embed = embed
        self.wait_s = wait_ms / 1000
        self.max_batch = max_batch
        self._in_flight = in_flight
        self._search = search
        self._cond = threading.Condition()
        self._waiting: deque[_Waiting] = deque()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._stats = BatchStats()

    # ---- callers ---------------------------------------------------------------------------------
    def submit(self, modality: str, value: Any, search: tuple[str, int] | None = None) -> Future[Any]:
        """Queue one value; the future holds its unit vector ``float32[D]`` (with ``search=(target, k)``:
        the answer of the search for it) or the exception it raised."""
        if search is not None and self._search is None:
            raise ValueError("this batcher was made without a search function")
        answer: Future[Any] = Future()
        with self._cond:
            if self._closed:
                raise ApiError(503, "the server is shutting down; retry on another instance")
            if self._thread is None:  # started on first use, so an app whose lifespan never ran works too
                self._start_thread()
            self._waiting.append(_Waiting(modality, value, answer, search))
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
                searches: list[tuple[_Waiting, np.ndarray]] = []
                for modality, group in groups.items():
                    searches += self._answer(modality, group)
                self._rank(searches)

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

    def _answer(self, modality: str, group: list[_Waiting]) -> list[tuple[_Waiting, np.ndarray]]:
        """Embed a group; answer those that wanted a vector, return those that want a search."""
        rows = self._embed_or_split(modality, group)
        searches = []
        for waiting, row in zip(group, rows, strict=True):
            if row is None:
                continue
            if waiting.search is None:
                waiting.answer.set_result(row)
            else:
                searches.append((waiting, row))
        return searches

    def _embed_or_split(self, modality: str, group: list[_Waiting]) -> list[np.ndarray | None]:
        """One row per value, None where the value failed (its caller then has the exception). A failed
        call is split in halves, so one bad value costs about log2(n) extra calls, not n."""
        try:
            return list(self._rows(modality, [w.value for w in group]))
        except Exception as exc:  # noqa: BLE001 - which value failed is unknown: halve the group
            if len(group) == 1:
                group[0].answer.set_exception(exc)  # handed to its caller, who raises it
                return [None]
        half = len(group) // 2
        return self._embed_or_split(modality, group[:half]) + self._embed_or_split(modality, group[half:])

    def _rank(self, searches: list[tuple[_Waiting, np.ndarray]]) -> None:
        """One ``search`` call per target for the embedded values that came with a search."""
        by_target: dict[str, list[tuple[_Waiting, np.ndarray]]] = {}
        for waiting, row in searches:
            assert waiting.search is not None
            by_target.setdefault(waiting.search[0], []).append((waiting, row))
        for target, group in by_target.items():
            assert self._search is not None
            try:
                vectors = np.stack([row for _, row in group])
                answers = self._search(target, vectors, [w.search[1] for w, _ in group])  # type: ignore[index]
            except Exception as exc:  # noqa: BLE001 - the same failure for each caller of the group
                for waiting, _ in group:
                    waiting.answer.set_exception(exc)
                continue
            for (waiting, _), answer in zip(group, answers, strict=True):
                waiting.answer.set_result(answer)

    def _rows(self, modality: str, values: list[Any]) -> np.ndarray:
        """``float32[n, D]`` for ``n`` values, counted in the stats."""
        rows = self._embed(values, modality).numpy()
        if rows.shape[0] != len(values):
            raise RuntimeError(f"the encoder of '{modality}' gave {len(rows)} rows for {len(values)} values")
        with self._cond:
            s = self._stats
            self._stats = BatchStats(s.batches + 1, s.values + len(values), max(s.largest, len(values)))
        return rows
