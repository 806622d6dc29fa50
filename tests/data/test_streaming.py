"""Streaming training data (``data.cache: none | DIR``, ``train.workers``, ``data.validate``): the same
weights as the in-memory path, a disk cache that is reused, refused or invalidated, and bad values that
stop or are skipped while training."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from omnibind.config import config_from_dict
from omnibind.data.batch import Batch
from omnibind.data.kinds import create_kind
from omnibind.data.kinds.image import ImageKind
from omnibind.data.manifest import read_manifest
from omnibind.data.streaming import validate_records
from omnibind.errors import ConfigError, DataError
from omnibind.training import trainer
from omnibind.training.trainer import train

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 20)}


def _manifest(folder: Path, n: int = 96, seed: int = 0) -> Path:
    """``n`` items: a 16x16 PNG of a colour (absent for about a third) and a caption naming it."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        name = list(COLOURS)[i % len(COLOURS)]
        row: dict = {"id": f"item{i}", "caption": f"a {name} square number {i % 7}"}
        if rng.random() > 0.33:
            pixels = np.clip(np.array(COLOURS[name]) + rng.integers(-20, 20, (16, 16, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"img{i}.png")
            row["image"] = f"img{i}.png"
        rows.append(row)
    path = folder / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _raw(source: Path, **data: object) -> dict:
    return {
        "modalities": {
            "image": {"kind": "image", "size": 16, "encoder": {"name": "conv2d", "width": 8}},
            "caption": {"kind": "text", "encoder": {"name": "bag_of_tokens", "width": 16, "buckets": 256}},
        },
        "data": {"source": str(source), "val_fraction": 0, "test_fraction": 0, **data},
        "model": {"dim": 8},
        "objective": {"name": "infonce"},
        "train": {"epochs": 3, "batch_size": 32, "max_steps": 6, "warmup_steps": 0, "progress": False},
    }


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "checkpoint.pt", weights_only=False)["modules"]["model"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_streaming_workers_and_disk_cache_train_the_in_memory_weights(tmp_path: Path) -> None:
    source = _manifest(tmp_path / "data")
    train(config_from_dict(_raw(source, cache="memory")), tmp_path / "memory")
    want = _weights(tmp_path / "memory")
    train(config_from_dict(_raw(source, cache="none")), tmp_path / "none")
    assert _same(want, _weights(tmp_path / "none"))
    raw = _raw(source, cache=str(tmp_path / "cache"))
    raw["train"]["workers"] = 2
    train(config_from_dict(raw), tmp_path / "workers")
    assert _same(want, _weights(tmp_path / "workers"))
    assert (tmp_path / "cache" / "train" / "image.npy").exists()


def test_a_second_run_reads_the_disk_cache_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _manifest(tmp_path / "data")
    raw = _raw(source, cache=str(tmp_path / "cache"), validate="structure")
    raw["train"]["epochs"] = 1
    raw["train"]["max_steps"] = 0  # one whole epoch: every item is prepared once
    train(config_from_dict(raw), tmp_path / "first")

    def refuse(self: ImageKind, value: object, base_dir: object) -> None:
        raise AssertionError("an image was decoded although it is in the cache")

    monkeypatch.setattr(ImageKind, "prepare", refuse)
    train(config_from_dict(raw), tmp_path / "second")
    assert _same(_weights(tmp_path / "first"), _weights(tmp_path / "second"))


def test_a_cache_of_another_config_is_refused(tmp_path: Path) -> None:
    source = _manifest(tmp_path / "data")
    train(config_from_dict(_raw(source, cache=str(tmp_path / "cache"))), tmp_path / "first")
    raw = _raw(source, cache=str(tmp_path / "cache"))
    raw["modalities"]["image"]["size"] = 12
    with pytest.raises(
        ConfigError, match="holds the cache of another source or config .differs in modalities"
    ):
        train(config_from_dict(raw), tmp_path / "second")
    assert not (tmp_path / "second").exists()
    other = _manifest(tmp_path / "other", n=64, seed=1)
    with pytest.raises(ConfigError, match="differs in source"):
        train(config_from_dict(_raw(other, cache=str(tmp_path / "cache"))), tmp_path / "third")


def test_a_changed_source_invalidates_the_cache(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = _manifest(tmp_path / "data")
    raw = _raw(source, cache=str(tmp_path / "cache"))
    train(config_from_dict(raw), tmp_path / "first")
    first = next(p for p in sorted((tmp_path / "data").glob("img*.png")))
    Image.new("RGB", (16, 16), (0, 0, 0)).save(first)  # the same file name, new content
    capsys.readouterr()
    train(config_from_dict(raw), tmp_path / "second")
    assert "the source changed" in capsys.readouterr().err
    # the rebuilt cache holds the new pixels of the changed image
    fresh = _raw(source, cache="memory")
    train(config_from_dict(fresh), tmp_path / "memory")
    assert _same(_weights(tmp_path / "memory"), _weights(tmp_path / "second"))


def _break_one_image(folder: Path) -> str:
    """Truncate the pixel data of one PNG: its header still reads, decoding it fails."""
    path = sorted(folder.glob("img*.png"))[0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path.name


def test_structure_checks_headers_and_full_decodes(tmp_path: Path) -> None:
    source = _manifest(tmp_path / "data", n=24)
    broken = _break_one_image(tmp_path / "data")
    records = read_manifest(source)
    kinds = {"image": create_kind("image", {"size": 16}), "caption": create_kind("text", {})}
    kept, errors, _ = validate_records(records, kinds, "structure", progress=False)
    assert len(kept) == 24 and not errors  # the header is intact
    with pytest.raises(DataError, match=broken):
        validate_records(records, kinds, "full", progress=False)
    kept, errors, _ = validate_records(records, kinds, "full", on_error="skip", progress=False)
    assert len(kept) == 23 and errors[0].modality == "image"
    (tmp_path / "data" / broken).unlink()
    with pytest.raises(DataError, match="image"):
        validate_records(records, kinds, "structure", progress=False)


def test_a_value_that_fails_while_training_stops_or_is_skipped(tmp_path: Path) -> None:
    source = _manifest(tmp_path / "data")
    broken = _break_one_image(tmp_path / "data")
    raw = _raw(source, cache="none", validate="structure")
    raw["train"]["checkpoint_every"] = 1
    with pytest.raises(DataError, match=f"field 'image'.*{broken}|{broken}.*"):
        train(config_from_dict(raw), tmp_path / "stop")
    ckpt = tmp_path / "stop" / "checkpoints" / "checkpoint.pt"
    if ckpt.exists():  # the bad item came after a step: that step's checkpoint is intact
        assert torch.load(ckpt, weights_only=False)["step"] >= 1

    raw["data"]["on_error"] = "skip"
    raw["train"]["workers"] = 1
    train(config_from_dict(raw), tmp_path / "skip")
    lines = [json.loads(x) for x in (tmp_path / "skip" / "skipped.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["field"] == "image" and broken in lines[0]["reason"]


def test_workers_refuse_a_kind_that_cannot_be_pickled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _manifest(tmp_path / "data", n=64)
    original = trainer.build_kinds

    def with_a_lock(cfg: object) -> dict:
        kinds = original(cfg)
        kinds["image"].lock = threading.Lock()  # a lock cannot go to another process
        return kinds

    monkeypatch.setattr(trainer, "build_kinds", with_a_lock)
    raw = _raw(source, cache="none")
    raw["train"]["workers"] = 2
    with pytest.raises(ConfigError, match="modality 'image' .kind 'ImageKind'. cannot be pickled"):
        train(config_from_dict(raw), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_batch_select_cuts_a_micro_batch() -> None:
    present = torch.tensor([[True, False], [True, True], [False, True], [True, True]])
    batch = Batch(
        ids=["a", "b", "c", "d"],
        modalities=("x", "t"),
        values={"x": torch.arange(3.0)[:, None], "t": ["b", "c", "d"]},
        present=present,
    )
    part = batch.select(torch.tensor([1, 2]))
    assert part.ids == ["b", "c"]
    assert part.values["x"].flatten().tolist() == [1.0] and part.values["t"] == ["b", "c"]
    assert part.present.tolist() == [[True, True], [False, True]]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("validate", "quick", "data.validate must be auto, full or structure"),
        ("cache", "", "data.cache must be auto, memory, none or a folder"),
    ],
)
def test_bad_data_settings(key: str, value: str, message: str, tmp_path: Path) -> None:
    raw = _raw(tmp_path / "x.jsonl", **{key: value})
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_frozen_encoder_outputs_are_cached_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``model.init`` + ``freeze_encoders`` with ``data.cache: DIR``: the first run writes the frozen
    encoders' outputs under DIR/train/features-*, a second run trains from them without running the
    image encoder, and both give the weights of a run that computes the features every step."""
    from omnibind.encoders.builtin.conv import Conv2dEncoder

    source = _manifest(tmp_path / "data")
    train(config_from_dict(_raw(source, cache="memory")), tmp_path / "base")
    raw = _raw(source, cache=str(tmp_path / "cache"))
    raw["model"].update({"init": str(tmp_path / "base"), "freeze_encoders": True})
    plain = _raw(source, cache="none")
    plain["model"].update(raw["model"])
    train(config_from_dict(plain), tmp_path / "plain")
    train(config_from_dict(raw), tmp_path / "first")
    assert list((tmp_path / "cache" / "train").glob("features-*/image.npy"))

    calls = []
    original = Conv2dEncoder.forward

    def counting(self: Conv2dEncoder, x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return original(self, x)

    monkeypatch.setattr(Conv2dEncoder, "forward", counting)
    train(config_from_dict(raw), tmp_path / "second")
    assert calls == []  # every training item's image features came from the cache
    want = _weights(tmp_path / "plain")
    for run in ("first", "second"):
        got = _weights(tmp_path / run)
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6)


def test_training_from_shards_gives_the_manifest_weights(tmp_path: Path) -> None:
    """Shards keep ids and order and are read by offset: streaming from them, in a worker, trains the
    weights of the manifest run (and so resumes exactly like it)."""
    from omnibind.data.manifest import read_manifest as read
    from omnibind.data.shards import write_shards

    source = _manifest(tmp_path / "data")
    write_shards(read(source), tmp_path / "shards", shard_size=40, progress=False)
    train(config_from_dict(_raw(source, cache="memory")), tmp_path / "manifest")
    raw = _raw(tmp_path / "shards", cache="none")
    raw["train"]["workers"] = 1
    train(config_from_dict(raw), tmp_path / "shards-run")
    assert _same(_weights(tmp_path / "manifest"), _weights(tmp_path / "shards-run"))
