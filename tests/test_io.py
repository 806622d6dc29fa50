import json
import os

import pytest

from omnibind.io import write_bytes_atomic, write_json_atomic, write_jsonl_atomic, write_text_atomic


def test_write_bytes_creates_parents_and_replaces(tmp_path):
    target = tmp_path / "a" / "b" / "x.bin"
    write_bytes_atomic(target, b"one")
    write_bytes_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(target.parent) == ["x.bin"]  # no temp files left behind


def test_write_text_and_json(tmp_path):
    write_text_atomic(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    write_json_atomic(tmp_path / "j.json", {"a": [1, 2]})
    assert json.loads((tmp_path / "j.json").read_text()) == {"a": [1, 2]}


def test_write_jsonl(tmp_path):
    rows = [{"i": 0}, {"i": 1, "s": "é"}]
    write_jsonl_atomic(tmp_path / "r.jsonl", rows)
    lines = (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == rows
    write_jsonl_atomic(tmp_path / "r.jsonl", [])
    assert (tmp_path / "r.jsonl").read_text() == ""


def test_failed_write_keeps_old_file(tmp_path):
    target = tmp_path / "keep.json"
    write_json_atomic(target, {"ok": True})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": True}
    assert os.listdir(tmp_path) == ["keep.json"]
