"""Explicit registries for plug-ins: modality kinds, encoders, objectives.

Each plug-in family has one :class:`Registry` instance. A plug-in class registers itself with
``@REGISTRY.register("name")``; callers look it up with :meth:`Registry.get`. Lookup is by exact name,
never by substring, and an unknown name raises an error that lists the known names and the nearest one.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


def nearest(name: str, choices: list[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if not close:  # "lr_rate" -> "lr": a choice that starts the name, or that the name starts
        close = [c for c in choices if len(c) > 1 and (name.startswith(c) or c.startswith(name))][:1]
    return f" (did you mean '{close[0]}'?)" if close else ""


class Registry(Generic[T]):
    """A name -> class table for one plug-in family.

    Args:
        family: what the registry holds, used in error messages ("objective", "encoder", ...).
    """

    def __init__(self, family: str) -> None:
        self.family = family
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``; a second registration of a name is an error."""

        def decorate(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.family} '{name}' is already registered")
            self._items[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        """Return the plug-in registered as ``name``, or raise ``KeyError`` naming the known ones."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise KeyError(
                f"unknown {self.family} '{name}'{nearest(name, list(self._items))}; known: {known}"
            ) from None

    def names(self) -> list[str]:
        """Sorted names of every registered plug-in."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
