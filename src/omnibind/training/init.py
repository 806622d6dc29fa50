"""Starting a run from a trained one: ``task.init`` (a classifier) and ``model.init`` (an embedding model).

Both check that the new config declares every modality exactly as the trained run does and take the
trained run's fitted kind statistics (encoders trained on normalised inputs must see the same
normalisation), then copy weights after the new model is built.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from omnibind.config import RunConfig, config_from_dict
from omnibind.errors import OmnibindError
from omnibind.model import CONFIG_NAME, OmniModel, model_dir


def trained_config(init: str | Path, key: str = "model.init") -> RunConfig:
    """The config of the trained run (or model folder) ``init``."""
    folder = model_dir(init)
    if not (folder / CONFIG_NAME).exists():
        raise OmnibindError(f"{key}: {init} is neither a run folder with model/ nor a model folder")
    return config_from_dict(json.loads((folder / CONFIG_NAME).read_text())["config"])


def new_modalities(cfg: RunConfig, init: str | Path, key: str = "model.init") -> list[str]:
    """The modalities ``cfg`` declares that the trained run ``init`` lacks (binding them into its space).

    Raises:
        OmnibindError: there are some, and ``cfg`` leaves out one of the trained run's modalities (the
            bound model must hold every modality).
    """
    trained = trained_config(init, key)
    new = [name for name in cfg.modalities if name not in trained.modalities]
    left_out = [name for name in trained.modalities if name not in cfg.modalities]
    if new and left_out:
        raise OmnibindError(
            f"{key}: binding {', '.join(new)} into {init}: declare every modality of that run too "
            f"(missing here: {', '.join(left_out)}), so that the bound model holds all of them"
        )
    return new


def check_binding_pairs(
    present: torch.Tensor, modalities: Sequence[str], new: Sequence[str], init: str | Path
) -> None:
    """Refuse binding data in which a new modality never meets a trained one.

    A bound modality learns only from items that hold it together with at least one of ``init``'s
    modalities (the frozen towers are its targets); without such an item its tower would get no gradient
    and the run would save a random tower.

    Args:
        present: ``bool[N, M]``, the training items' modalities (column ``m`` is ``modalities[m]``).
        modalities: the column names.
        new: the modalities being bound.
        init: the trained run (for the message).

    Raises:
        OmnibindError: some new modality has no training item that pairs it with an old one.
    """
    old = [m for m, name in enumerate(modalities) if name not in new]
    if not old:
        return
    with_old = present[:, old].any(dim=1)
    for name in new:
        column = present[:, modalities.index(name)]
        if not bool((column & with_old).any()):
            trained = ", ".join(modalities[m] for m in old)
            raise OmnibindError(
                f"model.init: binding '{name}' into {init}: no training item has '{name}' together with "
                f"one of that run's modalities ({trained}); {int(column.sum())} items have '{name}' alone. "
                f"Binding learns the new modality from items that pair it with a trained one"
            )


def adopt_init(
    cfg: RunConfig,
    init: str | Path,
    key: str = "task.init",
    require_same_projection: bool = True,
    new: list[str] | None = None,
) -> bool:
    """Check that ``cfg``'s modalities match those of the trained run ``init`` and take its fitted statistics.

    Args:
        cfg: the new run's config; its modalities' ``stats`` are replaced by the trained run's.
        init: a run folder (with ``model/``) or a model folder.
        key: the config key that named ``init``, for error messages.
        require_same_projection: also require ``model.dim`` and ``model.projection`` to match (the
            projections are copied too).
        new: modalities being bound into the trained space (``model.init`` only): they are not in
            ``init`` and keep their own statistics (fitted on the new run's data).

    Returns:
        whether ``model.dim`` and ``model.projection`` match, i.e. the trained projections fit.

    Raises:
        OmnibindError: ``init`` is not a model, lacks a modality, or declares it differently.
    """
    trained = trained_config(init, key)
    for name, spec in cfg.modalities.items():
        if new and name in new:
            continue
        other = trained.modalities.get(name)
        if other is None:
            raise OmnibindError(
                f"{key}: {init} has no modality '{name}' (it has {', '.join(trained.modalities)})"
            )
        if (spec.kind, spec.options, spec.encoder) != (other.kind, other.options, other.encoder):
            raise OmnibindError(
                f"{key}: modality '{name}' is declared differently here than in {init}; "
                "declare it as the trained run does"
            )
        spec.stats = dict(other.stats)
    fits = (trained.model.dim, trained.model.projection) == (cfg.model.dim, cfg.model.projection)
    if require_same_projection and not fits:
        raise OmnibindError(f"{key}: model.dim and model.projection must equal those of {init}")
    return fits


def copy_weights(
    model: OmniModel,
    init: str | Path,
    projections: bool,
    key: str = "model.init",
    new: list[str] | None = None,
) -> int:
    """Copy the encoders (and, with ``projections``, the projections) of the trained model ``init``.

    With ``new`` (modalities being bound) those towers are left as initialised and the logit scale is
    copied too.

    Returns:
        the number of tensors copied.

    Raises:
        OmnibindError: the trained model lacks a modality of ``model``, or a weight's shape differs.
    """
    source = OmniModel.load(model_dir(init))
    lacking = [m for m in model.modalities if m not in source.modalities and m not in (new or [])]
    if lacking:
        raise OmnibindError(
            f"{key}: {init} has no encoder for {', '.join(lacking)} (it has {', '.join(source.modalities)})"
        )
    parts = ("encoders", "projections") if projections else ("encoders",)
    own = model.state_dict()
    copied = 0
    for name, value in source.state_dict().items():
        part, _, rest = name.partition(".")
        if new and name == "log_logit_scale":
            own[name] = value
            copied += 1
            continue
        if part not in parts or rest.split(".")[0] not in model.modalities:
            continue
        if name not in own or own[name].shape != value.shape:
            shape = tuple(own[name].shape) if name in own else "absent"
            raise OmnibindError(
                f"{key}: weight {name} is {tuple(value.shape)} in {init} but {shape} here: "
                "the modality's kind, encoder or model.dim differ"
            )
        own[name] = value
        copied += 1
    model.load_state_dict(own)
    return copied
