import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from omnibind.data.manifest import read_manifest, read_manifest_rows
from omnibind.errors import DataError

MODALITIES = ["image", "caption", "vitals"]

# Three items with holes: b has no image, c has no caption.
ROWS = [
    {"id": "a", "image": "a.png", "caption": "a red circle", "vitals": [1.0, 2.0], "label": 1,
     "split": "train", "facts": {"shape": "circle"}, "meta.site": "x"},
    {"id": "b", "image": None, "caption": "a blue square", "vitals": [3.0, 4.0], "label": 2, "split": "val",
     "facts": {"shape": "square"}, "meta.site": "y"},
    {"id": "c", "image": "c.png", "caption": None, "vitals": None, "label": 1, "split": "test",
     "facts": None, "meta.site": "z"},
]  # fmt: skip


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _write_csv(path, rows):
    fields = list(rows[0])
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            cells = {}
            for k, v in r.items():
                if v is None:
                    cells[k] = ""
                elif isinstance(v, (dict, list)):
                    cells[k] = json.dumps(v)
                else:
                    cells[k] = v
            writer.writerow(cells)
    return path


def _write_parquet(path, rows):
    table = {k: [r[k] for r in rows] for k in rows[0]}
    table["facts"] = [None if f is None else json.dumps(f) for f in table["facts"]]
    pq.write_table(pa.table(table), path)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_formats_give_the_same_records(tmp_path, fmt):
    writer = {"jsonl": _write_jsonl, "csv": _write_csv, "parquet": _write_parquet}[fmt]
    path = writer(tmp_path / f"m.{fmt}", ROWS)
    records = read_manifest(path, MODALITIES)
    assert [r.id for r in records] == ["a", "b", "c"]
    assert [sorted(r.values) for r in records] == [
        ["caption", "image", "vitals"],
        ["caption", "vitals"],
        ["image"],
    ]
    assert records[0].values == {"image": "a.png", "caption": "a red circle", "vitals": [1.0, 2.0]}
    assert [r.label for r in records] == [1, 2, 1]
    assert [r.split for r in records] == ["train", "val", "test"]
    assert [r.facts for r in records] == [{"shape": "circle"}, {"shape": "square"}, None]
    assert [r.metadata for r in records] == [{"site": "x"}, {"site": "y"}, {"site": "z"}]
    assert all(r.base_dir == tmp_path.resolve() and r.source == str(path) for r in records)
    expected_lines = [1, 2, 3] if fmt != "csv" else [2, 3, 4]
    assert [r.line for r in records] == expected_lines


def test_jsonl_blank_lines_keep_physical_numbers(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": 1, "caption": "x"}\n\n{"id": 2, "caption": "y", "metadata": {"k": 1}}\n')
    records = read_manifest(path, MODALITIES)
    assert [(r.id, r.line) for r in records] == [("1", 1), ("2", 3)]
    assert records[1].metadata == {"k": 1}


def test_nan_cell_is_absent(tmp_path):
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"id": [1, 2], "caption": ["x", "y"], "vitals": [float("nan"), 1.5]}), path)
    records = read_manifest(path, MODALITIES)
    assert records[0].values == {"caption": "x"} and records[1].values["vitals"] == 1.5


def test_undeclared_column_suggests_nearest(tmp_path):
    path = _write_jsonl(tmp_path / "m.jsonl", [{"id": "a", "caption": "x"}, {"id": "b", "imgae": "b.png"}])
    with pytest.raises(DataError) as info:
        read_manifest(path, MODALITIES)
    err = info.value
    assert (err.line, err.modality) == (2, "imgae")
    assert (
        f"{path}:2" in str(err)
        and "did you mean 'image'" in str(err)
        and "not a declared modality" in str(err)
    )


def test_undeclared_column_stops_even_when_skipping(tmp_path):
    path = _write_csv(tmp_path / "m.csv", [{"id": "a", "captoin": "x"}])
    with pytest.raises(DataError, match=r"m\.csv:2.*field 'captoin'.*did you mean 'caption'"):
        read_manifest_rows(path, MODALITIES, on_error="skip")


def test_duplicate_id_names_both_lines(tmp_path):
    path = _write_jsonl(tmp_path / "m.jsonl", [{"id": 7, "caption": "x"}, {"id": "8", "caption": "y"},
                                              {"id": "7", "caption": "z"}])  # fmt: skip
    with pytest.raises(DataError) as info:
        read_manifest(path, MODALITIES, on_error="skip")
    assert (info.value.line, info.value.record_id) == (3, "7")
    assert "m.jsonl:3" in str(info.value) and "already used at line 1" in str(info.value)


def test_row_without_modality(tmp_path):
    rows = [{"id": "a", "caption": "x"}, {"id": "b", "caption": "", "image": None, "label": 3}]
    path = _write_jsonl(tmp_path / "m.jsonl", rows)
    with pytest.raises(DataError) as info:
        read_manifest(path, MODALITIES)
    assert (info.value.line, info.value.record_id) == (2, "b")
    assert "m.jsonl:2, id='b'" in str(info.value) and "expected at least one modality" in str(info.value)
    records, skipped = read_manifest_rows(path, MODALITIES, on_error="skip")
    assert [r.id for r in records] == ["a"] and [e.record_id for e in skipped] == ["b"]


def test_missing_id(tmp_path):
    path = _write_jsonl(tmp_path / "m.jsonl", [{"caption": "x"}])
    with pytest.raises(DataError, match=r"m\.jsonl:1, field 'id': expected an 'id'"):
        read_manifest(path, MODALITIES)


def test_bad_facts_in_csv(tmp_path):
    path = _write_csv(tmp_path / "m.csv", [{"id": "a", "caption": "x", "facts": "{not json"}])
    with pytest.raises(
        DataError, match=r"m\.csv:2, id='a', field 'facts': expected 'facts' to be a JSON object"
    ):
        read_manifest(path, MODALITIES)


@pytest.mark.parametrize(
    "name, content",
    [
        ("m.txt", "id,caption\na,x\n"),
        ("m.jsonl", "id,caption\na,x\n"),
        ("m.jsonl", '["a list"]\n'),
        ("m.csv", "caption\nx\n"),
        ("m.parquet", "definitely not parquet"),
    ],
)
def test_not_a_manifest(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match="not a JSONL/CSV/Parquet manifest") as info:
        read_manifest(path, MODALITIES)
    assert info.value.source == str(path)


def test_missing_manifest(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_manifest(tmp_path / "nope.jsonl", MODALITIES)


def test_any_column_when_modalities_not_declared(tmp_path):
    path = _write_jsonl(tmp_path / "m.jsonl", [{"id": "a", "whatever": "x"}])
    assert read_manifest(path, None)[0].values == {"whatever": "x"}
