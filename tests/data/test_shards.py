"""WebDataset shards: write, read back without decoding, decode by offset; errors name the shard."""

from __future__ import annotations

import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from omnibind.cli.main import app
from omnibind.data.kinds import create_kind
from omnibind.data.record import Record
from omnibind.data.shards import ShardMember, write_shards
from omnibind.data.sources import load_source
from omnibind.errors import DataError
from tests.helpers import tiny_shapes_config

runner = CliRunner()
KINDS = {
    "image": ("image", {"size": 8}),
    "caption": ("text", {}),
    "sound": ("audio", {"sample_rate": 8000, "seconds": 0.25, "n_mels": 8, "n_fft": 64}),
    "vitals": ("signal", {"channels": 1, "length": 4}),
    "labs": ("tabular", {"columns": ["age", "crp"]}),
}
SHAPES = "builtin:shapes?n=60&missing=0.2&image_size=16&seconds=0.25"


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """Eight items with PNG images, WAV audio, inline and .txt captions, inline numbers; holes in each."""
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(tmp_path / f"img/{i}.png")
        tone = (0.5 * np.sin(2 * np.pi * (200 + 50 * i) * np.arange(2000) / 8000)).astype(np.float32)
        soundfile.write(tmp_path / f"{i}.wav", tone, 8000, subtype="FLOAT")
        row = {
            "id": f"p.{i}/x" if i == 3 else f"p{i}",  # a dot and a slash: the key is made safe
            "image": f"img/{i}.png" if i % 3 != 1 else None,
            "caption": f"item number {i}" if i % 2 == 0 else None,
            "sound": f"{i}.wav" if i % 4 != 2 else None,
            "vitals": [float(i), 1.0, 2.0, 3.0] if i < 4 else None,
            "labs": {"age": 40 + i, "crp": 0.5 * i},
            "label": i % 2,
            "meta.site": "AB"[i % 2],
        }
        if i == 5:
            (tmp_path / "c5.txt").write_text("from a file é", encoding="utf-8")
            row["caption"] = "c5.txt"
        if i == 7:
            row["split"] = "test"
        rows.append({k: v for k, v in row.items() if v is not None})
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _kinds() -> dict:
    return {name: create_kind(kind, opts) for name, (kind, opts) in KINDS.items()}


def _same(a: object, b: object) -> bool:
    return a == b if isinstance(a, str) else torch.equal(a, b)  # type: ignore[arg-type]


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    import io

    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _assert_same_records(shard_records: list[Record], originals: list[Record]) -> None:
    assert [r.id for r in shard_records] == [r.id for r in originals]
    kinds = _kinds()
    for got, want in zip(shard_records, originals, strict=True):
        assert (got.label, got.split, got.metadata) == (want.label, want.split, want.metadata)
        assert set(got.values) == set(want.values), got.id
        for name, value in got.values.items():
            assert isinstance(value, ShardMember)
            expected = kinds[name].prepare(want.values[name], want.base_dir)
            assert _same(kinds[name].prepare(value, None), expected), (got.id, name)


def test_round_trip_keeps_ids_labels_metadata_presence_and_tensors(manifest: Path, tmp_path: Path) -> None:
    original = load_source(str(manifest)).records
    out = write_shards(original, tmp_path / "shards", shard_size=3, progress=False, source="items.jsonl")
    loaded = load_source(str(out))
    _assert_same_records(loaded.records, original)
    # errors can name the shard and the sample's place in it
    assert [(Path(r.source).name, r.line) for r in loaded.records[:4]] == [
        ("shard-000000.tar", 1),
        ("shard-000000.tar", 2),
        ("shard-000000.tar", 3),
        ("shard-000001.tar", 1),
    ]
    names = tarfile.open(out / "shard-000001.tar").getnames()
    assert {"p_3_x.json", "p_3_x.image.png", "p_3_x.vitals.json"} <= set(names), names  # a safe key
    assert "p_3_x.caption.txt" not in names  # absent modality: no member
    assert {"p4.sound.wav", "p4.labs.json", "p5.caption.txt"} <= set(names)
    member = loaded.records[0].values["image"]
    assert pickle.loads(pickle.dumps(member)) == member  # DataLoader workers get it by pickle


def test_any_item_reads_by_offset_in_any_order(manifest: Path, tmp_path: Path) -> None:
    original = load_source(str(manifest)).records
    records = load_source(str(write_shards(original, tmp_path / "s", shard_size=3, progress=False))).records
    kind = create_kind("image", {"size": 8})
    with_image = [i for i, r in enumerate(original) if "image" in r.values]
    for i in reversed(with_image):
        expected = kind.prepare(original[i].values["image"], original[i].base_dir)
        assert torch.equal(kind.prepare(records[i].values["image"], None), expected)


def test_shards_json_counts_and_source(manifest: Path, tmp_path: Path) -> None:
    original = load_source(str(manifest)).records
    out = write_shards(original, tmp_path / "s", shard_size=3, progress=False, source="items.jsonl")
    index = json.loads((out / "shards.json").read_text())
    assert index["format"] == "omnibind-shards" and index["version"] == 1
    assert index["source"] == "items.jsonl" and index["total"] == 8
    assert [s["samples"] for s in index["shards"]] == [3, 3, 2]
    assert [s["name"] for s in index["shards"]] == [f"shard-00000{i}.tar" for i in range(3)]
    assert all(s["bytes"] == (out / s["name"]).stat().st_size for s in index["shards"])
    assert set(index["modalities"]) == set(KINDS)
    assert index["present"] == {m: sum(m in r.values for r in original) for m in index["modalities"]}
    assert sorted(p.name for p in out.iterdir()) == ["shard-000000.tar", "shard-000001.tar"] + [
        "shard-000002.tar",
        "shards.json",
    ], "no temporary files are left"


def test_brace_pattern_and_single_tar_sources(manifest: Path, tmp_path: Path) -> None:
    original = load_source(str(manifest)).records
    out = write_shards(original, tmp_path / "s", shard_size=3, progress=False)
    _assert_same_records(load_source(f"{out}/shard-{{000000..000002}}.tar").records, original)
    both = load_source(f"{out}/shard-{{000000,000002}}.tar").records
    assert [r.id for r in both] == [r.id for r in original[:3] + original[6:]]
    single = load_source(str(out / "shard-000001.tar"))
    _assert_same_records(single.records, original[3:6])


def test_a_missing_shard_in_a_pattern_is_named(manifest: Path, tmp_path: Path) -> None:
    out = write_shards(load_source(str(manifest)).records, tmp_path / "s", shard_size=3, progress=False)
    with pytest.raises(DataError, match=r"shard-000003\.tar' does not exist \(2 of 5 shards are missing\)"):
        load_source(f"{out}/shard-{{000000..000004}}.tar")
    with pytest.raises(DataError, match=r"no\.tar' does not exist"):
        load_source(str(tmp_path / "no.tar"))
    (out / "shards.json").unlink()
    with pytest.raises(DataError, match=r"expected a shards folder with a shards\.json"):
        load_source(str(out))


def test_a_corrupt_member_names_shard_key_and_modality(manifest: Path, tmp_path: Path) -> None:
    out = write_shards(load_source(str(manifest)).records, tmp_path / "s", shard_size=3, progress=False)
    shard = out / "shard-000000.tar"
    record = load_source(str(out)).records[0]
    member = record.values["image"]
    with open(shard, "r+b") as f:  # overwrite the PNG signature and header inside the tar
        f.seek(member.offset)
        f.write(b"\0" * 32)
    assert load_source(str(out)).records[0].values["image"] == member  # headers still fine
    with pytest.raises(ValueError) as err:
        create_kind("image").load(member, None)
    assert str(err.value).startswith("shard-000000.tar, key 'p0', member 'p0.image.png': expected a readable")
    assert "BytesIO" not in str(err.value)
    # through the dataset the error also names the record: shard path, sample position, id and field
    from omnibind.data.dataset import prepare_dataset

    kinds = _kinds()
    with pytest.raises(DataError, match=r"shard-000000\.tar:1, id='p0', field 'image': shard-000000"):
        prepare_dataset([record], kinds, progress=False)


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_a_truncated_tar_is_a_data_error_naming_it(manifest: Path, tmp_path: Path, keep: float) -> None:
    out = write_shards(load_source(str(manifest)).records, tmp_path / "s", shard_size=3, progress=False)
    shard = out / "shard-000001.tar"
    data = shard.read_bytes()
    members = load_source(str(shard)).records
    end = max(m.offset + m.size for r in members for m in r.values.values())
    cut = int(len(data) * keep) if keep < 0.9 else end  # mid-member, or just before the end marker
    shard.write_bytes(data[:cut])
    with pytest.raises(DataError, match=r"shard-000001\.tar: .*(truncated|corrupt)"):
        load_source(str(out))


def test_a_shard_shorter_than_its_index_says_is_an_error(manifest: Path, tmp_path: Path) -> None:
    records = load_source(str(manifest)).records
    out = write_shards(records, tmp_path / "s", shard_size=3, progress=False)
    write_shards(records[:2], tmp_path / "other", shard_size=3, progress=False)
    (out / "shard-000000.tar").write_bytes((tmp_path / "other" / "shard-000000.tar").read_bytes())
    with pytest.raises(DataError, match=r"shard-000000\.tar: the shard has 2 samples, shards\.json says 3"):
        load_source(str(out))


def test_a_missing_file_names_the_record_and_nothing_is_kept(manifest: Path, tmp_path: Path) -> None:
    records = load_source(str(manifest)).records
    (manifest.parent / "7.wav").unlink()
    with pytest.raises(DataError, match=r"items\.jsonl:8, id='p7', field 'sound': expected a file.*7\.wav"):
        write_shards(records, tmp_path / "s", shard_size=3, progress=False)
    assert list((tmp_path / "s").iterdir()) == []


def test_in_memory_values_become_npy_and_decode_the_same(tmp_path: Path) -> None:
    shapes = load_source(SHAPES)
    out = write_shards(shapes.records, tmp_path / "s", shard_size=25, progress=False)
    loaded = load_source(str(out), modalities=["image", "sound", "table"])
    assert "caption" not in {m for r in loaded.records for m in r.values}  # kept the declared ones
    kinds = {
        "image": create_kind("image", {"size": 16}),
        "sound": create_kind("audio", {"sample_rate": 8000, "seconds": 0.25}),
        "table": create_kind("tabular", {"columns": ["width", "height", "x", "y"]}),
    }
    by_id = {r.id: r for r in shapes.records}
    for rec in loaded.records:
        assert rec.facts == by_id[rec.id].facts
        for name, value in rec.values.items():
            assert value.suffix == {"image": ".npy", "sound": ".npy", "table": ".json"}[name]
            want = kinds[name].prepare(by_id[rec.id].values[name], None)
            assert torch.equal(kinds[name].prepare(value, None), want), (rec.id, name)


def test_a_wave_with_its_rate_becomes_a_lossless_wav(tmp_path: Path) -> None:
    wave = np.random.default_rng(1).uniform(-1, 1, 3000).astype(np.float32)
    rec = Record(id="a", values={"sound": (wave, 11025)})
    out = write_shards([rec], tmp_path / "s", progress=False)
    member = load_source(str(out)).records[0].values["sound"]
    assert member.name == "a.sound.wav"
    kind = create_kind("audio", {"sample_rate": 11025})
    assert np.array_equal(kind.load(member, None), kind.load((wave, 11025), None))


def test_foreign_webdataset_shards_read_by_extension(tmp_path: Path) -> None:
    """An open_clip-style shard (KEY.jpg, KEY.txt, img2dataset's KEY.json) reads with `jpg`/`txt` fields."""
    import io

    buf = io.BytesIO()
    Image.new("RGB", (6, 6), (200, 10, 10)).save(buf, format="JPEG")
    members = [("000.jpg", buf.getvalue()), ("000.txt", b"a red square"), ("000.json", b"{}")]
    shard = _tar(tmp_path / "foreign.tar", members)
    (rec,) = load_source(str(shard)).records
    assert rec.id == "000" and set(rec.values) == {"jpg", "txt"}
    assert create_kind("text").load(rec.values["txt"], None) == "a red square"
    assert create_kind("image", {"size": 6}).prepare(rec.values["jpg"], None).shape == (3, 6, 6)


def test_bad_samples_skip_or_stop_and_undeclared_modalities(tmp_path: Path) -> None:
    shard = _tar(
        tmp_path / "s.tar",
        [("a.json", b'{"id": "a"}'), ("a.text.txt", b"ok"), ("b.json", b"{not json"), ("b.text.txt", b"x")],
    )
    with pytest.raises(DataError, match=r"s\.tar:2, id='b': key 'b': member 'b\.json' is not JSON"):
        load_source(str(shard))
    loaded = load_source(str(shard), on_error="skip")
    assert [r.id for r in loaded.records] == ["a"] and [e.line for e in loaded.skipped] == [2]
    with pytest.raises(DataError, match=r"no sample has a declared modality \(txt\).*did you mean 'text'"):
        load_source(str(shard), modalities=["txt"], on_error="skip")


def test_cli_writes_summarises_and_refuses_a_non_empty_folder(manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    result = runner.invoke(app, ["shards", str(manifest), "--out", str(out), "--shard-size", "3"])
    assert result.exit_code == 0, result.output
    assert "wrote 3 shards, 8 samples, " in result.output and " bytes " in result.output
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    result = runner.invoke(app, ["shards", str(manifest), "--out", str(out), "--shard-size", "8"])
    assert result.exit_code == 2 and "is not empty" in result.output and "--overwrite" in result.output
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before, "nothing written"
    again = ["shards", str(manifest), "--out", str(out), "--shard-size", "8", "--overwrite"]
    result = runner.invoke(app, again)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["shard-000000.tar", "shards.json"], "stale shards go"
    _assert_same_records(load_source(str(out)).records, load_source(str(manifest)).records)


def test_cli_bad_record_is_one_line_naming_it(manifest: Path, tmp_path: Path) -> None:
    (manifest.parent / "img" / "0.png").unlink()
    result = runner.invoke(app, ["shards", str(manifest), "--out", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert "items.jsonl:1, id='p0', field 'image'" in result.output and "0.png" in result.output


def test_train_on_a_shards_folder(tmp_path: Path) -> None:
    out = tmp_path / "shards"
    result = runner.invoke(app, ["shards", SHAPES, "--out", str(out), "--shard-size", "16"])
    assert result.exit_code == 0, result.output
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_shapes_config(n=60, epochs=1)))
    result = runner.invoke(
        app, ["train", str(config), "--out", str(tmp_path / "run"), "--set", f"data.source={out}"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "image->caption" in metrics["retrieval"]
