"""Mean and spread over seeds: several result dicts of one structure folded into one.

Each run of a seeds folder (``RUN/seed-0 .. seed-(N-1)``) yields a nested result dict (test metrics,
robustness curves, importance scores). :func:`aggregate` walks them in parallel and replaces every numeric
leaf by ``{"mean", "std", "n", "values"}``: the mean, the *sample* standard deviation (``ddof=1``, the
spread one would see between fresh seeds), how many seeds had a number there, and the numbers themselves.
With one seed the std is ``0.0``: there is no measured spread, and the report says so (see
:func:`spread_note`). The image-text reproducibility study is the reason for all this: single-seed
differences of a point or two are routinely inside the seed noise.

Rules, leaf by leaf:

- a number (``int``/``float``, not ``bool``) in every result -> ``{"mean", "std", "n", "values"}``;
- ``None`` where some seeds have a number (an AUROC undefined on one seed's test items) -> aggregated
  over the seeds that have one (``n`` says how many); ``None`` everywhere stays ``None``;
- a key missing in some results -> aggregated over the results that have it (same rule);
- a list of dicts that each have a ``"rate"`` (a missing-rate curve) -> aggregated point by point, keeping
  ``"rate"`` as it is; the rates must be the same in every result;
- any other list -> element by element when all have the same length, else an error;
- anything else (strings, booleans) -> kept when equal in every result, else ``{"values": [...]}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

LEAF_KEYS = frozenset({"mean", "std", "n", "values"})


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def summarise(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std", "n", "values"}`` of numbers; ``std`` is the sample std (``ddof=1``), 0 for one value.

    Non-finite values (NaN, inf) are kept in ``values`` but make ``mean``/``std`` NaN, so they cannot hide.

    Example:
        >>> summarise([1.0, 2.0, 3.0])
        {'mean': 2.0, 'std': 1.0, 'n': 3, 'values': [1.0, 2.0, 3.0]}
    """
    data = np.asarray([float(v) for v in values], dtype=np.float64)
    if data.size == 0:
        raise ValueError("summarise needs at least one value")
    std = float(data.std(ddof=1)) if data.size > 1 else 0.0
    return {"mean": float(data.mean()), "std": std, "n": int(data.size), "values": data.tolist()}


def is_summary(value: Any) -> bool:
    """Whether ``value`` is a leaf made by :func:`summarise` (so code can tell raw and aggregated apart)."""
    return isinstance(value, Mapping) and set(value) == LEAF_KEYS


def aggregate(results: Sequence[Any]) -> Any:
    """Fold results of one structure (one per seed) into one, with ``{"mean", "std", "n", "values"}`` leaves.

    Args:
        results: nested dicts / lists / numbers, one per seed, e.g. ``[metrics_seed0, metrics_seed1]``.

    Returns:
        the same structure with every numeric leaf summarised (see the module docstring for every rule).

    Raises:
        ValueError: no results; a place that is a dict in one result and a number in another; curves with
            different rates or lists of different lengths (the message names the place, e.g.
            ``mcar.image[3]``).

    Example:
        >>> aggregate([{"acc": 0.5, "head": "late"}, {"acc": 0.7, "head": "late"}])["acc"]["mean"]
        0.6
    """
    if not results:
        raise ValueError("aggregate needs at least one result")
    return _fold(list(results), "")


def _fold(items: list[Any], where: str) -> Any:
    present = [v for v in items if v is not None]
    if not present:
        return None
    if all(_is_number(v) for v in present):
        return summarise(present)
    if all(isinstance(v, Mapping) for v in present):
        keys: dict[str, None] = {}
        for v in present:
            keys.update(dict.fromkeys(v))
        return {k: _fold([v.get(k) for v in present], f"{where}.{k}" if where else str(k)) for k in keys}
    if all(isinstance(v, list) for v in present):
        if _is_curve(present):
            return _fold_curves(present, where)
        lengths = {len(v) for v in present}
        if len(lengths) > 1:
            raise ValueError(
                f"{where or 'result'}: lists of different lengths across seeds {sorted(lengths)}"
            )
        if all(v == present[0] for v in present) and not any(_has_number(x) for x in present[0]):
            return list(present[0])
        return [_fold([v[i] for v in present], f"{where}[{i}]") for i in range(lengths.pop())]
    if any(isinstance(v, (Mapping, list)) or _is_number(v) for v in present):
        kinds = sorted({type(v).__name__ for v in present})
        raise ValueError(f"{where or 'result'}: not the same structure across seeds ({', '.join(kinds)})")
    if all(v == present[0] for v in present):
        return present[0]
    return {"values": present}


def _has_number(value: Any) -> bool:
    if _is_number(value):
        return True
    if isinstance(value, Mapping):
        return any(_has_number(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_number(v) for v in value)
    return False


def _is_curve(lists: list[list[Any]]) -> bool:
    return all(v and all(isinstance(p, Mapping) and "rate" in p for p in v) for v in lists)


def _fold_curves(curves: list[list[Mapping[str, Any]]], where: str) -> list[dict[str, Any]]:
    rates = [[float(p["rate"]) for p in curve] for curve in curves]
    for other in rates[1:]:
        if len(other) != len(rates[0]) or not all(
            math.isclose(a, b) for a, b in zip(other, rates[0], strict=True)
        ):
            raise ValueError(f"{where or 'curve'}: the rates differ across seeds ({rates[0]} vs {other})")
    out = []
    for i, rate in enumerate(curves[0]):
        point = _fold(
            [{k: v for k, v in curve[i].items() if k != "rate"} for curve in curves], f"{where}[{i}]"
        )
        out.append({"rate": rate["rate"], **point})
    return out


def mean_of(value: Any) -> float | None:
    """The mean of a summarised leaf, or the number itself; ``None`` for anything else."""
    if is_summary(value):
        return float(value["mean"])
    return float(value) if _is_number(value) else None


def std_of(value: Any) -> float:
    """The std of a summarised leaf; 0 for a plain number (one seed has no spread)."""
    return float(value["std"]) if is_summary(value) else 0.0


def pm(leaf: Any, digits: int = 3) -> str:
    """``"0.812 ± 0.010"`` for a summarised leaf, the number for a plain one, ``–`` for nothing."""
    mean = mean_of(leaf)
    if mean is None:
        return "–"
    return f"{mean:.{digits}f} ± {std_of(leaf):.{digits}f}"


def spread_note(n: int) -> str:
    """A sentence for reports: what ``± std`` means for ``n`` seeds."""
    if n <= 1:
        return "One seed: the ± std shown is 0, not a measured spread; train with `--seeds N` to measure it."
    return f"Mean ± sample standard deviation (ddof=1) over {n} seeds."


SEED_PREFIX = "seed-"


def seed_dir(out: str | Path, k: int) -> Path:
    """The folder of the ``k``-th run of a seeds folder: ``out/seed-k``."""
    return Path(out) / f"{SEED_PREFIX}{k}"


def _is_run(path: Path) -> bool:
    from omnibind.model import CONFIG_NAME, model_dir

    return (model_dir(path) / CONFIG_NAME).exists()


def find_runs(path: str | Path, seeds: int | None = None) -> list[Path]:
    """The runs behind ``path``: itself for a run (or model) folder, or the ``seed-*`` runs of a seeds folder.

    Args:
        path: a run folder (``model/`` inside), a model folder, or a folder of ``seed-0``, ``seed-1``, ...
            runs as ``omnibind train --seeds N`` makes.
        seeds: use only the first ``seeds`` runs (by seed number); ``None``: all of them.

    Returns:
        the run folders, seed-0 first.

    Raises:
        OmnibindError: ``path`` is missing or neither kind of folder; ``seeds`` < 1; fewer runs than
            ``seeds``; one of the chosen seed folders holds no finished model.
    """
    from omnibind.errors import OmnibindError

    path = Path(path)
    if seeds is not None and seeds < 1:
        raise OmnibindError(f"--seeds must be at least 1, got {seeds}")
    if not path.exists():
        raise OmnibindError(f"{path} does not exist")
    if _is_run(path):
        if seeds is not None and seeds > 1:
            raise OmnibindError(
                f"{path} is a single run, so --seeds {seeds} cannot be met; train a seeds folder with "
                "`omnibind train CONFIG --out RUN --seeds N`"
            )
        return [path]
    numbered = []
    for child in path.iterdir() if path.is_dir() else []:
        suffix = child.name[len(SEED_PREFIX) :]
        if child.is_dir() and child.name.startswith(SEED_PREFIX) and suffix.isdigit():
            numbered.append((int(suffix), child))
    if not numbered:
        raise OmnibindError(
            f"{path} is neither a run (no model/config.json) nor a folder of seed-* runs "
            "(made by `omnibind train ... --seeds N`)"
        )
    chosen = [p for _, p in sorted(numbered)]
    if seeds is not None:
        if len(chosen) < seeds:
            raise OmnibindError(
                f"--seeds {seeds}: {path} holds only {len(chosen)} seed runs "
                f"({', '.join(p.name for p in chosen)})"
            )
        chosen = chosen[:seeds]
    unfinished = [p.name for p in chosen if not _is_run(p)]
    if unfinished:
        raise OmnibindError(
            f"{path}: {', '.join(unfinished)} holds no trained model (an unfinished run? resume it with "
            "`omnibind train CONFIG --out RUN --seeds N --resume`)"
        )
    return chosen
