"""OmniModel: one encoder and projection per modality into a shared space, plus a learnable logit scale.

The model is built from a :class:`~omnibind.config.RunConfig` alone, so a saved model (``config.json`` +
``model.safetensors``) loads without any training code::

    model = OmniModel.load("runs/demo/model")
    z = model.embed(["a small red circle on the left"], "caption")   # [1, D], unit rows
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omnibind.config import RunConfig, config_from_dict
from omnibind.data.batch import Batch
from omnibind.data.kinds import ModalityKind, create_kind
from omnibind.encoders import ENCODERS, Encoder, Projection, create_encoder
from omnibind.errors import OmnibindError
from omnibind.io import write_bytes_atomic, write_json_atomic
from omnibind.types import Embeddings

FORMAT = "omnibind-model/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
BACKBONES_NAME = "backbones.safetensors"


def _projection(modality: str, in_dim: int, dim: int, style: str) -> nn.Module:
    if style == "none":
        if in_dim != dim:
            raise OmnibindError(
                f"model.projection is 'none' but the encoder of '{modality}' outputs {in_dim} values, "
                f"not model.dim = {dim}; set the encoder's width to {dim} or use a projection"
            )
        return nn.Identity()
    if style == "bn":
        return Projection(in_dim, dim, standardize=True)
    return Projection(in_dim, dim, hidden=2 * dim if style == "mlp" else 0)


class OmniModel(nn.Module):
    """Encoders for every declared modality, projected to a shared width and L2-normalised (by default).

    Args:
        config: the run config; ``config.modalities`` declares the modalities, ``config.model`` the width
            and the logit scale. Fitted kind statistics (``ModalityConfig.stats``) are restored.
        saved_backbones: modalities whose encoders are built without reading their checkpoint file
            (:meth:`load` then restores the weights saved with ``model.save_backbones``).

    Attributes:
        modalities: modality names in config order; column ``m`` of every presence mask refers to
            ``modalities[m]``.
        kinds: the modality kind of each modality (loading and transforming raw values).
        encoders: ``nn.ModuleDict`` of encoders (input of one kind -> ``[n, width]``).
        projections: ``nn.ModuleDict`` of projections (``[n, width]`` -> ``[n, D]``).
        log_logit_scale: learnable log of the logit scale, clamped to ``config.model.logit_scale_max``.
    """

    def __init__(self, config: RunConfig, saved_backbones: Sequence[str] = ()) -> None:
        super().__init__()
        self.config = config
        self.modalities: tuple[str, ...] = tuple(config.modalities)
        self.kinds: dict[str, ModalityKind] = {}
        self.encoders = nn.ModuleDict()
        self.projections = nn.ModuleDict()
        dim = config.model.dim
        for name, spec in config.modalities.items():
            kind = create_kind(spec.kind, spec.options)
            if spec.stats:
                kind.load_state(spec.stats)
            self.kinds[name] = kind
            enc_name = spec.encoder.name or kind.default_encoder
            options = dict(spec.encoder.options)
            cls = ENCODERS.get(enc_name)
            if cls.pretrained:
                options["freeze"] = spec.encoder.freeze
            if name in saved_backbones and cls.checkpoint_option:
                options[cls.checkpoint_option] = "none"  # the weights come from the model folder
            encoder = create_encoder(enc_name, kind.input_shape(), **options)
            if config.model.freeze_encoders:
                encoder.requires_grad_(False)
            self.encoders[name] = encoder
            self.projections[name] = _projection(name, encoder.output_dim, dim, config.model.projection)
        self.log_logit_scale = nn.Parameter(
            torch.tensor(float(config.model.logit_scale_init)),
            requires_grad=config.model.learn_logit_scale,
        )
        # Outputs of frozen encoders for the training items (set by the trainer with data.cache: DIR):
        # a DiskCache keyed by the item's position in the training set, used in training mode only.
        self.feature_cache: Any = None
        self._frozen_towers: set[str] = set()

    def freeze_towers(self, names: Sequence[str]) -> None:
        """Fix the encoders and projections of ``names`` (and the logit scale): no gradient, evaluation
        mode for good (binding a new modality into a trained space keeps the old embeddings exactly)."""
        for name in names:
            self.encoders[name].requires_grad_(False)
            self.projections[name].requires_grad_(False)
        self.log_logit_scale.requires_grad_(False)
        self._frozen_towers = set(names)
        self.train(self.training)

    def frozen_modalities(self) -> list[str]:
        """Modalities whose encoder output cannot change while training: every encoder under
        ``model.freeze_encoders``, and pretrained backbones with ``freeze`` and no trainable parameter
        (their backbone always runs in evaluation mode)."""
        out = []
        for name, spec in self.config.modalities.items():
            encoder = self.encoders[name]
            enc_name = spec.encoder.name or self.kinds[name].default_encoder
            fixed = ENCODERS.get(enc_name).pretrained and spec.encoder.freeze
            if (
                self.config.model.freeze_encoders
                or name in self._frozen_towers
                or (fixed and not any(p.requires_grad for p in encoder.parameters()))
            ):
                out.append(name)
        return out

    def train(self, mode: bool = True) -> OmniModel:
        super().train(mode)
        if self.config.model.freeze_encoders:
            self.encoders.eval()  # frozen encoders: no dropout, fixed normalisation
        for name in getattr(self, "_frozen_towers", ()):
            self.encoders[name].eval()
            self.projections[name].eval()  # a bn projection keeps its running averages
        return self

    @property
    def dim(self) -> int:
        """Width D of the shared space."""
        return int(self.config.model.dim)

    @property
    def logit_scale(self) -> Tensor:
        """The multiplier s = exp(log s) that objectives apply to similarities."""
        return self.log_logit_scale.exp()

    def clamp_logit_scale(self) -> None:
        """Clamp log s to at most ``config.model.logit_scale_max`` (called after every optimiser step)."""
        with torch.no_grad():
            self.log_logit_scale.clamp_(max=float(self.config.model.logit_scale_max))

    def encode_modality(
        self, modality: str, values: Tensor | list[str], items: Tensor | None = None
    ) -> Tensor:
        """Embed the collated values of one modality. Returns ``[n, D]`` (unit rows unless
        ``model.normalize`` is false) on the model's device.

        Tensor values move to the model's device, floating ones to its dtype (float64 for a model in
        ``fp64``), so callers may pass CPU tensors as the data pipeline makes them. ``items`` (``long[n]``,
        the values' training-set positions) lets a frozen encoder's outputs come from
        :attr:`feature_cache` in training.
        """
        if isinstance(values, Tensor):
            ref = self.log_logit_scale
            dtype = ref.dtype if values.is_floating_point() else values.dtype
            values = values.to(device=ref.device, dtype=dtype, non_blocking=True)
        cache = self.feature_cache
        if self.training and items is not None and cache is not None and modality in cache.shapes:
            features = self._cached_features(modality, values, items)
        elif self.config.model.freeze_encoders:
            with torch.no_grad():
                features = self.encoders[modality](values)  # [n, width]
        else:
            features = self.encoders[modality](values)  # [n, width]
        z = self.projections[modality](features)  # [n, D]
        return F.normalize(z, dim=-1) if self.config.model.normalize else z

    def _cached_features(self, modality: str, values: Tensor | list[str], items: Tensor) -> Tensor:
        """A frozen encoder's outputs ``[n, width]``: read from the cache, computed (and written) once."""
        cache = self.feature_cache
        got = [cache.get(modality, i) for i in items.tolist()]
        missing = [k for k, g in enumerate(got) if g is None]
        if missing:
            if isinstance(values, list):
                sub: Tensor | list[str] = [values[k] for k in missing]
            else:
                sub = values[torch.tensor(missing, device=values.device)]
            with torch.no_grad():
                fresh = self.encoders[modality](sub)  # [m, width]
            for k, row in zip(missing, fresh, strict=True):
                cache.put(modality, int(items[k]), row.float().cpu())
                got[k] = row
        ref = self.log_logit_scale
        return torch.stack([g.to(device=ref.device, dtype=ref.dtype) for g in got])

    def encode_zero_input(self, modality: str) -> Tensor:
        """``[D]``: the embedding of an all-zero input of ``modality`` (the empty string for text).

        This is what a pipeline that fills a missing value with ``torch.zeros`` (a black image, a silent
        clip, a row of zeros) feeds the encoder; the ``impute: zeros`` baseline of late fusion uses it.
        Gradients flow, so the encoder can learn what the zero input means. Encoders see rows
        independently (no batch statistics), so one row is the same as a row inside a batch; a ``bn``
        projection standardises a lone row with its running averages.
        """
        kind = self.kinds[modality]
        shape = kind.input_shape()
        device = self.log_logit_scale.device
        values: Tensor | list[str] = [""] if not shape else torch.zeros((1, *shape), device=device)
        return self.encode_modality(modality, values)[0]

    def encode(self, batch: Batch) -> Embeddings:
        """Embed a batch; encoders run on the present rows only.

        Inputs:
            batch: ``Batch`` over B items whose ``modalities`` equal ``self.modalities``.

        Returns:
            ``{modality: Tensor[B, D]}`` in ``self.modalities`` order; rows of absent items are zero and
            ``batch.present`` says which rows are real.
        """
        if tuple(batch.modalities) != self.modalities:
            raise OmnibindError(
                f"batch modalities {batch.modalities} do not match the model's {self.modalities}"
            )
        size = len(batch)
        out: Embeddings = {}
        for m, name in enumerate(self.modalities):
            full = self.log_logit_scale.new_zeros(size, self.dim)  # [B, D]
            rows = batch.present[:, m].nonzero().squeeze(1).to(full.device)  # [n]
            if name not in batch.values or rows.numel() == 0:
                if self.training and self.config.model.projection == "bn" and _several_processes():
                    # synchronised batch norm: every rank joins the statistics' collectives, with 0 rows
                    empty = full.new_zeros(0, self.encoders[name].output_dim)
                    full = full.index_copy(0, rows[:0], self.projections[name](empty))
            else:
                items = batch.items[batch.present[:, m]] if batch.items is not None else None
                full = full.index_copy(0, rows, self.encode_modality(name, batch.values[name], items))
            out[name] = full
        return out

    @torch.no_grad()
    def embed(self, items: Sequence[Any], modality: str, batch_size: int = 256) -> Tensor:
        """Embed raw values of one modality (file paths, strings, arrays, dicts of numbers).

        Args:
            items: raw values, as a manifest would hold them (relative paths resolve against the cwd).
            modality: a declared modality name.
            batch_size: values per forward pass.

        Returns:
            ``Tensor[len(items), D]`` of unit rows (float32, on the CPU, wherever the model runs).
        """
        if modality not in self.kinds:
            raise OmnibindError(
                f"unknown modality '{modality}'; this model has: {', '.join(self.modalities)}"
            )
        kind = self.kinds[modality]
        was_training = self.training
        self.eval()
        chunks = []
        try:
            for start in range(0, len(items), batch_size):
                part = [kind.prepare(v, None) for v in items[start : start + batch_size]]
                chunks.append(self.encode_modality(modality, kind.collate(part)))
        finally:
            self.train(was_training)
        if not chunks:
            return torch.zeros(0, self.dim)
        return torch.cat(chunks).float().cpu()

    @property
    def joint_similarity(self) -> str:
        """How composed queries are scored: ``"mip"`` for Symile models, ``"sum"`` of cosines otherwise."""
        from omnibind.objectives import OBJECTIVES

        return OBJECTIVES.get(self.config.objective.name).joint_similarity

    def parameter_counts(self) -> dict[str, tuple[int, int]]:
        """``(trainable, total)`` parameters per modality: encoder (held frozen backbones included) and
        projection."""
        from omnibind.encoders.adapt import count_parameters

        out = {}
        for name in self.modalities:
            encoder = self.encoders[name]
            held = list(encoder.held_modules().values()) if isinstance(encoder, Encoder) else []
            out[name] = count_parameters([encoder, *held, self.projections[name]])
        return out

    def saving_backbones(self) -> dict[str, dict[str, Tensor]]:
        """With ``model.save_backbones``: the held frozen backbones of the encoders that read a
        checkpoint file, ``{modality: {"<attribute>.<tensor>": tensor}}``."""
        if not self.config.model.save_backbones:
            return {}
        out = {}
        for name in self.modalities:
            encoder = self.encoders[name]
            if not isinstance(encoder, Encoder) or not type(encoder).checkpoint_option:
                continue
            out[name] = {
                f"{attr}.{key}": value
                for attr, module in encoder.held_modules().items()
                for key, value in module.state_dict().items()
            }
        return out

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: modalities, kinds, encoders, parameter counts, width, logit scale."""
        mods = {}
        for name, spec in self.config.modalities.items():
            enc = self.encoders[name]
            trainable = sum(p.numel() for p in enc.parameters() if p.requires_grad)
            mods[name] = {
                "kind": spec.kind,
                "encoder": spec.encoder.name or self.kinds[name].default_encoder,
                "trainable_encoder_params": trainable,
                "projection_params": sum(p.numel() for p in self.projections[name].parameters()),
            }
        return {
            "dim": self.dim,
            "objective": self.config.objective.name,
            "joint_similarity": self.joint_similarity,
            "logit_scale": float(self.logit_scale.detach()),
            "modalities": mods,
            "parameters": sum(p.numel() for p in self.parameters()),
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (each file atomically).

        Frozen pretrained backbones are not copied: they are reloaded from their package or folder,
        unless ``model.save_backbones`` is set: those of encoders that read a checkpoint file then go
        into ``backbones.safetensors`` beside the weights.
        """
        from safetensors.torch import save

        out = write_artifact(directory, self, self.config, self.kinds, FORMAT)
        backbones = {
            f"encoders.{m}.{key}": v.detach().cpu().contiguous().clone()
            for m, state in self.saving_backbones().items()
            for key, v in state.items()
        }
        if self.config.model.save_backbones:
            write_bytes_atomic(Path(directory) / BACKBONES_NAME, save(backbones, metadata={"format": FORMAT}))
        return out

    @classmethod
    def load(
        cls,
        directory: str | Path,
        device: str | torch.device | None = None,
        modalities: Sequence[str] | None = None,
    ) -> OmniModel:
        """Load a model saved by :meth:`save`; needs no training code. Returns it in eval mode, in
        float32, on ``device`` (``auto | cpu | cuda | cuda:N | mps`` or a ``torch.device``; default the
        CPU).

        ``modalities`` loads only those towers (encoder and projection): the others are neither built
        nor read from the weights file, and the model then knows only the named modalities (their
        embeddings are the full model's).

        Raises:
            OmnibindError: a name the model does not have, or an empty list.
        """
        hint = "a run directory holds the model in its 'model/' folder"
        if modalities is None:
            config, weights = read_artifact(Path(directory), FORMAT, hint)
        else:
            config, _ = read_artifact(Path(directory), FORMAT, hint, keys=lambda key: False)
            keep = _check_towers(list(modalities), list(config.modalities))
            config.modalities = {m: spec for m, spec in config.modalities.items() if m in keep}
            towers = tuple(f"{part}.{m}." for part in ("encoders", "projections") for m in keep)
            _, weights = read_artifact(
                Path(directory),
                FORMAT,
                hint,
                keys=lambda key: not key.startswith(("encoders.", "projections.")) or key.startswith(towers),
            )
        backbones = _read_backbones(Path(directory), config)
        model = cls(config, saved_backbones=list(backbones))
        model.load_state_dict(weights)
        for name, state in backbones.items():
            for attr, module in model.encoders[name].held_modules().items():
                prefix = f"{attr}."
                module.load_state_dict(
                    {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                )
        if device is not None:
            from omnibind.training.precision import resolve_device

            model.to(resolve_device(device) if isinstance(device, str) else device)
        model.eval()
        return model


def model_dir(path: str | Path) -> Path:
    """A model folder, given it or a run folder that holds ``model/``."""
    path = Path(path)
    return path / "model" if (path / "model" / CONFIG_NAME).exists() else path


def write_artifact(
    directory: str | Path, module: nn.Module, config: RunConfig, kinds: dict[str, ModalityKind], fmt: str
) -> Path:
    """Save ``module`` as ``config.json`` (the config, with fitted kind statistics) + ``model.safetensors``.

    Each file is written atomically. Shared by every saved artifact (embedding models, classifiers).
    """
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, kind in kinds.items():
        config.modalities[name].stats = kind.state()
    # on the CPU whatever device trained it; an fp64 run keeps its float64 weights (loading casts them)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    write_bytes_atomic(directory / WEIGHTS_NAME, save(state, metadata={"format": fmt}))
    write_json_atomic(directory / CONFIG_NAME, {"format": fmt, "config": config.to_dict()})
    return directory


def _check_towers(wanted: list[str], have: list[str]) -> list[str]:
    if not wanted:
        raise OmnibindError(f"modalities=[]: name at least one of the model's modalities ({', '.join(have)})")
    from omnibind.registry import nearest

    for name in wanted:
        if name not in have:
            raise OmnibindError(
                f"modalities: the model has no modality '{name}'{nearest(name, have)}; "
                f"it has: {', '.join(have)}"
            )
    return wanted


def read_artifact(
    directory: Path, fmt: str, hint: str, keys: Any = None
) -> tuple[RunConfig, dict[str, torch.Tensor]]:
    """Read what :func:`write_artifact` wrote, checking the format; ``hint`` ends the error messages.
    ``keys`` (a predicate on tensor names) reads only the tensors it accepts from the weights file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    cfg_path = directory / CONFIG_NAME
    if not cfg_path.exists() or not (directory / WEIGHTS_NAME).exists():
        raise OmnibindError(
            f"{directory} is not an omnibind model: expected {CONFIG_NAME} and {WEIGHTS_NAME} in it ({hint})"
        )
    meta = json.loads(cfg_path.read_text())
    if meta.get("format") != fmt:
        raise OmnibindError(f"{cfg_path}: format {meta.get('format')!r} is not {fmt!r} ({hint})")
    if keys is None:
        return config_from_dict(meta["config"]), load_file(str(directory / WEIGHTS_NAME))
    with safe_open(str(directory / WEIGHTS_NAME), framework="pt") as fh:
        weights = {k: fh.get_tensor(k) for k in fh.keys() if keys(k)}  # noqa: SIM118 - not a dict
    return config_from_dict(meta["config"]), weights


def _read_backbones(directory: Path, config: RunConfig) -> dict[str, dict[str, Tensor]]:
    """What :meth:`OmniModel.save` wrote with ``model.save_backbones``, per declared modality whose
    encoder reads a checkpoint (``{}`` when the option is off or the file is absent)."""
    path = directory / BACKBONES_NAME
    if not config.model.save_backbones or not path.is_file():
        return {}
    from safetensors.torch import load_file

    # every such encoder: a frozen backbone is in this file, a trainable one in model.safetensors
    out: dict[str, dict[str, Tensor]] = {
        m: {}
        for m, spec in config.modalities.items()
        if ENCODERS.get(
            spec.encoder.name or create_kind(spec.kind, spec.options).default_encoder
        ).checkpoint_option
    }
    for key, value in load_file(str(path)).items():
        _, modality, rest = key.split(".", 2)
        if modality in out:
            out[modality][rest] = value
    return out


def _several_processes() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
