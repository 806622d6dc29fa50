"""Hard negatives mined from the current model: ``objective.hard_negatives: {mine_every: E, k: K}``.

A mining round runs at the start of epochs ``E, 2E, 3E, ...``; the first ``E`` epochs train without hard
negatives (a model at initialisation ranks at random, so its "hard" negatives would be random ones).
A round:

1. embeds every training item with the model as it is: evaluation mode, no gradient, in batches of
   ``eval.batch_size``, the first value of a multi-valued modality (a progress bar on the main process);
2. for each ordered pair ``a -> b`` of modalities the objective trains on (InfoNCE's ``pairs``; every
   pair for SigLIP and Symile) finds, by an exact search (a matrix product, block by block), the ``K``
   items whose ``b`` embedding is nearest to the item's ``a`` embedding: negatives in the target
   modality, as MM-Embed's modality-aware hard negatives. The item itself and its exact duplicates
   (:class:`~omnibind.data.negatives.Duplicates`) are left out, and so are items without ``b``;
3. keeps ``K`` per item, taken from its pairs in turn (the nearest of each pair, then the second, ...),
   each item once.

The table goes into the checkpoint, so a resumed run uses the negatives the uninterrupted run did; a
round neither draws random numbers nor changes the data order. Under torchrun every process mines (they
hold the same model) and rank 0's table is broadcast, so all use the same one.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from omnibind.config import RunConfig
from omnibind.data.negatives import Duplicates, NegativeTable, item_batches
from omnibind.data.views import ViewPick
from omnibind.model import OmniModel
from omnibind.objectives.functional import pair_indices
from omnibind.training.precision import Precision

# Scores per block of the search ([queries, candidates] float32: 16 MiB).
_BLOCK_ELEMENTS = 1 << 22


def training_pairs(cfg: RunConfig) -> list[tuple[str, str]]:
    """The ordered modality pairs ``(query, target)`` the objective trains on."""
    names = list(cfg.modalities)
    pairs = cfg.objective.options.get("pairs", "all") if cfg.objective.name == "infonce" else "all"
    return [(names[a], names[b]) for i, j in pair_indices(names, pairs) for a, b in ((i, j), (j, i))]


@torch.no_grad()
def embed_items(
    model: OmniModel, data: Any, batch_size: int, precision: Precision, progress: bool = False
) -> tuple[dict[str, Tensor], Tensor]:
    """Every item of ``data`` embedded in evaluation mode: ``({m: [N, D]} float32, bool[N, M])``."""
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    parts: dict[str, list[Tensor]] = {m: [] for m in model.modalities}
    presents = []
    total = (len(data) + batch_size - 1) // batch_size
    try:
        batches = item_batches(data, batch_size, ViewPick("first"))
        for batch in tqdm(batches, total=total, desc="mining: embedding", disable=not progress, leave=False):
            with precision.autocast():
                embeddings = model.encode(batch)
            for name, z in embeddings.items():
                parts[name].append(z.float())
            presents.append(batch.present)
    finally:
        model.train(was_training)
    return {m: torch.cat(v) for m, v in parts.items()}, torch.cat(presents)


def nearest_targets(
    query: Tensor, target: Tensor, has_query: Tensor, has_target: Tensor, duplicates: Duplicates, k: int
) -> Tensor:
    """``long[N, k]``: for each item with a query value, the ``k`` items whose target embedding is nearest
    to it (highest inner product, best first), never the item itself or a duplicate; ``-1`` elsewhere."""
    n, device = query.shape[0], query.device
    out = torch.full((n, k), -1, dtype=torch.long)
    queries = torch.nonzero(has_query.cpu()).flatten()
    candidates = torch.nonzero(has_target.cpu()).flatten()
    if candidates.numel() == 0 or queries.numel() == 0:
        return out
    column = torch.full((n,), -1, dtype=torch.long)
    column[candidates] = torch.arange(len(candidates))
    pool = target[candidates.to(device)]  # [C, D]
    take = min(k, len(candidates))
    block = max(1, _BLOCK_ELEMENTS // len(candidates))
    for start in range(0, len(queries), block):
        q = queries[start : start + block]
        scores = query[q.to(device)] @ pool.T  # [q, C]
        position, twin = duplicates.of(q)
        rows = torch.cat([torch.arange(len(q)), position])  # the item itself, then its duplicates
        cols = column[torch.cat([q, twin])]
        keep = cols >= 0
        scores[rows[keep].to(device), cols[keep].to(device)] = float("-inf")
        values, best = scores.topk(take, dim=1)
        found = candidates[best.cpu()]
        found[torch.isinf(values.cpu())] = -1  # fewer than k candidates left
        out[q, :take] = found
    return out


def interleave(ranked: list[Tensor], k: int) -> Tensor:
    """``long[N, k]``: each item's first ``k`` distinct entries of its per-pair lists taken in turn."""
    n = ranked[0].shape[0]
    flat = torch.stack(ranked, dim=2).reshape(n, -1).tolist()  # rank 1 of every pair, then rank 2, ...
    lists = [list(dict.fromkeys(x for x in row if x >= 0))[:k] for row in flat]
    out = torch.full((n, k), -1, dtype=torch.long)
    for i, found in enumerate(lists):
        if found:
            out[i, : len(found)] = torch.tensor(found, dtype=torch.long)
    return out


class Miner:
    """Mines a :class:`~omnibind.data.negatives.NegativeTable` every ``every`` epochs.

    Args:
        table: the table to fill (its ``mined_epoch`` says which round it holds).
        every: epochs between rounds (``objective.hard_negatives.mine_every``).
        k: negatives per item.
        pairs: the ``(query, target)`` modality pairs to mine (:func:`training_pairs`).
        batch_size: items per embedding batch.
        precision: the run's number format.
        progress: show a progress bar.
    """

    def __init__(
        self,
        table: NegativeTable,
        every: int,
        k: int,
        pairs: list[tuple[str, str]],
        batch_size: int,
        precision: Precision,
        progress: bool = False,
    ) -> None:
        self.table = table
        self.every = every
        self.k = k
        self.pairs = pairs
        self.batch_size = batch_size
        self.precision = precision
        self.progress = progress

    def due(self, step: int, steps_per_epoch: int) -> int | None:
        """The epoch whose round the table should hold at ``step`` but does not, else ``None``."""
        epoch = step // steps_per_epoch
        round_epoch = epoch - epoch % self.every
        return round_epoch if round_epoch > 0 and self.table.mined_epoch != round_epoch else None

    def mine(self, model: OmniModel, data: Any, epoch: int) -> dict[str, float]:
        """Mine the table from ``model`` for ``epoch``; returns the round's figures (seconds, ...)."""
        t0 = time.perf_counter()
        embeddings, present = embed_items(model, data, self.batch_size, self.precision, self.progress)
        t1 = time.perf_counter()
        names = list(model.modalities)
        ranked = [
            nearest_targets(
                embeddings[a],
                embeddings[b],
                present[:, names.index(a)],
                present[:, names.index(b)],
                self.table.duplicates,
                self.k,
            )
            for a, b in self.pairs
        ]
        self.table.table = interleave(ranked, self.k)
        self.table.mined_epoch = epoch
        t2 = time.perf_counter()
        stats = {
            "mining/epoch": float(epoch),
            "mining/seconds": t2 - t0,
            "mining/embed_seconds": t1 - t0,
            "mining/search_seconds": t2 - t1,
            "mining/negatives_per_item": float((self.table.table >= 0).sum(dim=1).double().mean()),
        }
        self.table.rounds.append(stats)
        return stats
