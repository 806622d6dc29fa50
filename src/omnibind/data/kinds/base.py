"""The ModalityKind base class and its registry.

A kind turns a manifest value into a fixed-shape tensor (or a string for text) and says which built-in
encoder fits it. Kind options (``size`` for images, ``sample_rate`` for audio, ...) are a dataclass
``Options`` on the kind; the config validates the user's keys against its fields.

Life cycle, as the trainer uses it::

    kind = create_kind("image", {"size": 32})
    kind.fit([kind.load(v, base) for v in train_values])   # only tabular learns anything
    x = kind.transform(kind.load(value, base_dir))           # Tensor [C, H, W]
    batch_values = kind.collate([x1, x2, ...])               # Tensor [n, C, H, W]

``load`` and ``transform`` raise ``ValueError`` with a message that says what was expected; the caller
adds the manifest line, the item id and the modality.

A file value is a path (relative to ``base_dir``) or a :class:`~omnibind.data.shards.ShardMember`;
:func:`open_file_value` opens either the same way, so each kind decodes bytes from one place.
"""

from __future__ import annotations

import abc
import dataclasses
import io
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from omnibind.data.shards import ShardMember
from omnibind.io import data_file
from omnibind.registry import Registry

FileValue = str | Path | ShardMember


@dataclasses.dataclass(frozen=True)
class OpenedFile:
    """A file value opened for decoding: a file on disk, or a shard member's bytes in memory.

    Attributes:
        file: what decoders (PIL, soundfile, ``np.load``) read: a path, or a stream of the member's bytes.
        suffix: the lower-case extension with its dot (``.png``), of the file or the member.
        where: how messages name it: ``'/data/a.png'`` or ``shard-000003.tar, key 'x42', member ...``.
        member: True for a shard member.
    """

    file: str | io.BytesIO
    suffix: str
    where: str
    member: bool

    def read_bytes(self) -> bytes:
        """All the bytes."""
        if isinstance(self.file, io.BytesIO):
            return self.file.getvalue()
        return Path(self.file).read_bytes()

    def error(self, expected: str, detail: object = None) -> ValueError:
        """The ValueError for content that is not what was ``expected`` (``detail``: the decoder's reason)."""
        text = "" if detail is None else str(detail)
        if isinstance(self.file, io.BytesIO):  # decoders name their stream: "<_io.BytesIO object at 0x..>"
            text = text.replace(f" {self.file!r}", "").replace(repr(self.file), "")
        why = f" ({text})" if text else ""
        if self.member:
            return ValueError(f"{self.where}: expected {expected}{why}")
        return ValueError(f"expected {expected}, but {self.where} is not one{why}")


def open_file_value(value: FileValue, base_dir: Path | None, expected: str) -> OpenedFile:
    """Open a path (resolved against ``base_dir``) or read a shard member's bytes (exactly ``size`` at
    ``offset``).

    Raises:
        ValueError: the file does not exist (``expected`` says what kind of file was wanted); a
            :class:`~omnibind.errors.DataError` naming the shard when it is truncated.
    """
    if isinstance(value, ShardMember):
        return OpenedFile(io.BytesIO(value.read()), value.suffix, value.where, True)
    path = data_file(value, base_dir, expected)
    return OpenedFile(str(path), path.suffix.lower(), repr(str(path)), False)


def read_structured(opened: OpenedFile, what: str) -> Any:
    """The content of a ``.json`` file (JSON data) or any other (a ``.npy`` array, no pickles).

    Raises:
        ValueError: naming the file or member and ``what`` was expected.
    """
    if opened.suffix == ".json":
        try:
            return json.loads(opened.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise opened.error(f"{what} as JSON", exc) from None
    try:
        return np.load(opened.file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise opened.error(f"{what} as a .npy file", exc) from None


@dataclasses.dataclass
class NoOptions:
    """A kind without options."""


class ModalityKind(abc.ABC):
    """Base class of every modality kind.

    Subclasses set ``name``, ``Options`` (a dataclass), ``default_encoder`` and implement ``load`` and
    ``transform``. ``collate`` stacks tensors; text overrides it to keep a list of strings.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    default_encoder: ClassVar[str] = ""

    def __init__(self, options: Any | None = None) -> None:
        self.options = options if options is not None else self.Options()
        # set from the modality's config (``multi: true``): a value may be a list of values of this kind
        self.multi = False

    @abc.abstractmethod
    def load(self, value: Any, base_dir: Path | None) -> Any:
        """Read a manifest value (path, inline value or in-memory array) into a raw value; validate it."""

    @abc.abstractmethod
    def transform(self, raw: Any) -> Any:
        """Turn a raw value into the fixed-shape model input (a tensor, or a string for text)."""

    def prepare(self, value: Any, base_dir: Path | None) -> Any:
        """``transform(load(value))``."""
        return self.transform(self.load(value, base_dir))

    def check(self, value: Any, base_dir: Path | None) -> None:
        """The cheap check of ``data.validate: structure``: raise ``ValueError`` if ``value`` cannot be
        read. The default prepares it (inline values are cheap); kinds with large files override it to
        check that the file exists and that its header is right, without decoding the content."""
        self.prepare(value, base_dir)

    def collate(self, items: list[Any]) -> Tensor | list[str]:
        """Stack prepared values of the present rows into one batch value."""
        return torch.stack(items)

    def fit(self, raws: list[Any]) -> None:
        """Learn statistics from the raw training values (default: nothing to learn)."""
        return None

    def state(self) -> dict[str, Any]:
        """JSON-able statistics learned by :meth:`fit`, saved in ``config.json`` with the model."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        return None

    def input_shape(self) -> tuple[int, ...]:
        """Shape of one transformed value, for building encoders (empty for text)."""
        return ()


KINDS: Registry[type[ModalityKind]] = Registry("modality kind")


def kind_options(kind: str, options: dict[str, Any]) -> Any:
    """Build the ``Options`` dataclass of ``kind`` from a dict, rejecting unknown keys."""
    from omnibind.errors import ConfigError
    from omnibind.registry import nearest

    cls = KINDS.get(kind)
    fields = {f.name for f in dataclasses.fields(cls.Options)}
    for key in options:
        if key not in fields:
            raise ConfigError(
                f"'{key}' is not an option of kind '{kind}'{nearest(key, sorted(fields))}; "
                f"options: {', '.join(sorted(fields)) or 'none'}"
            )
    return cls.Options(**options)


def create_kind(kind: str, options: dict[str, Any] | None = None) -> ModalityKind:
    """Instantiate the kind registered as ``kind`` with the given option dict."""
    cls = KINDS.get(kind)
    return cls(kind_options(kind, dict(options or {})))
