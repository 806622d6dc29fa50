import json

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from omnibind.data.dataset import fit_kinds, prepare_dataset, split_records, write_skipped
from omnibind.data.kinds import create_kind
from omnibind.data.manifest import read_manifest
from omnibind.data.record import Record
from omnibind.errors import DataError


def _kinds():
    return {
        "image": create_kind("image", {"size": 8}),
        "audio": create_kind("audio", {"sample_rate": 8000, "seconds": 0.25, "n_fft": 128, "n_mels": 16,
                                       "resample": False}),
        "caption": create_kind("text"),
        "ecg": create_kind("signal", {"channels": 2, "length": 10}),
        "vitals": create_kind("tabular", {"columns": ["hr", "bp"]}),
    }  # fmt: skip


def _media(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    soundfile.write(tmp_path / "ok.wav", rng.normal(0, 0.1, 1000).astype(np.float32), 8000)
    soundfile.write(tmp_path / "fast.wav", rng.normal(0, 0.1, 1000).astype(np.float32), 16000)
    soundfile.write(tmp_path / "stereo.wav", rng.normal(0, 0.1, (1000, 2)).astype(np.float32), 8000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000WAVEnope")


def _manifest(tmp_path, rows):
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return read_manifest(path, list(_kinds()))


GOOD = [
    {"id": "g1", "image": "ok.png", "audio": "ok.wav", "caption": "one", "ecg": [[0] * 10, list(range(10))],
     "vitals": {"hr": 60, "bp": 120}, "label": 0},
    {"id": "g2", "caption": "two", "vitals": [80, 140], "label": 1},
    {"id": "g3", "image": "ok.png", "ecg": [list(range(10)), [1] * 10]},
    {"id": "g4", "audio": "ok.wav", "caption": "four", "vitals": [70, 130], "label": 1},
]  # fmt: skip


@pytest.mark.parametrize(
    "field, value, expectation",
    [
        ("image", "missing.png", "does not exist"),
        ("image", "bad.png", "expected a readable PNG/JPEG image"),
        ("audio", "bad.wav", "expected a readable WAV file"),
        ("audio", "fast.wav", "expected audio at 8000 Hz, got 16000 Hz"),
        ("audio", "stereo.wav", r"expected 1 audio channel\(s\), got 2"),
        ("caption", "   ", "expected non-empty text"),
        ("ecg", [[0] * 10, [0] * 9 + [float("nan")]], "expected finite numbers"),
        ("ecg", [[0] * 10, [0] * 9 + [float("inf")]], "expected finite numbers"),
        ("vitals", {"hr": float("nan"), "bp": 1}, "column 'hr': expected a finite number"),
        ("vitals", {"hr": "fast", "bp": 1}, "column 'hr': expected a number"),
    ],
)
def test_bad_value_names_line_id_field(tmp_path, field, value, expectation):
    _media(tmp_path)
    records = _manifest(tmp_path, [GOOD[0], {"id": "bad", "caption": "fine", field: value}])
    with pytest.raises(DataError, match=expectation) as info:
        prepare_dataset(records, _kinds(), progress=False)
    err = info.value
    assert (err.line, err.record_id, err.modality) == (2, "bad", field)
    assert str(err).startswith(f"{tmp_path / 'm.jsonl'}:2, id='bad', field '{field}': ")


def test_skip_drops_bad_rows_and_writes_skipped(tmp_path):
    _media(tmp_path)
    rows = [
        GOOD[0],
        {"id": "b1", "image": "bad.png"},
        GOOD[1],
        {"id": "b2", "caption": "x", "audio": "bad.wav"},
    ]
    ds, skipped = prepare_dataset(_manifest(tmp_path, rows), _kinds(), on_error="skip", progress=False)
    assert ds.ids == ["g1", "g2"]
    assert [(e.line, e.record_id, e.modality) for e in skipped] == [(2, "b1", "image"), (4, "b2", "audio")]
    out = write_skipped(tmp_path / "run" / "skipped.jsonl", skipped)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["line"], x["id"], x["field"]) for x in lines] == [(2, "b1", "image"), (4, "b2", "audio")]
    assert "expected a readable PNG/JPEG image" in lines[0]["reason"]
    assert lines[0]["source"] == str(tmp_path / "m.jsonl")


def test_undeclared_modality_and_empty_record():
    kinds = {"caption": create_kind("text")}
    with pytest.raises(DataError, match=r"id='x', field 'captoin': 'captoin' is not a declared.*'caption'"):
        prepare_dataset([Record("x", {"captoin": "hi"}, source="s", line=1)], kinds, progress=False)
    with pytest.raises(DataError, match=r"s:4, id='y': expected at least one of the modalities caption"):
        prepare_dataset([Record("y", {}, source="s", line=4)], kinds, progress=False)


def test_batch_present_mask_and_rows(tmp_path):
    _media(tmp_path)
    kinds = _kinds()
    ds, skipped = prepare_dataset(_manifest(tmp_path, GOOD), kinds, progress=False)
    assert not skipped and len(ds) == 4
    assert ds.modalities == ("image", "audio", "caption", "ecg", "vitals")
    expected = torch.tensor(
        [[1, 1, 1, 1, 1], [0, 0, 1, 0, 1], [1, 0, 0, 1, 0], [0, 1, 1, 0, 1]], dtype=torch.bool
    )
    assert torch.equal(ds.present, expected)
    assert ds.values["image"].shape == (2, 3, 8, 8) and ds.values["caption"] == ["one", "two", "four"]
    assert ds.row_of["caption"].tolist() == [0, 1, -1, 2]

    batch = ds.batch([3, 2, 1])
    assert batch.ids == ["g4", "g3", "g2"]
    assert torch.equal(batch.present, expected[[3, 2, 1]])
    assert batch.values["caption"] == ["four", "two"]
    assert torch.equal(batch.values["vitals"], torch.tensor([[70.0, 130.0], [80.0, 140.0]]))
    assert torch.equal(batch.values["ecg"], ds.values["ecg"][1:2])
    assert torch.equal(batch.values["audio"], ds.values["audio"][1:2])
    assert batch.labels == [1, None, 1]

    only_g2 = ds.batch(torch.tensor([1]))
    assert set(only_g2.values) == {"caption", "vitals"}  # modalities with no present row are omitted

    sub = ds.subset([3, 0])
    assert sub.ids == ["g4", "g1"] and sub.values["caption"] == ["four", "one"]
    assert torch.equal(sub.present, expected[[3, 0]])
    assert sub.row_of["image"].tolist() == [-1, 0]
    assert torch.equal(sub.values["image"][0], ds.values["image"][0])

    batches = list(ds.iter_batches(3))
    assert [b.ids for b in batches] == [["g1", "g2", "g3"], ["g4"]]


def test_fit_kinds_uses_training_values():
    kinds = {"vitals": create_kind("tabular", {"columns": ["hr"]}), "caption": create_kind("text")}
    train = [Record("a", {"vitals": [10.0]}), Record("b", {"vitals": [30.0], "caption": "x"})]
    assert fit_kinds(train, kinds) == []
    assert kinds["vitals"].state() == {"mean": [20.0], "std": [10.0]}
    ds, _ = prepare_dataset(train, kinds, progress=False)
    assert ds.values["vitals"].flatten().tolist() == [-1.0, 1.0]
    bad = [Record("c", {"vitals": ["x"]}, source="m.csv", line=3)]
    with pytest.raises(DataError, match=r"m\.csv:3, id='c', field 'vitals'"):
        fit_kinds(bad, kinds)
    assert len(fit_kinds(bad, kinds, on_error="skip")) == 1


def test_split_records():
    records = [Record(str(i), {"t": "x"}) for i in range(100)]
    records[0].split = "test"
    records[1].split = "train"
    parts = split_records(records, 0.1, 0.2, seed=3)
    assert sum(len(v) for v in parts.values()) == 100
    assert records[0] in parts["test"] and records[1] in parts["train"]
    assert (len(parts["val"]), len(parts["test"])) == (10, 1 + 20)  # 98 free: round(9.8), round(19.6)
    again = split_records(records, 0.1, 0.2, seed=3)
    assert [r.id for r in again["val"]] == [r.id for r in parts["val"]]
    assert [int(r.id) for r in parts["train"]] == sorted(int(r.id) for r in parts["train"])
    records[5].split = "validation"
    with pytest.raises(DataError, match=r"id='5', field 'split': expected split to be one of.*'validation'"):
        split_records(records, 0.1, 0.1, seed=0)
