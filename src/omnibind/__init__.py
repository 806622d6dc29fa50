"""omnibind: one embedding space over any number of modalities, with missing modalities as the normal case.

The public API is this short list; everything else is reachable through its module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from omnibind.model import OmniModel as OmniModel

__all__ = [
    "OmniModel",
    "RunConfig",
    "load",
    "load_config",
    "train",
    "evaluate",
    "create_objective",
    "list_objectives",
    "create_encoder",
    "list_encoders",
    "list_kinds",
    "infonce_loss",
    "symile_loss",
    "siglip_loss",
]

_LAZY = {
    "OmniModel": ("omnibind.model", "OmniModel"),
    "RunConfig": ("omnibind.config", "RunConfig"),
    "load_config": ("omnibind.config", "load_config"),
    "train": ("omnibind.training.trainer", "train"),
    "evaluate": ("omnibind.evaluation.evaluate", "evaluate"),
    "create_objective": ("omnibind.objectives", "create_objective"),
    "list_objectives": ("omnibind.objectives", "list_objectives"),
    "create_encoder": ("omnibind.encoders", "create_encoder"),
    "list_encoders": ("omnibind.encoders", "list_encoders"),
    "infonce_loss": ("omnibind.objectives", "infonce_loss"),
    "symile_loss": ("omnibind.objectives", "symile_loss"),
    "siglip_loss": ("omnibind.objectives", "siglip_loss"),
}


def load(path: str, modalities: list[str] | None = None) -> Any:
    """Load a saved model (a model folder, or a run folder holding ``model/``); with ``modalities``,
    only those towers (see :meth:`OmniModel.load`)."""
    from omnibind.model import OmniModel, model_dir

    return OmniModel.load(model_dir(path), modalities=modalities)


def list_kinds() -> list[str]:
    """Names of the registered modality kinds."""
    from omnibind.data.kinds import KINDS

    return KINDS.names()


def __getattr__(name: str) -> Any:
    # Lazy re-exports keep `import omnibind` (and `omnibind --help`) fast: torch loads on first use.
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'omnibind' has no attribute {name!r}")
