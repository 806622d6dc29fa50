"""Audio kind: a WAV file (or shard member) or a waveform array -> log-mel spectrogram
``[channels, n_mels, frames]`` or, with ``features: waveform``, the raw waveform ``[channels, samples]``."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from omnibind.data.kinds.base import KINDS, ModalityKind, OpenedFile, open_file_value, read_structured
from omnibind.data.shards import ShardMember

FEATURES = ("log_mel", "waveform")


@dataclass
class AudioOptions:
    """Options of the audio kind.

    Attributes:
        sample_rate: every waveform is brought to this rate (Hz).
        seconds: waveforms are zero-padded or cropped (from the start) to this duration.
        n_mels: mel bands of the spectrogram.
        n_fft: FFT size (and Hann window length) of the STFT.
        hop_length: STFT hop in samples; ``None`` means ``n_fft // 4``.
        channels: expected number of channels.
        resample: resample other rates to ``sample_rate`` (polyphase); if False a different rate is an error.
        downmix: average the channels of multi-channel audio when ``channels`` is 1; if False it is an error.
        top_db: if set, floor each clip's log-mel at its peak minus ``top_db`` decibels, so that padding
            and near-silence do not span a range (a median 75 dB on AV-MNIST's clips) that the encoder
            must learn to ignore.
        features: ``log_mel`` (default) or ``waveform``: the samples themselves, padded or cropped to
            ``seconds``, for encoders that take raw audio (wav2vec2 / HuBERT through ``hf``, at 16 kHz).
            The spectrogram options (``n_mels``, ``n_fft``, ``hop_length``, ``top_db``, ``normalize``)
            then do nothing.
        normalize: standardise each clip's log-mel to zero mean and unit variance (after ``top_db``).
            Together with ``top_db`` this removes loudness and microphone gain, which differ far more
            between speakers than between words: on AV-MNIST's unseen test speaker, audio-only accuracy
            goes from a collapse to one class in some seeds to about 0.64 (docs/benchmarks.md).
    """

    sample_rate: int = 16000
    seconds: float = 1.0
    n_mels: int = 64
    n_fft: int = 512
    hop_length: int | None = None
    channels: int = 1
    resample: bool = True
    downmix: bool = False
    top_db: float | None = None
    normalize: bool = False
    features: str = "log_mel"

    def __post_init__(self) -> None:
        if self.features not in FEATURES:
            raise ValueError(f"audio features must be one of {', '.join(FEATURES)}, got {self.features!r}")
        if (
            self.sample_rate < 1
            or self.seconds <= 0
            or self.n_mels < 1
            or self.n_fft < 2
            or self.channels < 1
        ):
            raise ValueError("audio sample_rate, seconds, n_mels, n_fft and channels must be positive")
        if self.hop_length is not None and self.hop_length < 1:
            raise ValueError(f"audio hop_length must be positive, got {self.hop_length}")
        if self.top_db is not None and not self.top_db > 0:
            raise ValueError(f"audio top_db must be a positive number of decibels, got {self.top_db}")


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> Tensor:
    """Triangular filters on the HTK mel scale from 0 Hz to Nyquist.

    Returns:
        ``[n_mels, n_fft // 2 + 1]`` weights; row ``m`` peaks at the ``m``-th of ``n_mels`` mel centres.
    """

    def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)  # [F] centre frequency of each FFT bin
    edges = mel_to_hz(np.linspace(0.0, float(hz_to_mel(sample_rate / 2)), n_mels + 2))  # [n_mels + 2]
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    return torch.from_numpy(np.maximum(0.0, np.minimum(rising, falling))).float()  # [n_mels, F]


_NATS_PER_DB = float(np.log(10.0) / 10.0)  # a power ratio of 1 dB in natural-log units


@KINDS.register("audio")
class AudioKind(ModalityKind):
    """Audio. ``load`` gives a float32 ``[channels, samples]`` waveform at ``sample_rate``; ``transform``
    pads/crops it to ``seconds`` and returns ``log(mel + 1e-6)`` of the Hann-window power STFT, floored at
    ``top_db`` below the clip's peak and standardised per clip when those options are set; with
    ``features: waveform`` it returns the padded/cropped samples ``[channels, samples]`` instead."""

    name = "audio"
    Options = AudioOptions
    default_encoder = "conv2d"

    def __init__(self, options: AudioOptions | None = None) -> None:
        super().__init__(options)
        o = self.options
        self.hop = o.hop_length or o.n_fft // 4
        self.num_samples = int(round(o.seconds * o.sample_rate))
        self._window = torch.hann_window(o.n_fft)
        self._mel = mel_filterbank(o.sample_rate, o.n_fft, o.n_mels)
        if o.features == "waveform":
            self.default_encoder = "conv1d"  # type: ignore[misc]  # [C, samples], as a signal

    def load(self, value: Any, base_dir: Path | None) -> np.ndarray:
        if isinstance(value, (str, Path, ShardMember)):
            wave, rate = self._read_file(open_file_value(value, base_dir, "a WAV audio file"))
        elif isinstance(value, tuple) and len(value) == 2:
            wave, rate = self._as_array(value[0]), value[1]
            if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate < 1:
                raise ValueError(
                    f"expected (waveform, sample_rate) with a positive integer rate, got {rate!r}"
                )
        elif isinstance(value, (np.ndarray, list)):
            wave, rate = self._as_array(value), self.options.sample_rate
        else:
            raise ValueError(
                f"expected a WAV path, a waveform array or (array, sample_rate), got {type(value).__name__}"
            )
        return self._conform(wave, int(rate))

    def check(self, value: Any, base_dir: Path | None) -> None:
        """A file: it exists and libsndfile reads its header; the samples are not decoded."""
        if not isinstance(value, (str, Path, ShardMember)):
            self.prepare(value, base_dir)
            return
        opened = open_file_value(value, base_dir, "a WAV audio file")
        if opened.suffix == ".npy":
            read_structured(opened, "a waveform")
            return
        import soundfile

        try:
            info = soundfile.info(opened.file)
        except (RuntimeError, OSError, TypeError) as exc:
            raise opened.error("a readable WAV file", exc) from None
        if info.frames < 1:
            raise opened.error("a WAV file with samples", "0 frames")

    def _read_file(self, opened: OpenedFile) -> tuple[np.ndarray, int]:
        if opened.suffix == ".npy":  # an in-memory waveform written to a shard: at the declared rate
            return self._as_array(read_structured(opened, "a waveform")), self.options.sample_rate
        import soundfile

        try:
            data, rate = soundfile.read(opened.file, dtype="float32", always_2d=True)  # [samples, channels]
        except (RuntimeError, OSError, TypeError) as exc:  # libsndfile errors are RuntimeErrors
            raise opened.error("a readable WAV file", exc) from None
        return np.ascontiguousarray(data.T), int(rate)

    @staticmethod
    def _as_array(value: Any) -> np.ndarray:
        arr = np.asarray(value)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise ValueError(
                f"expected a waveform of shape [samples] or [channels, samples], got {arr.shape}"
            )
        if np.issubdtype(arr.dtype, np.integer):
            # integer PCM: scale to [-1, 1) by the type's full range
            return (arr.astype(np.float32) / float(-np.iinfo(arr.dtype).min)).astype(np.float32)
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"expected a numeric waveform, got dtype {arr.dtype}")
        return arr.astype(np.float32)

    def _conform(self, wave: np.ndarray, rate: int) -> np.ndarray:
        o = self.options
        if wave.shape[1] == 0:
            raise ValueError("expected a non-empty waveform, got 0 samples")
        if not np.isfinite(wave).all():
            raise ValueError("expected finite audio samples, found NaN or inf")
        if wave.shape[0] != o.channels:
            if o.downmix and o.channels == 1:
                wave = wave.mean(axis=0, keepdims=True)
            else:
                hint = " (set downmix: true to average channels)" if o.channels == 1 else ""
                raise ValueError(f"expected {o.channels} audio channel(s), got {wave.shape[0]}{hint}")
        if rate != o.sample_rate:
            if not o.resample:
                raise ValueError(
                    f"expected audio at {o.sample_rate} Hz, got {rate} Hz (set resample: true to convert)"
                )
            from scipy.signal import resample_poly

            ratio = Fraction(o.sample_rate, rate)
            wave = resample_poly(wave, ratio.numerator, ratio.denominator, axis=1).astype(np.float32)
        return wave

    def transform(self, raw: np.ndarray) -> Tensor:
        n = self.num_samples
        x = torch.from_numpy(np.ascontiguousarray(raw[:, :n], dtype=np.float32))  # [C, <=n]
        if x.shape[1] < n:
            x = torch.nn.functional.pad(x, (0, n - x.shape[1]))
        if self.options.features == "waveform":
            return x  # [C, samples]
        spec = torch.stft(
            x, self.options.n_fft, hop_length=self.hop, window=self._window, center=True, return_complex=True
        )  # [C, F, frames]
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(self._mel, power)  # [C, n_mels, frames]
        out = torch.log(mel + 1e-6)
        o = self.options
        if o.top_db is not None:
            out = torch.maximum(out, out.max() - o.top_db * _NATS_PER_DB)
        if o.normalize:
            out = (out - out.mean()) / (out.std() + 1e-5)
        return out.float()

    def input_shape(self) -> tuple[int, ...]:
        if self.options.features == "waveform":
            return (self.options.channels, self.num_samples)
        frames = 1 + self.num_samples // self.hop
        return (self.options.channels, self.options.n_mels, frames)
