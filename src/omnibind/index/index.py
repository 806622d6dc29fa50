"""``Index``: items embedded by one model, stored and searched by a backend (``backends/``): a local
directory by default (``store.py`` + ``search.py``), or a Qdrant collection.

Example (a model trained by ``omnibind train``)::

    from omnibind.index import Index, Query

    index = Index.create("runs/demo/index", "runs/demo/model")
    index.add(records)                                  # Records, or a prepared Dataset
    result = index.search({"caption": "a red circle"}, target="image", k=5, where={"split": "test"})
    for hit in result.hits:
        print(hit.id, round(hit.score, 3), hit.modality)
    index.search(Query(like=result.hits[0].id), k=5)    # more like this
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from omnibind.errors import DataError
from omnibind.index.backends import Backend, create_backend, is_url, open_backend
from omnibind.index.query import Query, as_query, check_vector, compose
from omnibind.index.search import MAX_K, Hit, SearchResult, SearchSettings, adaptive_cut, check_where
from omnibind.index.store import (
    IndexStoreError,
    ModelMismatchError,
    SearchError,
    UnknownItemError,
    model_hash,
    raw_columns,
)
from omnibind.registry import nearest

OnCommit = Callable[[int, list[str]], None]


def _model_identity(model: Any) -> tuple[Any, Path | None, str]:
    """``(model or None, model dir, sha256)`` for a model folder or an in-memory ``OmniModel``."""
    from omnibind.model import OmniModel

    if isinstance(model, OmniModel):
        with tempfile.TemporaryDirectory() as tmp:
            model.save(tmp)
            return model, None, model_hash(tmp)
    path = Path(model)
    if not (path / "config.json").is_file() and (path / "model" / "config.json").is_file():
        path = path / "model"  # a run directory
    return None, path.resolve(), model_hash(path) if (path / "config.json").is_file() else ""


class Index:
    """A searchable collection of items embedded by one model.

    Use :meth:`create` or :meth:`open`, not the constructor. Where the items live is the backend's
    business (``index/backends/``): a local directory by default, or a Qdrant collection when the location
    is a ``qdrant://HOST:PORT/COLLECTION`` or ``qdrant+path://DIR/COLLECTION`` URL; every method here works
    the same over either.

    Args:
        backend: the storage and vector search.
        model: the model, if already loaded (else loaded on the first raw-value query or add).
        device: where a model loaded from its folder embeds (None: the CPU).
    """

    def __init__(self, backend: Backend, model: Any = None, device: str | None = None) -> None:
        self.backend = backend
        self.device = device  # where the model embeds (None: the CPU); vectors and search stay on the CPU
        self.meta: dict[str, Any] = backend.meta
        self.path: Path | str = getattr(backend, "path", backend.location)
        self.location = backend.location
        self.modalities: list[str] = list(self.meta["modalities"])
        self.kinds: dict[str, str] = dict(self.meta["modalities"])
        self.dim = int(self.meta["dim"])
        self.similarity: str = self.meta["joint_similarity"]
        self._model = model

    # ---- lifecycle -------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        model: Any,
        settings: SearchSettings | None = None,
        device: str | None = None,
    ) -> Index:
        """Make an empty index at ``path`` (a directory, or a Qdrant URL) for ``model`` (a model or run
        folder, or an ``OmniModel``; an in-memory model is saved into ``path/model``, or for a Qdrant
        index into a temporary folder that is refused: save it first). A model loaded from a folder embeds
        on ``device`` (``auto | cpu | cuda[:N] | mps``; default the CPU)."""
        if not is_url(path):
            path = Path(path)
            if (path / "index.json").exists():
                raise IndexStoreError(f"{path} already holds an index; open it, or choose another directory")
        loaded, model_dir, digest = _model_identity(model)
        if loaded is not None:
            if is_url(path):
                raise IndexStoreError(
                    f"{path} is a Qdrant collection: it stores the model's path, so save the model first "
                    "(model.save(DIR)) and pass DIR"
                )
            model_dir = loaded.save(Path(path) / "model").resolve()
            digest = model_hash(model_dir)
        elif not digest:
            raise IndexStoreError(f"{model} is not an omnibind model or run folder (no config.json)")
        if loaded is None:
            from omnibind.model import OmniModel

            loaded = OmniModel.load(model_dir, device=device)
        settings = settings or SearchSettings()
        meta = {
            "model": {"path": str(model_dir), "sha256": digest},
            "dim": loaded.dim,
            "modalities": {m: loaded.config.modalities[m].kind for m in loaded.modalities},
            "joint_similarity": loaded.joint_similarity,
            "settings": dataclasses.asdict(settings),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        return cls(create_backend(path, meta, settings), loaded, device)

    @classmethod
    def open(
        cls,
        path: str | Path,
        model: Any = None,
        settings: SearchSettings | None = None,
        device: str | None = None,
    ) -> Index:
        """Open an index (a directory or a Qdrant URL). A ``model`` given here must be the one the index
        was built with; the model loaded from the stored path embeds on ``device`` (default the CPU)."""
        backend = open_backend(path, settings)
        loaded = None
        if model is not None:
            loaded, model_dir, digest = _model_identity(model)
            _check_identity(backend, digest, str(model_dir or "the given model"))
        return cls(backend, loaded, device)

    @property
    def settings(self) -> SearchSettings:
        """The search settings in force (stored with the index, or given to :meth:`open`)."""
        return self.backend.settings

    @property
    def model(self) -> Any:
        """The model (loaded from the path stored with the index on first use, after checking its hash)."""
        if self._model is None:
            from omnibind.model import OmniModel

            info = self.meta["model"]
            model_dir = Path(info["path"])
            if not (model_dir / "config.json").is_file():
                raise ModelMismatchError(
                    f"the model this index was built with ({model_dir}) is gone; raw-value queries and adds "
                    "need it (vector and id queries still work)"
                )
            _check_identity(self.backend, model_hash(model_dir), str(model_dir))
            self._model = OmniModel.load(model_dir, device=self.device)
        return self._model

    def __len__(self) -> int:
        return len(self.backend)

    def ids(self) -> list[str]:
        """Ids of the items, in insertion order."""
        return self.backend.ids()

    def counts(self) -> dict[str, int]:
        """Live embeddings per modality."""
        return self.backend.counts()

    def build_graphs(self) -> None:
        """Build the HNSW graph of every modality with more than ``exact_threshold`` live vectors now,
        rather than in its first search (a server calls this at start; ``index add`` never needs it)."""
        self.backend.prepare()

    def close(self) -> None:
        """Release the backend's files and connections (an index is also closed when collected)."""
        self.backend.close()

    # ---- writes ----------------------------------------------------------------------------------
    def add_embeddings(
        self,
        ids: Sequence[str],
        vectors: Mapping[str, np.ndarray],
        present: np.ndarray | None = None,
        metadata: Sequence[dict[str, Any]] | None = None,
        raw: dict[str, list[dict[str, Any] | None]] | None = None,
        replace: bool = False,
    ) -> None:
        """Commit one batch of already-embedded items (one LanceDB commit: all of it or nothing).

        Inputs:
            vectors[m]: ``float32[N, D]`` (a modality left out is absent for every item);
            present: ``bool[N, M]`` in ``self.modalities`` order (default: the given modalities).
        """
        ids = [str(i) for i in ids]
        n = len(ids)
        if present is None:
            present = np.array([[m in vectors for m in self.modalities]] * n, bool).reshape(
                n, len(self.modalities)
            )
        unknown = set(vectors) - set(self.modalities)
        if unknown:
            raise SearchError(
                f"unknown modality {sorted(unknown)}; this index has: {', '.join(self.modalities)}"
            )
        full = {}
        for j, m in enumerate(self.modalities):
            v = np.asarray(vectors.get(m, np.zeros((n, self.dim))), np.float32).reshape(n, self.dim)
            if not np.isfinite(v[present[:, j]]).all():
                raise SearchError(f"embeddings of '{m}' contain NaN or infinite values")
            full[m] = v
        self._check_ids(ids, replace)
        self.backend.write(ids, [dict(md) for md in metadata or [{}] * n], full, present, raw, replace)

    def _check_ids(self, ids: list[str], replace: bool) -> None:
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise DataError("the id appears twice in one add", record_id=dup)
        if not replace:
            live = self.backend.live(ids)
            taken = [i for i in ids if i in live]
            if taken:
                raise DataError(
                    f"already in the index ({len(taken)} ids); use update to replace items",
                    record_id=taken[0],
                )

    def add(
        self,
        items: Any,
        batch_size: int = 1024,
        on_commit: OnCommit | None = None,
        progress: bool = False,
        replace: bool = False,
    ) -> int:
        """Embed and add records (a list of :class:`~omnibind.data.record.Record`) or a prepared
        :class:`~omnibind.data.dataset.Dataset`, committing every ``batch_size`` items.

        Each commit is atomic; ``on_commit(total_so_far, ids_of_batch)`` runs after it (the items are then
        acknowledged: they survive a crash). Metadata of an item: its facts, its ``metadata``, and
        ``label`` and ``split`` when set. Returns the number of items added.
        """
        from tqdm.auto import tqdm

        from omnibind.data.dataset import Dataset, prepare_dataset
        from omnibind.evaluation.evaluate import embed_dataset

        items = _records_or_dataset(items)
        records = items if isinstance(items, list) else items.records
        done = 0
        bar = tqdm(total=len(records), desc="indexing", unit="item", disable=not progress)
        for start in range(0, len(records), batch_size):
            chunk = records[start : start + batch_size]
            if isinstance(items, Dataset):
                ds = items.subset(np.arange(start, start + len(chunk)))
            else:
                ds, _ = prepare_dataset(chunk, self.model.kinds, progress=False)
            embeddings, present = embed_dataset(self.model, ds)
            self.add_embeddings(
                [r.id for r in chunk],
                {m: e.numpy() for m, e in embeddings.items()},
                present.numpy(),
                [_item_metadata(r) for r in chunk],
                self._raw(chunk),
                replace=replace,
            )
            done += len(chunk)
            bar.update(len(chunk))
            if on_commit is not None:
                on_commit(done, [r.id for r in chunk])
        bar.close()
        return done

    def _raw(self, chunk: list[Any]) -> dict[str, list[dict[str, Any] | None]]:
        """Per modality, each record's raw-value columns (a file reference, the text), ``None`` if absent."""
        options = {m: self.model.config.modalities[m].options for m in self.modalities}
        return {
            m: [
                raw_columns(self.kinds[m], r.values[m], r.base_dir, options[m]) if m in r.values else None
                for r in chunk
            ]
            for m in self.modalities
        }

    def add_parts(
        self,
        folder: str | Path,
        on_commit: OnCommit | None = None,
        progress: bool = False,
        root: str | None = None,
    ) -> int:
        """Add the items of an ``omnibind embed ... --out DIR`` folder without encoding them again.

        The parts must come from this index's model (``parts.json`` names it, with its width and
        modalities). The records of the parts' source are read (not decoded) for each item's metadata and
        raw-value references, so the index holds what ``add(records)`` would; one commit per part.

        Raises:
            SearchError: no ``parts.json`` (the embedding did not finish), or parts of another model.
        """
        import pyarrow.parquet as pq
        from tqdm.auto import tqdm

        from omnibind.data.sources import load_source

        folder = Path(folder)
        listing_path = folder / "parts.json"
        if not listing_path.exists():
            raise SearchError(
                f"{folder} has no parts.json: the embedding has not finished; rerun `omnibind embed` with "
                "the same arguments (it skips the parts already written)"
            )
        listing = json.loads(listing_path.read_text())
        ours = {"dim": self.model.dim, "modalities": list(self.model.modalities)}
        theirs = {"dim": listing.get("dim"), "modalities": listing.get("modalities")}
        digest = self.meta["model"]["sha256"]
        if ours != theirs or listing.get("model") != digest:
            raise SearchError(
                f"{folder} was embedded by another model (sha256 {str(listing.get('model'))[:12]}, "
                f"{theirs}); this index's model is sha256 {digest[:12]}, {ours}"
            )
        records = {
            r.id: r for r in load_source(listing["source"], root=root, modalities=self.modalities).records
        }
        done = 0
        bar = tqdm(total=int(listing["items"]), desc="indexing", unit="item", disable=not progress)
        from omnibind.evaluation.parts import part_problem

        for part in listing["parts"]:  # every part checked before the first is added
            problem = part_problem(folder / part["file"], int(part["items"]))
            if problem is not None:
                raise SearchError(
                    f"{folder / part['file']} is damaged ({problem}); rerun `omnibind embed` with the same "
                    "arguments: it embeds that part again (nothing was added)"
                )
        for part in listing["parts"]:
            table = pq.read_table(folder / part["file"]).to_pydict()
            ids = [str(i) for i in table["id"]]
            missing = [i for i in ids if i not in records]
            if missing:
                raise SearchError(
                    f"{part['file']}: ids {missing[:3]} are not in the source {listing['source']} any more"
                )
            chunk = [records[i] for i in ids]
            present = np.array([[table[m][k] is not None for m in self.modalities] for k in range(len(ids))])
            present = present.reshape(len(ids), len(self.modalities))
            vectors = {
                m: np.array(
                    [v if v is not None else [0.0] * self.model.dim for v in table[m]], dtype=np.float32
                ).reshape(len(ids), self.model.dim)
                for m in self.modalities
            }
            self.add_embeddings(ids, vectors, present, [_item_metadata(r) for r in chunk], self._raw(chunk))
            done += len(ids)
            bar.update(len(ids))
            if on_commit is not None:
                on_commit(done, ids)
        bar.close()
        return done

    def update(
        self,
        items: Any,
        batch_size: int = 1024,
        on_commit: OnCommit | None = None,
        progress: bool = False,
        upsert: bool = True,
    ) -> int:
        """Replace the items with the same ids, committing every ``batch_size`` items (as :meth:`add`).

        With ``upsert`` (the default) items whose id is not in the index are added; without it such ids
        raise ``UnknownItemError`` naming them, before anything is written. Returns the number of items
        written.
        """
        if not upsert:
            items = _records_or_dataset(items)  # a generator is read once, here
            records = items if isinstance(items, list) else items.records
            live = self.backend.live([str(r.id) for r in records])
            missing = [r.id for r in records if str(r.id) not in live]
            if missing:
                shown = ", ".join(repr(i) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
                raise UnknownItemError(
                    f"{len(missing)} of the ids to update are not in {self.path} ({shown}); nothing was "
                    "written"
                )
        return self.add(items, batch_size=batch_size, on_commit=on_commit, progress=progress, replace=True)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete items by id (one commit); unknown ids raise ``UnknownItemError``. Returns the count."""
        ids = [str(i) for i in ids]
        live = self.backend.live(ids)
        missing = [i for i in ids if i not in live]
        if missing:
            raise UnknownItemError(
                f"no item with id {missing[0]!r} in {self.location} ({len(missing)} unknown ids)"
            )
        self.backend.delete(ids)
        return len(ids)

    def compact(self) -> None:
        """Reclaim the space of deleted and replaced items (local: rewrite the table, drop old versions)."""
        self.backend.compact()

    # ---- reads -----------------------------------------------------------------------------------
    def get(self, item_id: str) -> dict[str, Any]:
        """An item: ``{"id", "metadata", "modalities": {m: {"value", "path", "has_bytes"}}}``."""
        self._position(item_id)
        found = self.backend.item(item_id)
        if found is None:
            raise UnknownItemError(f"no item with id {item_id!r} in {self.location}")
        return {"id": item_id, **found}

    def media(self, item_id: str, modality: str) -> bytes | None:
        """The copied bytes of an item's image/audio value (None if nothing was copied)."""
        self._check_modality(modality, "modality")
        self._position(item_id)
        return self.backend.media(item_id, modality)

    def embedding(self, item_id: str, modality: str) -> np.ndarray | None:
        """An item's embedding ``[D]`` in one modality, or None where absent."""
        self._check_modality(modality, "modality")
        self._position(item_id)
        return self.backend.embedding(item_id, modality)

    def _position(self, item_id: str) -> None:
        if not self.backend.has(item_id):
            raise UnknownItemError(f"no item with id {item_id!r} in {self.location}")

    def _check_modality(self, name: str, what: str) -> None:
        if name not in self.modalities:
            raise SearchError(f"unknown {what} '{name}'; this index has: {', '.join(self.modalities)}")

    # ---- search ----------------------------------------------------------------------------------
    def query_vector(self, query: Any, target: str | None = None) -> tuple[np.ndarray, str | None]:
        """The composed ``[D]`` query vector and the id to leave out (for "more like this")."""
        q = as_query(query)
        vectors: list[np.ndarray] = []
        for m, value in q.values.items():
            self._check_modality(m, "query modality")
            try:
                z = self.model.embed([value], m).numpy()[0]
            except (ValueError, OSError) as exc:
                raise SearchError(f"query value for '{m}' cannot be used: {exc}") from None
            vectors.append(z)
        for m, v in q.vectors.items():
            if m:
                self._check_modality(m, "query modality")
            vectors.append(check_vector(v, self.dim, f"query vector{' for ' + repr(m) if m else ''}"))
        exclude = None
        if q.like is not None:
            vectors.append(self._like_vector(q, target))
            exclude = q.like
        return compose(vectors, self.similarity), exclude

    def _like_vector(self, q: Query, target: str | None) -> np.ndarray:
        assert q.like is not None
        self._position(q.like)
        order = [q.like_modality] if q.like_modality else ([target] if target else []) + self.modalities
        for m in order:
            assert m is not None
            self._check_modality(m, "modality")
            z = self.embedding(q.like, m)
            if z is not None:
                return z
        raise SearchError(f"item {q.like!r} has no embedding in '{q.like_modality}'")

    def search(
        self,
        query: Any,
        target: str | None = None,
        k: int = 10,
        where: Mapping[str, Any] | None = None,
        min_score: float | None = None,
        max_gap: float | None = None,
    ) -> SearchResult:
        """Rank items for a query.

        Args:
            query: a :class:`Query`, a ``{modality: raw value}`` dict (several modalities: a composed
                query scored by the model's joint similarity), or a vector ``[D]``.
            target: rank the embeddings of this modality; None ranks every modality and scores an item by
                its best-matching one (``Hit.modality`` says which).
            k: at most this many hits, 1..10000.
            where: metadata filter (``{"colour": "red", "size": {"gte": 2}, "split": ["val", "test"]}``),
                applied before ranking. A key that no item has raises ``SearchError`` (a typo would
                otherwise match nothing); a key only some items have matches only those.
            min_score: stop before the first hit scoring below this.
            max_gap: stop before the first hit scoring more than this below the previous one.

        Returns:
            :class:`SearchResult`, hits best first, with ``stopped_because``.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
            raise SearchError(f"k must be an integer from 1 to {MAX_K}, got {k!r}")
        for name, v in (("min_score", min_score), ("max_gap", max_gap)):
            if v is not None and not np.isfinite(v):
                raise SearchError(f"{name} must be a finite number, got {v!r}")
        if target is not None:
            self._check_modality(target, "target modality")
        if where:  # a bad filter is refused before the query is embedded
            self._check_keys(where)
            check_where(where)
        vector, exclude = self.query_vector(query, target)
        targets = [target] if target else self.modalities
        lists, method = self.backend.search(vector, targets, k, where or None, exclude)
        best: dict[str, tuple[float, str, dict[str, Any]]] = {}
        for m in targets:
            for item, score, md in lists.get(m, []):
                if item not in best or score > best[item][0]:
                    best[item] = (float(score), m, md)
        ranked = sorted(best.items(), key=lambda kv: -kv[1][0])[:k]
        keep, why = adaptive_cut([s for _, (s, _, _) in ranked], k, min_score, max_gap)
        hits = [Hit(i, s, m, md) for i, (s, m, md) in ranked[:keep]]
        return SearchResult(hits, why, method)

    def metadata_keys(self) -> list[str]:
        """The metadata keys that at least one live item has, sorted."""
        return self.backend.metadata_keys()

    def _check_keys(self, where: Mapping[str, Any]) -> None:
        """Refuse a filter on a key no item has (with the nearest known key); an empty index has no
        items to judge a key by, so every key passes (and matches nothing)."""
        if not len(self):
            return
        known = self.metadata_keys()
        for key in where:
            if key in known:
                continue
            listed = ", ".join(known[:30]) + (f", ... ({len(known)} in all)" if len(known) > 30 else "")
            has = f"the items of this index have: {listed}" if known else "no item of this index has metadata"
            raise SearchError(f"unknown metadata key '{key}' in the filter{nearest(key, known)}; {has}")

    def search_batch(
        self, vectors: np.ndarray, target: str, k: int | Sequence[int] = 10
    ) -> list[SearchResult]:
        """``search(vector, target, k)`` for each row of ``vectors [Q, D]``, many at once.

        Why: a local index that scans exactly (at most ``exact_threshold`` vectors in ``target``, float32
        storage) ranks the whole batch with one blocked matrix product, which costs about what two or three
        single scans do; a server answering concurrent queries uses it. Elsewhere (a graph, a quantized
        first stage, Qdrant) each row is one :meth:`search`. ``k`` is one value or one per row. The hits
        are those of :meth:`search` (scores equal to float32 rounding: the product sums in another order).
        """
        self._check_modality(target, "target modality")
        qs = np.stack([check_vector(v, self.dim) for v in np.asarray(vectors)]) if len(vectors) else None
        ks = [k] * len(vectors) if isinstance(k, (int, np.integer)) else list(k)
        if len(ks) != len(vectors):
            raise SearchError(f"k: {len(ks)} values for {len(vectors)} query vectors")
        for one in ks:
            if isinstance(one, bool) or not isinstance(one, (int, np.integer)) or not 1 <= one <= MAX_K:
                raise SearchError(f"k must be an integer from 1 to {MAX_K}, got {one!r}")
        if qs is None:
            return []
        if len(qs) == 1:  # a lone query: the single-vector scan is the faster loop
            return [self.search(qs[0], target=target, k=ks[0])]
        lists = self.backend.search_batch(qs, target, max(ks))
        if lists is None:
            return [self.search(q, target=target, k=one) for q, one in zip(qs, ks, strict=True)]
        out = []
        for ranked, one in zip(lists, ks, strict=True):
            ranked = ranked[:one]
            keep, why = adaptive_cut([score for _, score, _ in ranked], one, None, None)
            out.append(SearchResult([Hit(i, sc, target, md) for i, sc, md in ranked[:keep]], why, "exact"))
        return out

    def search_many(self, vectors: np.ndarray, target: str, k: int = 10) -> list[list[tuple[str, float]]]:
        """Exact top-``k`` for a batch of raw query vectors ``[Q, D]`` against one target (batched
        matrix products); returns per query ``[(id, score), ...]`` best first."""
        self._check_modality(target, "target modality")
        if not 1 <= k <= MAX_K:
            raise SearchError(f"k must be an integer from 1 to {MAX_K}, got {k!r}")
        qs = np.stack([check_vector(v, self.dim) for v in np.asarray(vectors)])
        return self.backend.search_many(qs, target, k)


def _check_identity(backend: Backend, digest: str, where: str) -> None:
    expected = backend.meta["model"]["sha256"]
    if digest != expected:
        raise ModelMismatchError(
            f"{where} is not the model this index was built with (model sha256 {digest[:12]}..., index "
            f"expects {expected[:12]}... from {backend.meta['model']['path']}); rebuild the index with this "
            "model or use the original one"
        )


def _records_or_dataset(items: Any) -> Any:
    """``items`` as a prepared ``Dataset`` (kept) or a list of records (an iterable is read once)."""
    from omnibind.data.dataset import Dataset

    return items if isinstance(items, Dataset) else list(items)


def _item_metadata(record: Any) -> dict[str, Any]:
    md: dict[str, Any] = dict(record.facts or {})
    md.update(record.metadata or {})
    if record.label is not None:
        md.setdefault("label", record.label)
    if record.split is not None:
        md.setdefault("split", record.split)
    return md
