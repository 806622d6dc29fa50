import dataclasses

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from omnibind.data.kinds import KINDS, create_kind

# ---------------------------------------------------------------- every kind


@pytest.mark.parametrize("name", KINDS.names())
def test_kind_contract(name):
    cls = KINDS.get(name)
    assert dataclasses.is_dataclass(cls.Options)
    assert cls.default_encoder
    assert cls.name == name


# ---------------------------------------------------------------- image


def test_image_from_png_gray_and_array(tmp_path):
    arr = (np.arange(20 * 30) % 256).astype(np.uint8).reshape(20, 30)
    Image.fromarray(arr).save(tmp_path / "a.png")
    kind = create_kind("image", {"size": 16, "channels": 3})
    x = kind.prepare("a.png", tmp_path)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(x[0], x[1])  # grey repeated to RGB
    y = kind.prepare(arr, None)
    assert torch.allclose(x, y, atol=1e-2)
    z = kind.prepare(arr.astype(np.float32) / 255.0, None)
    assert torch.allclose(y, z, atol=1e-5)


def test_image_same_size_is_exact():
    kind = create_kind("image", {"size": 4, "channels": 1})
    arr = np.full((4, 4), 255, dtype=np.uint8)
    assert torch.equal(kind.prepare(arr, None), torch.ones(1, 4, 4))
    assert kind.input_shape() == (1, 4, 4)


def test_image_pil_rgba():
    kind = create_kind("image", {"size": 8})
    img = Image.new("RGBA", (10, 12), (255, 0, 0, 128))
    x = kind.prepare(img, None)
    assert x.shape == (3, 8, 8)
    assert torch.allclose(x[0], torch.ones(8, 8)) and torch.allclose(x[1], -torch.ones(8, 8))


def test_image_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"expected an image file.*nope\.png.*does not exist"):
        create_kind("image").load("nope.png", tmp_path)


def test_image_corrupt_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"expected a readable PNG/JPEG image.*bad\.png"):
        create_kind("image").load("bad.png", tmp_path)


@pytest.mark.parametrize(
    "value, message",
    [
        (np.zeros((2, 3, 5), np.uint8), "HxW or HxWxC"),
        (np.full((4, 4), 2.0, np.float32), "float pixels in 0..1"),
        (np.full((4, 4), np.nan, np.float32), "finite"),
        (np.zeros((4, 4), np.int64), "uint8"),
        (42, "expected an image path"),
    ],
)
def test_image_bad_arrays(value, message):
    with pytest.raises(ValueError, match=message):
        create_kind("image").load(value, None)


# ---------------------------------------------------------------- audio


def _tone(rate, seconds=0.5, freq=440.0, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    wave = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def test_audio_wav_and_array_agree(tmp_path):
    soundfile.write(tmp_path / "a.wav", _tone(8000), 8000, subtype="FLOAT")
    kind = create_kind("audio", {"sample_rate": 8000, "n_fft": 256, "n_mels": 32})
    x = kind.prepare("a.wav", tmp_path)
    assert x.shape == kind.input_shape() == (1, 32, 1 + 8000 // 64)
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
    assert torch.allclose(x, kind.prepare(_tone(8000), None), atol=1e-4)
    assert torch.allclose(x, kind.prepare((_tone(8000), 8000), None), atol=1e-4)
    # the second half is zero padding: log(1e-6)
    assert torch.allclose(x[0, :, -5:], torch.full((32, 5), float(np.log(1e-6))), atol=1e-3)


def test_audio_resamples_other_rates():
    kind = create_kind("audio", {"sample_rate": 16000, "seconds": 0.5})
    raw = kind.load((_tone(8000), 8000), None)
    assert raw.shape == (1, 8000)
    x = kind.transform(raw)
    # a 440 Hz tone: the loudest mel band is the same as for the tone made at 16 kHz
    y = kind.prepare(_tone(16000), None)
    assert x[0].mean(dim=1).argmax() == y[0].mean(dim=1).argmax()


def test_audio_wrong_rate_without_resample():
    kind = create_kind("audio", {"sample_rate": 16000, "resample": False})
    with pytest.raises(ValueError, match=r"expected audio at 16000 Hz, got 8000 Hz"):
        kind.load((_tone(8000), 8000), None)


def test_audio_channels(tmp_path):
    soundfile.write(tmp_path / "st.wav", _tone(16000, channels=2), 16000)
    with pytest.raises(ValueError, match=r"expected 1 audio channel\(s\), got 2.*downmix"):
        create_kind("audio").load("st.wav", tmp_path)
    raw = create_kind("audio", {"downmix": True}).load("st.wav", tmp_path)
    assert raw.shape == (1, 8000)


def test_audio_corrupt_wav(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(ValueError, match=r"expected a readable WAV file.*bad\.wav"):
        create_kind("audio").load("bad.wav", tmp_path)


def test_audio_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"expected a WAV audio file.*gone\.wav.*does not exist"):
        create_kind("audio").load("gone.wav", tmp_path)


@pytest.mark.parametrize(
    "value, message",
    [
        (np.array([0.1, np.nan, 0.2], np.float32), "finite"),
        (np.array([0.1, np.inf], np.float32), "finite"),
        (np.zeros(0, np.float32), "non-empty"),
        (np.zeros((1, 2, 3), np.float32), r"\[samples\] or \[channels, samples\]"),
    ],
)
def test_audio_bad_values(value, message):
    with pytest.raises(ValueError, match=message):
        create_kind("audio").load(value, None)


def test_audio_top_db_and_normalize():
    opts = {"sample_rate": 8000, "n_fft": 256, "n_mels": 32}
    plain = create_kind("audio", opts).prepare(_tone(8000), None)
    floored = create_kind("audio", {**opts, "top_db": 40}).prepare(_tone(8000), None)
    floor = float(plain.max()) - 40 * np.log(10) / 10  # 40 dB of power in natural-log units
    assert float(floored.min()) == pytest.approx(floor, abs=1e-4)  # the zero padding sits on the floor
    assert torch.allclose(floored, torch.clamp(plain, min=floor), atol=1e-5)
    # loudness does not change a normalised clip (log-mel of a 10x quieter tone: the same up to the floor)
    both = create_kind("audio", {**opts, "top_db": 40, "normalize": True})
    loud, quiet = both.prepare(_tone(8000), None), both.prepare(0.1 * _tone(8000), None)
    assert abs(float(loud.mean())) < 1e-5 and float(loud.std()) == pytest.approx(1.0, abs=1e-4)
    assert torch.allclose(loud, quiet, atol=1e-3)
    with pytest.raises(ValueError, match="top_db must be a positive"):
        create_kind("audio", {"top_db": 0})


def test_audio_int16_is_scaled():
    kind = create_kind("audio")
    raw = kind.load(np.array([-32768, 16384], np.int16), None)
    assert np.allclose(raw, [[-1.0, 0.5]])


# ---------------------------------------------------------------- text


def test_text_inline_file_and_truncation(tmp_path):
    (tmp_path / "t.txt").write_text("héllo from a file", encoding="utf-8")
    kind = create_kind("text", {"max_chars": 5})
    assert kind.prepare("t.txt", tmp_path) == "héllo"
    assert kind.prepare("a red circle", None) == "a red"
    assert kind.collate(["a", "b"]) == ["a", "b"]
    assert kind.input_shape() == ()


@pytest.mark.parametrize("value", ["", "   \n"])
def test_text_empty(value):
    with pytest.raises(ValueError, match="expected non-empty text"):
        create_kind("text").load(value, None)


def test_text_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"expected a UTF-8 \.txt file.*does not exist"):
        create_kind("text").load("missing.txt", tmp_path)


# ---------------------------------------------------------------- signal


def test_signal_shapes_and_normalisation(tmp_path):
    data = np.random.default_rng(0).normal(3.0, 2.0, size=(2, 50))
    np.save(tmp_path / "s.npy", data)
    kind = create_kind("signal", {"channels": 2, "length": 50})
    x = kind.prepare("s.npy", tmp_path)
    assert x.shape == (2, 50) and x.dtype == torch.float32
    assert torch.allclose(x.mean(dim=1), torch.zeros(2), atol=1e-5)
    assert torch.allclose(x.std(dim=1, unbiased=False), torch.ones(2), atol=1e-4)
    raw_kind = create_kind("signal", {"channels": 1, "length": 3, "normalize": False})
    assert torch.equal(raw_kind.prepare([1, 2, 3], None), torch.tensor([[1.0, 2.0, 3.0]]))


@pytest.mark.parametrize(
    "value, message",
    [
        ([[1.0, float("nan"), 2.0]], "finite"),
        ([[1.0, float("inf"), 2.0]], "finite"),
        ([[1.0, 2.0]], "expected signal length 3, got 2"),
        ([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], r"expected 1 signal channel\(s\), got 2"),
        (["a", "b", "c"], "non-numeric"),
    ],
)
def test_signal_bad_values(value, message):
    with pytest.raises(ValueError, match=message):
        create_kind("signal", {"channels": 1, "length": 3}).load(value, None)


# ---------------------------------------------------------------- tabular


def test_tabular_dict_list_fit_and_state():
    kind = create_kind("tabular", {"columns": ["a", "b"]})
    raws = [kind.load({"a": 1, "b": 10}, None), kind.load([3, 30], None)]
    assert torch.equal(kind.transform(raws[0]), torch.tensor([1.0, 10.0]))  # not fitted yet
    kind.fit(raws)
    assert torch.allclose(kind.transform(raws[0]), torch.tensor([-1.0, -1.0]))
    other = create_kind("tabular", {"columns": ["a", "b"]})
    other.load_state(kind.state())
    assert torch.allclose(other.transform(raws[1]), torch.tensor([1.0, 1.0]))
    const = create_kind("tabular", {"columns": ["c"]})
    const.fit([const.load([5.0], None)] * 3)
    assert const.state()["std"] == [1e-6]


@pytest.mark.parametrize(
    "value, message",
    [
        ({"a": 1}, "missing column 'b'"),
        ({"a": 1, "b": 2, "bb": 3}, r"unexpected column 'bb'.*did you mean 'b'"),
        ({"a": "x", "b": 2}, "column 'a': expected a number, got 'x'"),
        ({"a": 1, "b": float("nan")}, "column 'b': expected a finite number"),
        ([1, float("inf")], "column 'b': expected a finite number"),
        ([1, 2, 3], "expected 2 numbers"),
    ],
)
def test_tabular_bad_values(value, message):
    with pytest.raises(ValueError, match=message):
        create_kind("tabular", {"columns": ["a", "b"]}).load(value, None)


# ---------------------------------------------------------------- embedding


def test_embedding_dim_fixed_by_first_value(tmp_path):
    kind = create_kind("embedding")
    assert torch.equal(kind.prepare([0, 1, 1], None), torch.tensor([0.0, 1.0, 1.0]))
    assert kind.input_shape() == (3,)
    np.save(tmp_path / "e.npy", np.ones(3))
    assert kind.prepare("e.npy", tmp_path).shape == (3,)
    with pytest.raises(ValueError, match="expected a vector of length 3, got length 2"):
        kind.load([1, 2], None)
    with pytest.raises(ValueError, match="finite"):
        kind.load([1, float("nan"), 2], None)
