"""``hf``: a transformers ``AutoModel`` backbone for images (ViT-like), audio (AST) or text (BERT-like).

transformers is imported when the encoder is built. The backbone comes from a local folder (``path``,
as written by ``save_pretrained``) or, for tests and from-scratch runs, from a config dict
(``{"model_type": "vit", "hidden_size": 32, ...}``, randomly initialised). What the model takes is read
from its ``main_input_name``:

- ``pixel_values`` (ViT and kin): images ``[C, H, W]`` in ``[-1, 1]`` as the image kind makes them;
  resized to the backbone's ``image_size`` and, when the folder has a ``preprocessor_config.json``,
  renormalised to its ``image_mean`` / ``image_std``. A 1-channel image is repeated to 3 channels.
- ``input_values`` (AST): log-mel ``[1, n_mels, frames]``, passed as ``[frames, n_mels]``; ``n_mels``
  must equal the backbone's ``num_mel_bins`` and frames are cut or zero-padded to its ``max_length``.
  The values are passed as they are: a checkpoint trained on its own feature extractor's scale (AST's
  AudioSet mean and std) wants the audio kind set up to match.
- ``input_values`` (wav2vec2, HuBERT and kin, whose config has no ``num_mel_bins``): raw waveforms
  ``[1, samples]`` from the audio kind with ``features: waveform`` and ``sample_rate: 16000``, standardised
  per clip (as their feature extractors do unless the folder's ``preprocessor_config.json`` says
  ``do_normalize: false``).
- ``input_ids`` (BERT and kin): strings, tokenised with the folder's tokenizer (so text needs ``path``).

Freezing works as in :mod:`omnibind.encoders.pretrained.sentence_transformers`: a fully frozen backbone
is held outside the module tree (not saved, always eval); a trainable or partly trainable one is saved.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omnibind.encoders.adapt import freeze as freeze_module
from omnibind.encoders.adapt import lora
from omnibind.encoders.adapt import unfreeze_last as unfreeze_last_blocks
from omnibind.encoders.base import ENCODERS, Encoder, check_rank
from omnibind.errors import ConfigError

_POOLINGS = ("cls", "mean", "pooler")


def load_backbone(path: str, config: dict[str, Any] | None) -> nn.Module:
    """An ``AutoModel`` from a local folder, or randomly initialised from a dict with ``model_type``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    if path:
        if not Path(path).is_dir():
            raise ConfigError(f"encoder 'hf': model folder '{path}' does not exist")
        return transformers.AutoModel.from_pretrained(path, local_files_only=True)
    if not config or "model_type" not in config:
        raise ConfigError("encoder 'hf' needs 'path' (a local model folder) or 'config' with a 'model_type'")
    options = {k: v for k, v in config.items() if k != "model_type"}
    return transformers.AutoModel.from_config(
        transformers.AutoConfig.for_model(config["model_type"], **options)
    )


@ENCODERS.register("hf")
class HFEncoder(Encoder):
    """A transformers backbone (ViT-like image, AST or wav2vec2 audio, BERT-like text) pooled to one vector.

    Args:
        input_shape: ``[C, H, W]`` (image), ``[1, n_mels, frames]`` (AST), ``[1, samples]`` (wav2vec2 /
            HuBERT) or ``()`` (text).
        path: a local folder written by ``save_pretrained`` (model, and tokenizer for text).
        config: instead of ``path``, a config dict with ``model_type`` for a randomly initialised backbone.
        freeze: keep the backbone fixed; see the module docstring for saving.
        pooling: ``"cls"`` (first token), ``"mean"`` (mean over tokens, padding excluded) or ``"pooler"``
            (the model's ``pooler_output``).
        unfreeze_last: with ``freeze``, let the last this many transformer layers train.
        lora_rank: with ``freeze``, add LoRA adapters of this rank (needs ``peft``); 0 means none. Only the
            adapters train, and they are saved with the model.
        lora_targets: name suffixes of the linear layers that get adapters (the defaults cover BERT's
            ``query``/``value`` and the ``q_proj``/``v_proj`` of transformers 5 ViT and AST).
        max_tokens: text is cut to this many tokens.

    Inputs:
        x: ``[n, *input_shape]`` float, or ``list[str]`` of length n for text.

    Returns:
        ``[n, hidden_size]``.

    Example:
        >>> import torch
        >>> cfg = {"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        ...        "intermediate_size": 64, "image_size": 32, "patch_size": 8}
        >>> HFEncoder((3, 32, 32), config=cfg)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 32])
    """

    kinds = ("image", "audio", "text")
    pretrained = True

    def __init__(
        self,
        input_shape: tuple[int, ...],
        path: str = "",
        config: dict[str, Any] | None = None,
        freeze: bool = True,
        pooling: str = "mean",
        unfreeze_last: int = 0,
        lora_rank: int = 0,
        lora_targets: tuple[str, ...] = ("query", "value", "q_proj", "v_proj"),
        max_tokens: int = 128,
    ) -> None:
        super().__init__()
        if pooling not in _POOLINGS:
            raise ConfigError(f"encoder 'hf': pooling must be one of {', '.join(_POOLINGS)}, got '{pooling}'")
        if (unfreeze_last > 0 or lora_rank > 0) and not freeze:
            raise ConfigError("encoder 'hf': unfreeze_last and lora_rank need freeze=true")
        model = load_backbone(path, config)
        if pooling != "pooler" and getattr(model, "pooler", None) is not None:
            model.pooler = None  # unused: drop it so every trainable parameter gets a gradient
        if getattr(model.config, "apply_spec_augment", False):
            # wav2vec2 / HuBERT mask random spans of training inputs (SpecAugment): off, so an item's
            # output does not change between epochs, and its mask embedding (never trained) goes
            model.config.apply_spec_augment = False
            if getattr(model, "masked_spec_embed", None) is not None:
                model.masked_spec_embed = None
        self.input_name = str(model.main_input_name)
        self.pooling = pooling
        self.max_tokens = max_tokens
        self.output_dim = int(model.config.hidden_size)
        self._check_input(input_shape, model.config, path)
        self.backbone: nn.Module
        self.frozen = freeze and unfreeze_last <= 0 and lora_rank <= 0
        if self.frozen:
            self.hold_frozen("backbone", model)
        else:
            if freeze:
                unfreeze_last_blocks(freeze_module(model), unfreeze_last)
            if lora_rank > 0:
                model = lora(model, lora_rank, lora_targets, owner="encoder 'hf'")
            self.backbone = model

    def _check_input(self, input_shape: tuple[int, ...], cfg: Any, path: str) -> None:
        self.tokenizer: Any = None
        if self.input_name == "pixel_values":
            check_rank("hf", input_shape, 3, "[C, H, W] for an image backbone")
            if input_shape[0] not in (1, cfg.num_channels):
                raise ConfigError(
                    f"encoder 'hf': {input_shape[0]}-channel images, backbone wants {cfg.num_channels}"
                )
            size = cfg.image_size
            self.image_size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
            self.channels = int(cfg.num_channels)
            mean, std = _image_stats(path)
            self.register_buffer("image_mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
            self.register_buffer("image_std", torch.tensor(std).view(-1, 1, 1), persistent=False)
        elif self.input_name == "input_values" and not hasattr(cfg, "num_mel_bins"):
            check_rank(
                "hf", input_shape, 2, "[1, samples] for a waveform backbone (audio features: waveform)"
            )
            if input_shape[0] != 1:
                raise ConfigError(f"encoder 'hf': a waveform backbone takes 1 channel, got {input_shape[0]}")
            self.waveform_norm = _do_normalize(path)
        elif self.input_name == "input_values":
            check_rank("hf", input_shape, 3, "[1, n_mels, frames] for an audio backbone")
            if input_shape[0] != 1 or input_shape[1] != cfg.num_mel_bins:
                raise ConfigError(
                    f"encoder 'hf': audio input {list(input_shape)} must be [1, {cfg.num_mel_bins}, frames] "
                    "(set the audio kind's mel bins to the backbone's num_mel_bins)"
                )
            self.frames = int(cfg.max_length)
        elif self.input_name == "input_ids":
            check_rank("hf", input_shape, 0, "() (text) for a text backbone")
            if not path:
                raise ConfigError("encoder 'hf': a text backbone needs 'path', a folder with its tokenizer")
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        else:
            raise ConfigError(f"encoder 'hf': backbones taking '{self.input_name}' are not supported")

    def _inputs(self, x: Tensor | list[str], device: torch.device) -> dict[str, Tensor]:
        if self.input_name == "input_ids":
            assert self.tokenizer is not None
            tokens = self.tokenizer(
                list(x), padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
            )
            return {k: v.to(device) for k, v in tokens.items()}
        assert isinstance(x, Tensor)
        x = x.to(device)
        if self.input_name == "pixel_values":
            if x.shape[1] == 1 and self.channels == 3:
                x = x.expand(-1, 3, -1, -1)
            if tuple(x.shape[-2:]) != self.image_size:
                x = F.interpolate(
                    x, size=self.image_size, mode="bilinear", align_corners=False, antialias=True
                )
            return {"pixel_values": ((x + 1) / 2 - self.image_mean) / self.image_std}  # [n, C, S, S]
        if x.dim() == 3:  # waveform [n, 1, samples]
            wave = x[:, 0]
            if self.waveform_norm:
                wave = (wave - wave.mean(1, keepdim=True)) / torch.sqrt(wave.var(1, keepdim=True) + 1e-7)
            return {"input_values": wave}  # [n, samples]
        spec = x[:, 0].transpose(1, 2)  # [n, 1, mel, frames] -> [n, frames, mel]
        spec = spec[:, : self.frames]
        if spec.shape[1] < self.frames:
            spec = F.pad(spec, (0, 0, 0, self.frames - spec.shape[1]))
        return {"input_values": spec}  # [n, max_length, mel]

    def _pool(self, out: Any, mask: Tensor | None) -> Tensor:
        if self.pooling == "pooler":
            return out.pooler_output
        hidden = out.last_hidden_state  # [n, T, hidden]
        if self.pooling == "cls":
            return hidden[:, 0]
        if mask is None:
            return hidden.mean(1)
        keep = mask.unsqueeze(-1).to(hidden.dtype)  # [n, T, 1]
        return (hidden * keep).sum(1) / keep.sum(1).clamp_min(1)

    def forward(self, x: Tensor | list[str]) -> Tensor:
        device = next(self.backbone.parameters()).device
        inputs = self._inputs(x, device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.backbone(**inputs)
            return self._pool(out, inputs.get("attention_mask"))


def _do_normalize(path: str) -> bool:
    """The folder preprocessor's ``do_normalize`` (per-clip standardisation of waveforms), else True."""
    file = Path(path) / "preprocessor_config.json" if path else None
    if file is not None and file.is_file():
        return bool(json.loads(file.read_text()).get("do_normalize", True))
    return True


def _image_stats(path: str) -> tuple[list[float], list[float]]:
    """The folder preprocessor's ``image_mean`` / ``image_std``, else 0.5 / 0.5 (which keeps ``[-1, 1]``)."""
    file = Path(path) / "preprocessor_config.json" if path else None
    if file is not None and file.is_file():
        pre = json.loads(file.read_text())
        if "image_mean" in pre and "image_std" in pre:
            return [float(v) for v in pre["image_mean"]], [float(v) for v in pre["image_std"]]
    return [0.5], [0.5]
