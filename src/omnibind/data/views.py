"""Several values per modality (1-to-K): the views of an item and which of them a training step uses.

A modality declared ``multi: true`` may hold a list of values per item (several captions, reports or
views). :func:`value_views` turns a record's value into that list and refuses a list where the modality is
not multi-valued. :class:`ViewPick` says which views a batch takes: ``first`` (evaluation embeds the
others itself), ``sample`` (one per item and epoch, chosen by :func:`choose_view` from ``(seed, epoch,
item id)`` so that every process and every number of processes picks the same one) or ``all``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from omnibind.data.kinds.base import ModalityKind

VIEW_MODES = ("first", "sample", "all")


@dataclass(frozen=True)
class ViewPick:
    """Which values of a multi-valued modality a batch holds.

    Attributes:
        mode: ``first``, ``sample`` or ``all`` (every view: the first ones in the item's row, the others
            as extra rows after the batch's items; :attr:`~omnibind.data.batch.Batch.groups` names the
            owner of each row).
        seed: the run's seed (``sample``).
        epoch: the epoch of the step (``sample``).
    """

    mode: str = "first"
    seed: int = 0
    epoch: int = 0

    def __post_init__(self) -> None:
        if self.mode not in VIEW_MODES:
            raise ValueError(f"view mode must be one of {', '.join(VIEW_MODES)}, got {self.mode!r}")


def choose_view(seed: int, epoch: int, item_id: str, count: int) -> int:
    """The view (``0 .. count - 1``) that ``sample`` trains on for ``item_id`` in ``epoch``.

    A hash of ``(seed, epoch, item id)``: no process-local random state, so the choice is the same
    whatever the number of processes, the workers or a resume.
    """
    if count <= 1:
        return 0
    digest = hashlib.blake2b(f"{seed}\0{epoch}\0{item_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % count


def _is_absent(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value == "")


def value_views(value: Any, kind: ModalityKind, modality: str) -> list[Any]:
    """The values of one modality of one item: ``[value]``, or the list of a multi-valued modality.

    For a multi-valued modality a list is always a list of values (an inline vector is a list inside
    the list); absent entries (``None``, ``""``) are dropped. A list of strings for a modality that is not
    multi-valued is refused (a list of numbers stays an inline vector).

    Raises:
        ValueError: a list of several values where ``modality`` is not declared ``multi: true``, or a
            list with no value in it.
    """
    if not kind.multi:
        if isinstance(value, list) and value and all(isinstance(v, str) or v is None for v in value):
            raise ValueError(
                f"got a list of {len(value)} values, but modality '{modality}' is not multi-valued; "
                f"declare it with 'multi: true' (modalities: {{{modality}: {{kind: {kind.name}, multi: "
                "true}}) to train on several values per item, or give one value"
            )
        return [value]
    views = [v for v in value if not _is_absent(v)] if isinstance(value, list) else [value]
    if not views:
        raise ValueError(f"expected at least one value in the list of multi-valued '{modality}', got none")
    return views
