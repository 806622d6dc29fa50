"""Text kind: inline text or a ``.txt`` file (or shard member) -> the string itself (encoders tokenise)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omnibind.data.kinds.base import KINDS, ModalityKind, open_file_value
from omnibind.data.shards import ShardMember


@dataclass
class TextOptions:
    """Options of the text kind.

    Attributes:
        max_chars: longer texts are truncated to this many characters.
    """

    max_chars: int = 2000

    def __post_init__(self) -> None:
        if self.max_chars < 1:
            raise ValueError(f"text max_chars must be positive, got {self.max_chars}")


@KINDS.register("text")
class TextKind(ModalityKind):
    """Text. A value ending in ``.txt`` is a UTF-8 file relative to the manifest, a ``.txt`` shard member
    its bytes; any other string is the text itself. Batches are lists of strings."""

    name = "text"
    Options = TextOptions
    default_encoder = "bag_of_tokens"

    def load(self, value: Any, base_dir: Path | None) -> str:
        if isinstance(value, (Path, ShardMember)) or (
            isinstance(value, str) and value.strip().lower().endswith(".txt")
        ):
            opened = open_file_value(
                value.strip() if isinstance(value, str) else value, base_dir, "a UTF-8 .txt file"
            )
            if opened.member and opened.suffix != ".txt":
                raise opened.error(f"a UTF-8 .txt member, got a {opened.suffix or 'nameless'} one")
            try:
                value = opened.read_bytes().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise opened.error("a UTF-8 text file", exc) from None
        if not isinstance(value, str):
            raise ValueError(f"expected a text string or a .txt path, got {type(value).__name__}")
        if not value.strip():
            raise ValueError("expected non-empty text, got an empty or whitespace-only string")
        return value

    def transform(self, raw: str) -> str:
        return raw[: self.options.max_chars]

    def collate(self, items: list[Any]) -> list[str]:
        return list(items)

    def input_shape(self) -> tuple[int, ...]:
        return ()
