"""Classifier: the encoders of an OmniModel plus a fusion head, saved and loaded like an OmniModel.

Built from a :class:`~omnibind.config.RunConfig` whose ``task`` section holds the fitted class list, so a
saved classifier (``config.json`` + ``model.safetensors``) loads without training code::

    clf = Classifier.load("runs/avmnist-attention/model")
    out = clf(batch)                       # FusionOutput: logits [B, C]
    clf.classes[int(out.logits[0].argmax())]

With several tasks (``task.label: [shape, colour]``) the head's logits are ``[B, sum C_k]``;
``clf.tasks`` says which columns belong to which task and ``clf.split_logits(out.logits)`` cuts them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from omnibind.config import RunConfig
from omnibind.data.batch import Batch
from omnibind.errors import OmnibindError
from omnibind.fusion.base import FusionOutput, create_head
from omnibind.fusion.labels import LabelTask, label_tasks
from omnibind.fusion.late import LateFusion
from omnibind.model import OmniModel, model_dir, read_artifact, write_artifact
from omnibind.types import Embeddings

FORMAT = "omnibind-classifier/1"


class Classifier(nn.Module):
    """Encoders (an :class:`OmniModel`) and a fusion head over their embeddings.

    Args:
        config: a run config with a ``task`` section whose ``classes`` are set (training fits them).

    Attributes:
        encoder: the OmniModel; its logit scale is unused here and frozen.
        head: the fusion head named by ``config.task.head``, with one logit per class of every task.
        tasks: the tasks (:class:`~omnibind.fusion.labels.LabelTask`: label, classes, logit columns);
            one entry for a single-task classifier.
    """

    def __init__(self, config: RunConfig) -> None:
        super().__init__()
        task = config.task
        if task is None or not task.classes:
            raise OmnibindError("a Classifier needs a config with a 'task' section and its fitted classes")
        self.config = config
        self.tasks: list[LabelTask] = label_tasks(task)
        self.encoder = OmniModel(config)
        self.encoder.log_logit_scale.requires_grad_(False)
        width = sum(len(t.classes) for t in self.tasks)  # the tasks' logits side by side
        self.head = create_head(
            task.head, self.encoder.modalities, config.model.dim, width, **task.head_options
        )
        if task.freeze_encoders:
            self.encoder.requires_grad_(False)
        if isinstance(self.head, LateFusion):
            self.head.set_zero_input(self._zero_input)

    def _zero_input(self, modality: str) -> Tensor:
        """The encoder's embedding of an all-zero input (``late`` with ``impute: zeros``)."""
        if self.config.task is not None and self.config.task.freeze_encoders:
            with torch.no_grad():
                return self.encoder.encode_zero_input(modality)
        return self.encoder.encode_zero_input(modality)

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modality names; column ``m`` of every presence mask is ``modalities[m]``."""
        return self.encoder.modalities

    @property
    def classes(self) -> list[str]:
        """The class names, in logit order (single-task; a multi-task classifier has them per task).

        Raises:
            OmnibindError: the classifier has several tasks (use :attr:`tasks`).
        """
        return list(self._single().classes)

    @property
    def multilabel(self) -> bool:
        """Whether each class has its own sigmoid (multi-label) rather than one softmax over classes.

        Raises:
            OmnibindError: the classifier has several tasks (each has its own flag in :attr:`tasks`).
        """
        return self._single().multilabel

    def _single(self) -> LabelTask:
        if len(self.tasks) > 1:
            raise OmnibindError(
                f"this classifier has {len(self.tasks)} tasks ({', '.join(t.name for t in self.tasks)}); "
                "their classes and logit columns are in .tasks"
            )
        return self.tasks[0]

    def split_logits(self, logits: Tensor) -> dict[str, Tensor]:
        """Per task, its columns of the head's logits.

        Inputs:
            logits: ``[B, sum C_k]``, e.g. ``self(batch).logits``.

        Returns:
            ``{task label: [B, C_k]}``, in task order.
        """
        return {t.name: logits[:, t.columns] for t in self.tasks}

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.config.task is not None and self.config.task.freeze_encoders:
            self.encoder.eval()  # frozen encoders keep their normalisation statistics and no dropout
        return self

    def embed(self, batch: Batch) -> Embeddings:
        """``{modality: [B, D]}`` of the batch's present rows (no gradient when the encoders are frozen)."""
        if self.config.task is not None and self.config.task.freeze_encoders:
            with torch.no_grad():
                return self.encoder.encode(batch)
        return self.encoder.encode(batch)

    def forward(self, batch: Batch, present: Tensor | None = None) -> FusionOutput:
        """Classify a batch.

        Inputs:
            batch: a :class:`Batch` over B items.
            present: ``bool[B, M]`` to use instead of ``batch.present`` (a subset of it: modality dropout,
                subset evaluation); the head ignores every modality it marks absent.

        Returns:
            the head's :class:`FusionOutput` (``logits [B, C]``).
        """
        return self.head(self.embed(batch), batch.present if present is None else present)

    def init_encoders(self, path: str | Path) -> None:
        """Copy the encoders and projections of a trained OmniModel (a run or model folder) into this one.

        Raises:
            OmnibindError: the trained model lacks a modality of this one, or a weight's shape differs.
        """
        from omnibind.training.init import copy_weights

        copy_weights(self.encoder, path, projections=True, key="task.init")

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (each atomically)."""
        return write_artifact(directory, self, self.config, self.encoder.kinds, FORMAT)

    @classmethod
    def load(cls, directory: str | Path) -> Classifier:
        """Load a classifier saved by :meth:`save` (or the ``model/`` of a run folder), in eval mode."""
        config, weights = read_artifact(
            model_dir(directory), FORMAT, "an embedding model loads with OmniModel.load"
        )
        model = cls(config)
        model.load_state_dict(weights)
        model.eval()
        return model
