"""The typed run config: the one place where defaults live.

A run config is YAML with these sections (every key is documented in ``docs/config.md``)::

    modalities:            # name -> kind, kind options, encoder
      image: {kind: image, size: 32}
      caption: {kind: text, encoder: {name: minilm, freeze: true}}
    data: {source: "builtin:shapes?n=3000", on_error: stop}
    model: {dim: 64}
    objective: {name: symile, negatives: n}
    train: {epochs: 10, batch_size: 128, lr: 1e-3}
    eval: {relevance: auto}

:func:`load_config` reads YAML, applies dotted overrides (``train.lr=3e-4``) and validates: an unknown key
raises :class:`~omnibind.errors.ConfigError` naming the dotted key and the nearest existing one.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from omnibind.errors import ConfigError
from omnibind.registry import nearest


@dataclass
class EncoderConfig:
    """Which encoder a modality uses.

    Attributes:
        name: a registered encoder name; empty means the kind's default encoder.
        freeze: for pretrained backbones, keep the backbone's weights fixed (only the projection trains).
        options: encoder-specific keyword arguments (``width``, ``depth``, ...).
    """

    name: str = ""
    freeze: bool = True
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModalityConfig:
    """One declared modality.

    Attributes:
        kind: the modality kind (image, audio, text, signal, tabular, embedding).
        options: the kind's options (validated against the kind's ``Options`` dataclass).
        encoder: the encoder of this modality.
        stats: statistics fitted on the training split (tabular normalisation); written by training.
        multi: the modality is multi-valued: a manifest value may be a list of values of the kind (several
            captions, reports or views of one item; see ``objective.multi_positive``). A list value for a
            modality without ``multi: true`` is an error.
    """

    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    stats: dict[str, Any] = field(default_factory=dict)
    multi: bool = False


@dataclass
class MissingConfig:
    """Remove one modality from a share of the items (of one class): missingness set by the experimenter.

    With ``value`` set, the modality goes missing *not at random* (MNAR): only items whose ``field`` equals
    ``value`` lose it, the MultiModN set-up in which missingness itself says something about the class.
    Without ``value`` every item is a candidate (missing completely at random). Applied after loading and
    splitting (``omnibind.data.missingness``), deterministic for ``data.split_seed``.

    Attributes:
        modality: the declared modality to remove.
        rate: share in (0, 1] of the candidate items that lose it (candidates: matching items that have the
            modality and at least one other, since an item with nothing left is not an item).
        value: the value of ``field`` whose items are candidates (``"3"``: the digit 3); empty: every item.
        field: where ``value`` is read, as ``task.label``: ``label`` (the record's label), a fact of a
            built-in source, a manifest column, or several joined by ``+`` (then ``value`` reads
            ``"mark=0,tone=1"``).
        splits: the splits it applies to; train and val by default (the test split stays as collected, so
            evaluation can choose its own missingness).
    """

    modality: str
    rate: float
    value: str = ""
    field: str = "label"
    # `field` is an attribute name here, so the dataclass helper is spelled out.
    splits: list[str] = dataclasses.field(default_factory=lambda: ["train", "val"])


@dataclass
class DataConfig:
    """Where the items come from and how they are split.

    Attributes:
        source: a manifest path (JSONL, CSV, Parquet) or ``builtin:NAME[?k=v&...]``.
        root: data root for loaders that need one (``builtin:avmnist``); relative to the working directory.
        val_fraction: share of items put in ``val`` when the source has no ``split`` column.
        test_fraction: share of items put in ``test`` when the source has no ``split`` column.
        on_error: ``stop`` (default: raise before training starts) or ``skip`` (drop bad rows and write
            ``skipped.jsonl`` with the reasons).
        split_seed: seed of the random split (and of ``missing``).
        missing: modalities to remove from a share of the items, e.g. audio from 80% of the training items
            of digit 3 (:class:`MissingConfig`); empty by default.
        validate: how the training items are checked before the first step: ``full`` (decode every
            value, streaming), ``structure`` (ids, fields, files exist, headers) or ``auto`` (``full``
            below 100,000 items). Applies when the training split streams (``cache`` not ``memory``).
        cache: where prepared training tensors live: ``memory`` (prepared once, held in RAM), ``none``
            (decoded when a batch needs them, in ``train.workers`` processes), a folder (decoded once
            into memory-mapped files there, reused by later epochs and runs), or ``auto`` (``memory``
            below 100,000 items, else ``none``).
    """

    source: str = "builtin:shapes"
    root: str | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    on_error: str = "stop"
    split_seed: int = 0
    missing: list[MissingConfig] = field(default_factory=list)
    validate: str = "auto"
    cache: str = "auto"


@dataclass
class ModelConfig:
    """The shared space.

    Attributes:
        dim: width D of the shared embedding space.
        projection: the map from each encoder's output to D: ``linear`` (default), ``mlp`` (one hidden
            layer of width 2D), ``bn`` (each input feature standardised over the batch, then linear: see
            :class:`~omnibind.encoders.projection.Projection`) or ``none`` (the encoder's output is the
            embedding; its width must be D).
        normalize: L2-normalise every embedding (default). ``false`` keeps the projection's output as it
            is: Symile's multilinear score with ``projection: bn`` needs that to learn facts that only
            three modalities carry together (see docs/concepts.md).
        init: a trained run (or model) folder whose encoders this model starts from (and its projections
            too, when ``dim`` and ``projection`` are the same); every modality must be declared as there.
        freeze_encoders: with ``init``, keep the encoders fixed (no gradient, evaluation mode): only the
            projections train, on features the trained run's encoders compute.
        logit_scale_init: initial log of the logit scale (ln(1/0.07), CLIP's value).
        logit_scale_max: the log scale is clamped to at most this after every step (ln 100).
        learn_logit_scale: whether the log scale is trained.
        save_backbones: also write the frozen backbones of encoders that read a checkpoint file
            (``efficientnet_lite0``) into the model folder (``backbones.safetensors``), so the model loads
            on a machine that lacks that file or package.
    """

    dim: int = 64
    projection: str = "linear"
    normalize: bool = True
    init: str = ""
    freeze_encoders: bool = False
    logit_scale_init: float = math.log(1 / 0.07)
    logit_scale_max: float = math.log(100.0)
    learn_logit_scale: bool = True
    save_backbones: bool = False


@dataclass
class HardNegativesConfig:
    """Hard negatives mined from the current model (``objective.hard_negatives``).

    At the start of epochs ``mine_every``, ``2 * mine_every``, ... every training item is embedded with
    the model as it is, and each item's ``k`` nearest other items (for each pair of modalities the
    objective trains on: the nearest ``b`` values to its ``a`` value, MM-Embed style; not the item
    itself, nor an item sharing an identical value with it) become its hard negatives until the next
    round: they join the candidates of every batch the item is in. The first ``mine_every`` epochs
    train without them. See ``omnibind.training.mining``.

    Attributes:
        mine_every: epochs between mining rounds (and before the first).
        k: hard negatives per item.
    """

    mine_every: int = 1
    k: int = 2


@dataclass
class ObjectiveConfig:
    """The training objective.

    Attributes:
        name: a registered objective (``infonce``, ``symile``, ``siglip``).
        options: keyword arguments of the objective (``pairs``, ``negatives``, ...).
        local_loss: under torchrun, each process computes only its own items' rows against every
            gathered candidate (open_clip's ``--local-loss``); the gradients are the same, the loss
            costs ``B/N x B`` per process instead of ``B x B``. No effect with one process.
        multi_positive: how a multi-valued modality (``multi: true``) trains: ``sample`` picks one of an
            item's values per step (the same one on every process: it depends on seed, epoch and item
            id); ``all`` puts every value of the item in the batch as a positive of a multi-positive
            InfoNCE (1-to-K; DreamLIP's sub-captions), objective ``infonce`` only.
        hard_negatives: mine hard negatives from the current model (:class:`HardNegativesConfig`), or
            ``None`` (default: none, unless the manifest has a ``negatives`` column).
    """

    name: str = "infonce"
    options: dict[str, Any] = field(default_factory=dict)
    local_loss: bool = False
    multi_positive: str = "sample"
    hard_negatives: HardNegativesConfig | None = None


@dataclass
class TrainConfig:
    """The training loop.

    Attributes:
        epochs: passes over the training split.
        max_steps: stop after this many optimiser steps (0: no limit).
        batch_size: items per step.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps before the cosine decay.
        grad_clip: clip the global gradient norm to this (0: off).
        seed: seed of initialisation, data order and objective sampling.
        eval_every: validate every this many steps (0: once per epoch).
        checkpoint_every: write a checkpoint every this many steps (0: once per epoch).
        early_stopping_metric: validation metric to watch (e.g. ``val/mean_r@1``; empty: off).
        early_stopping_patience: validations without improvement before stopping.
        early_stopping_mode: ``max`` or ``min``.
        threads: torch intra-op threads (0: leave torch's default).
        progress: show a progress bar.
        device: ``auto`` (CUDA where there is one, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``fp32``, ``bf16`` / ``fp16`` (autocast; losses in fp32; fp16 with a GradScaler, CUDA
            only) or ``fp64`` (float64 parameters, for exactness checks).
        micro_batch_size: encode each batch in micro-batches of this many items (GradCache: the loss still
            sees the whole batch, activation memory is that of one micro-batch); 0: off. Must divide
            ``batch_size``.
        workers: DataLoader worker processes that prepare the next batches while the model trains
            (0: in the training process). Persistent, prefetching 2 batches each, pinned memory on CUDA.
        dist_timeout: under torchrun, seconds a collective may wait for the other processes before the
            run fails (a hung rank); a rank that dies is reported by torchrun at once.
    """

    epochs: int = 10
    max_steps: int = 0
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 0
    checkpoint_every: int = 0
    early_stopping_metric: str = ""
    early_stopping_patience: int = 5
    early_stopping_mode: str = "max"
    threads: int = 0
    progress: bool = True
    device: str = "auto"
    precision: str = "fp32"
    micro_batch_size: int = 0
    dist_timeout: float = 600.0
    workers: int = 0


@dataclass
class ZeroShotConfig:
    """One zero-shot classification task from text prompts (or class prototypes).

    Attributes:
        name: key of the task in ``metrics.json``.
        fields: the fact fields (or ``label``) whose combination is the class.
        method: ``prompts`` (embed one prompt per class with ``text``) or ``prototypes`` (mean training
            embedding of each class in the target modality).
        text: the text modality that embeds the prompts.
        prompts: templates formatted with the fields, e.g. ``"a photo of a {label}"``; scores are averaged.
        targets: modalities to classify (empty: every modality except ``text``).
    """

    name: str
    fields: list[str] = field(default_factory=lambda: ["label"])
    method: str = "prompts"
    text: str = ""
    prompts: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)


@dataclass
class EvalConfig:
    """Evaluation.

    Attributes:
        relevance: ``facts``, ``label``, ``item`` or ``auto`` (facts if the data has them, else label,
            else item).
        joint: also evaluate composed queries (two or more modalities -> one).
        zero_shot: zero-shot classification tasks.
        batch_size: items per encoding batch.
        split: which split ``omnibind eval`` uses by default.
    """

    relevance: str = "auto"
    joint: bool = True
    zero_shot: list[ZeroShotConfig] = field(default_factory=list)
    batch_size: int = 256
    split: str = "test"


@dataclass
class TaskConfig:
    """A supervised task trained on top of the encoders (``omnibind train`` with a ``task`` section).

    Attributes:
        type: ``classify`` (the only supervised task so far).
        label: where each item's class comes from: ``label`` (the record's label), a fact name of a
            built-in source, a manifest column, or several of those joined by ``+`` (``mark+tone``: the
            class is the combination of their values). A list of them (``[shape, colour]``) trains one
            task per entry with one head whose logits are split between the tasks (multi-task).
        multilabel: each item has a set of classes (a list, or a string with ``|`` between classes);
            trained with one sigmoid per class instead of a softmax. With several tasks, ``true`` makes
            all of them multi-label, a list names the ones that are.
        head: a registered fusion head: ``late``, ``attention``, ``sequential`` or ``experts``.
        head_options: keyword arguments of the head (``hidden``, ``depth``, ``impute``, ...).
        init: a trained run folder (or model folder) whose encoders and projections to start from.
        freeze_encoders: keep the encoders and projections fixed; only the head trains.
        modality_dropout: during training, drop each present modality of an item with this probability,
            never every modality of an item.
        balance: a registered balance method run on every training step (``ogm_ge``, ``agm``,
            ``mmpareto``); empty for plain training. Combines with ``modality_dropout``.
        balance_options: keyword arguments of the balance method (``alpha``, ...).
        classes: the class list, fitted on the training split and saved with the model (written by
            training; leave empty); ``{label: classes}`` with several tasks.
    """

    type: str = "classify"
    label: str | list[str] = "label"
    multilabel: bool | list[str] = False
    head: str = "late"
    head_options: dict[str, Any] = field(default_factory=dict)
    init: str = ""
    freeze_encoders: bool = False
    modality_dropout: float = 0.0
    balance: str = ""
    balance_options: dict[str, Any] = field(default_factory=dict)
    classes: list[str] | dict[str, list[str]] = field(default_factory=list)


@dataclass
class RunConfig:
    """Everything a run needs; saved next to the model so that a run describes itself."""

    modalities: dict[str, ModalityConfig]
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    task: TaskConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict that :func:`config_from_dict` turns back into an equal config."""
        out = dataclasses.asdict(self)
        out["modalities"] = {name: _modality_to_dict(m) for name, m in self.modalities.items()}
        out["objective"] = {"name": self.objective.name, **self.objective.options}
        if self.objective.local_loss:
            out["objective"]["local_loss"] = True
        if self.objective.multi_positive != "sample":
            out["objective"]["multi_positive"] = self.objective.multi_positive
        if self.objective.hard_negatives is not None:
            out["objective"]["hard_negatives"] = dataclasses.asdict(self.objective.hard_negatives)
        if self.task is None:
            del out["task"]
        return out


def _modality_to_dict(m: ModalityConfig) -> dict[str, Any]:
    enc: dict[str, Any] = {"name": m.encoder.name, "freeze": m.encoder.freeze, **m.encoder.options}
    out: dict[str, Any] = {"kind": m.kind, **m.options, "encoder": enc}
    if m.multi:  # written only when set: a single-valued config reads as before
        out["multi"] = True
    if m.stats:
        out["stats"] = m.stats
    return out


def _check_keys(section: str, given: dict[str, Any], cls: type) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    for key in given:
        if key not in names:
            raise ConfigError(
                f"unknown config key '{section}.{key}'{nearest(key, names)}; "
                f"keys of '{section}': {', '.join(names)}"
            )


def _coerce(section: str, key: str, value: Any, hint: Any) -> Any:
    """Check a scalar against its field type; YAML reads ``3e-4`` as a string, so numbers are parsed."""
    if value is None or hint not in (int, float, bool, str):
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    elif hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    elif hint is str and isinstance(value, str):
        return value
    raise ConfigError(f"config key '{section}.{key}' expects {hint.__name__}, got {value!r}")


def _section(section: str, given: Any, cls: type) -> Any:
    if given is None:
        return cls()
    if not isinstance(given, dict):
        raise ConfigError(f"config section '{section}' must be a mapping, got {type(given).__name__}")
    _check_keys(section, given, cls)
    hints = typing.get_type_hints(cls)
    given = {k: _coerce(section, k, v, hints.get(k)) for k, v in given.items()}
    try:
        return cls(**given)
    except TypeError as exc:
        raise ConfigError(f"config section '{section}': {exc}") from None


def _parse_modality(name: str, spec: Any) -> ModalityConfig:
    from omnibind.data.kinds import KINDS
    from omnibind.data.kinds.base import kind_options

    if not isinstance(spec, dict) or "kind" not in spec:
        raise ConfigError(
            f"modality '{name}' must be a mapping with a 'kind' (one of {', '.join(KINDS.names())})"
        )
    spec = dict(spec)
    kind = spec.pop("kind")
    if kind not in KINDS:
        raise ConfigError(f"modalities.{name}.kind: unknown kind '{kind}'{nearest(kind, KINDS.names())}")
    enc_raw = spec.pop("encoder", None)
    stats = spec.pop("stats", {}) or {}
    multi = spec.pop("multi", False)
    if not isinstance(multi, bool):
        raise ConfigError(f"modalities.{name}.multi must be true or false, got {multi!r}")
    try:
        kind_options(kind, spec)
    except ConfigError as exc:
        raise ConfigError(f"modalities.{name}: {exc}") from None
    if enc_raw is None:
        enc = EncoderConfig()
    elif isinstance(enc_raw, str):
        enc = EncoderConfig(name=enc_raw)
    elif isinstance(enc_raw, dict):
        enc_raw = dict(enc_raw)
        enc = EncoderConfig(
            name=str(enc_raw.pop("name", "") or ""),
            freeze=bool(enc_raw.pop("freeze", True)),
            options=enc_raw,
        )
    else:
        raise ConfigError(f"modalities.{name}.encoder must be a name or a mapping")
    return ModalityConfig(kind=kind, options=spec, encoder=enc, stats=stats, multi=multi)


def _parse_data(given: Any) -> DataConfig:
    """The ``data`` section; ``missing`` is a list of mappings, each checked like a section of its own."""
    if not isinstance(given, dict) or "missing" not in given:
        return _section("data", given, DataConfig)
    given = dict(given)
    entries = given.pop("missing") or []
    if not isinstance(entries, list):
        raise ConfigError(f"data.missing must be a list of mappings, got {entries!r}")
    data = _section("data", given, DataConfig)
    for i, entry in enumerate(entries):
        key = f"data.missing[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{key} must be a mapping with modality and rate, got {entry!r}")
        for required in ("modality", "rate"):
            if required not in entry:
                raise ConfigError(f"{key} needs '{required}'")
        entry = dict(entry)
        if entry.get("value") is not None and not isinstance(entry["value"], str):
            entry["value"] = str(entry["value"])  # classes are strings: 3 in YAML is the class "3"
        data.missing.append(_section(key, entry, MissingConfig))
    return data


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    """Validate a plain dict (parsed YAML) and build a :class:`RunConfig`."""
    if not isinstance(raw, dict):
        raise ConfigError("a config must be a mapping at the top level")
    top = [f.name for f in dataclasses.fields(RunConfig)]
    for key in raw:
        if key not in top:
            raise ConfigError(
                f"unknown config key '{key}'{nearest(key, top)}; top-level keys: {', '.join(top)}"
            )
    mods = raw.get("modalities")
    if not isinstance(mods, dict) or not mods:
        raise ConfigError("config needs 'modalities': a mapping from modality name to {kind: ...}")
    modalities = {str(n): _parse_modality(str(n), s) for n, s in mods.items()}
    obj_raw = dict(raw.get("objective") or {})
    local_loss = obj_raw.pop("local_loss", False)
    if not isinstance(local_loss, bool):
        raise ConfigError(f"objective.local_loss must be true or false, got {local_loss!r}")
    multi_positive = obj_raw.pop("multi_positive", "sample")
    hard = obj_raw.pop("hard_negatives", None)
    objective = ObjectiveConfig(
        name=str(obj_raw.pop("name", "infonce")),
        options=obj_raw,
        local_loss=local_loss,
        multi_positive=multi_positive,
        hard_negatives=None
        if hard is None
        else _section("objective.hard_negatives", hard, HardNegativesConfig),
    )
    ev_raw = dict(raw.get("eval") or {})
    zs = ev_raw.pop("zero_shot", []) or []
    ev = _section("eval", ev_raw, EvalConfig)
    ev.zero_shot = [_section(f"eval.zero_shot[{i}]", z, ZeroShotConfig) for i, z in enumerate(zs)]
    cfg = RunConfig(
        modalities=modalities,
        data=_parse_data(raw.get("data")),
        model=_section("model", raw.get("model"), ModelConfig),
        objective=objective,
        train=_section("train", raw.get("train"), TrainConfig),
        eval=ev,
        task=None if raw.get("task") is None else _section("task", raw.get("task"), TaskConfig),
    )
    _check_values(cfg)
    return cfg


def _check_multi_positive(cfg: RunConfig) -> None:
    mode = cfg.objective.multi_positive
    if mode not in ("sample", "all"):
        raise ConfigError(f"objective.multi_positive must be 'sample' or 'all', got {mode!r}")
    if mode == "all" and cfg.objective.name != "infonce":
        raise ConfigError(
            f"objective.multi_positive: all is a multi-positive InfoNCE; objective '{cfg.objective.name}' "
            "takes one value per modality: use multi_positive: sample, or objective infonce"
        )
    hard = cfg.objective.hard_negatives
    if hard is None:
        return
    for key in ("mine_every", "k"):
        if getattr(hard, key) < 1:
            raise ConfigError(f"objective.hard_negatives.{key} must be at least 1, got {getattr(hard, key)}")
    if mode == "all":
        raise ConfigError(
            "objective.hard_negatives with multi_positive: all (several rows per item) is not supported; "
            "use multi_positive: sample"
        )


def _check_values(cfg: RunConfig) -> None:
    from omnibind.objectives import OBJECTIVES

    if cfg.objective.name not in OBJECTIVES:
        raise ConfigError(
            f"objective.name: unknown objective '{cfg.objective.name}'"
            f"{nearest(cfg.objective.name, OBJECTIVES.names())}; known: {', '.join(OBJECTIVES.names())}"
        )
    if cfg.data.on_error not in ("stop", "skip"):
        raise ConfigError(f"data.on_error must be 'stop' or 'skip', got {cfg.data.on_error!r}")
    _check_multi_positive(cfg)
    _check_missing(cfg)
    if cfg.eval.relevance not in ("auto", "facts", "label", "item"):
        raise ConfigError(f"eval.relevance must be auto, facts, label or item, got {cfg.eval.relevance!r}")
    if cfg.model.projection not in ("linear", "mlp", "bn", "none"):
        raise ConfigError(f"model.projection must be linear, mlp, bn or none, got {cfg.model.projection!r}")
    if cfg.model.freeze_encoders and not cfg.model.init:
        raise ConfigError("model.freeze_encoders needs model.init (the trained run whose encoders to keep)")
    if cfg.task is not None and (cfg.model.init or cfg.model.freeze_encoders):
        raise ConfigError(
            "model.init and model.freeze_encoders are for embedding models; a classifier starts from a "
            "trained run with task.init (and task.freeze_encoders)"
        )
    if cfg.model.dim < 1:
        raise ConfigError(f"model.dim must be a positive integer, got {cfg.model.dim}")
    from omnibind.training.precision import check_device_spec, check_precision_name

    check_device_spec(cfg.train.device)
    check_precision_name(cfg.train.precision)
    if cfg.data.validate not in ("auto", "full", "structure"):
        raise ConfigError(f"data.validate must be auto, full or structure, got {cfg.data.validate!r}")
    if not isinstance(cfg.data.cache, str) or not cfg.data.cache:
        raise ConfigError(f"data.cache must be auto, memory, none or a folder, got {cfg.data.cache!r}")
    if cfg.train.workers < 0:
        raise ConfigError(f"train.workers must be 0 or more, got {cfg.train.workers}")
    if not cfg.train.dist_timeout > 0:
        raise ConfigError(
            f"train.dist_timeout must be a positive number of seconds, got {cfg.train.dist_timeout}"
        )
    micro = cfg.train.micro_batch_size
    if micro < 0 or (micro and cfg.train.batch_size % micro):
        raise ConfigError(
            f"train.micro_batch_size must be 0 (off) or divide train.batch_size ({cfg.train.batch_size}), "
            f"got {micro}"
        )
    if micro and cfg.model.projection == "bn":
        raise ConfigError(
            "train.micro_batch_size with model.projection: bn: batch normalisation uses the statistics of "
            "each micro-batch, so the step would differ from the whole batch's; use projection linear or mlp"
        )
    if cfg.train.batch_size < 2:
        raise ConfigError(
            f"train.batch_size must be at least 2 (contrastive losses need negatives), "
            f"got {cfg.train.batch_size}"
        )
    for z in cfg.eval.zero_shot:
        if z.method == "prompts" and z.text not in cfg.modalities:
            raise ConfigError(f"eval.zero_shot '{z.name}': text modality '{z.text}' is not declared")
    if cfg.task is not None:
        _check_task(cfg.task)


def _check_missing(cfg: RunConfig) -> None:
    splits = ("train", "val", "test")
    for i, entry in enumerate(cfg.data.missing):
        key = f"data.missing[{i}]"
        if entry.modality not in cfg.modalities:
            raise ConfigError(
                f"{key}.modality: '{entry.modality}' is not a declared modality"
                f"{nearest(entry.modality, list(cfg.modalities))}; declared: {', '.join(cfg.modalities)}"
            )
        if not 0.0 < entry.rate <= 1.0:
            raise ConfigError(f"{key}.rate must be in (0, 1], got {entry.rate}")
        if not entry.field or any(not part.strip() for part in entry.field.split("+")):
            raise ConfigError(f"{key}.field must name a label, fact or column, got {entry.field!r}")
        if entry.value is None:
            entry.value = ""
        if not isinstance(entry.splits, list) or not entry.splits:
            raise ConfigError(f"{key}.splits must be a non-empty list of {', '.join(splits)}")
        for split in entry.splits:
            if split not in splits:
                raise ConfigError(
                    f"{key}.splits: unknown split {split!r}{nearest(str(split), list(splits))}; "
                    f"splits: {', '.join(splits)}"
                )


def _check_task(task: TaskConfig) -> None:
    from omnibind.fusion import FUSION_HEADS

    if task.type != "classify":
        raise ConfigError(
            f"task.type: unknown task '{task.type}'{nearest(task.type, ['classify'])}; known: classify"
        )
    if task.head not in FUSION_HEADS:
        raise ConfigError(
            f"task.head: unknown fusion head '{task.head}'{nearest(task.head, FUSION_HEADS.names())}; "
            f"known: {', '.join(FUSION_HEADS.names())}"
        )
    if not isinstance(task.head_options, dict):
        raise ConfigError(f"task.head_options must be a mapping, got {task.head_options!r}")
    _check_labels(task)
    if not 0.0 <= task.modality_dropout < 1.0:
        raise ConfigError(f"task.modality_dropout must be in [0, 1), got {task.modality_dropout}")
    from omnibind.training.balance import BALANCE_METHODS

    if task.balance and task.balance not in BALANCE_METHODS:
        raise ConfigError(
            f"task.balance: unknown balance method '{task.balance}'"
            f"{nearest(task.balance, BALANCE_METHODS.names())}; known: {', '.join(BALANCE_METHODS.names())}"
        )
    if not isinstance(task.balance_options, dict):
        raise ConfigError(f"task.balance_options must be a mapping, got {task.balance_options!r}")


def _check_labels(task: TaskConfig) -> None:
    """``task.label``: one label or a list of distinct ones; ``task.multilabel``: a bool or some of them."""
    labels = [task.label] if isinstance(task.label, str) else task.label
    if not isinstance(labels, list) or not labels:
        raise ConfigError(f"task.label must be a label or a list of labels, got {task.label!r}")
    for label in labels:
        if not isinstance(label, str) or not label or any(not p.strip() for p in label.split("+")):
            raise ConfigError(
                f"task.label must name a label, fact or column (or several joined by '+'), got {label!r}"
            )
    if len(set(labels)) < len(labels):
        raise ConfigError(f"task.label lists a label twice: {labels!r}")
    if isinstance(task.multilabel, list):
        unknown = [m for m in task.multilabel if m not in labels]
        if len(labels) == 1 or unknown:
            raise ConfigError(
                "task.multilabel: a list names which of several tasks (entries of task.label) are "
                f"multi-label; got {task.multilabel!r} for labels {labels!r}"
            )
    elif not isinstance(task.multilabel, bool):
        raise ConfigError(
            f"config key 'task.multilabel' expects bool or a list of labels, got {task.multilabel!r}"
        )
    if len(labels) == 1:
        task.label = labels[0]  # a one-entry list is the single-task run it describes
    if not isinstance(task.classes, (list, dict)):
        raise ConfigError(f"task.classes must be a list (or a mapping per task), got {task.classes!r}")


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides to a raw config dict; values are parsed as YAML scalars.

    A path through an existing section must name existing keys of typed sections (checked later by
    :func:`config_from_dict`, which suggests the nearest key); missing intermediate mappings are created.
    """
    out = _deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {key!r}: '{p}' is not a section")
            node = nxt
        node[parts[-1]] = yaml.safe_load(value) if value != "" else None
    return out


def _deepcopy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deepcopy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deepcopy(v) for v in d]
    return d


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config, apply dotted overrides and validate.

    A relative ``data.source`` manifest path is resolved against the config's folder.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    raw = apply_overrides(raw, overrides or [])
    cfg = config_from_dict(raw)
    base = path.resolve().parent
    if not cfg.data.source.startswith("builtin:") and not Path(cfg.data.source).is_absolute():
        cfg.data.source = str((base / cfg.data.source).resolve())
    return cfg
