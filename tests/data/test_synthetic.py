"""Tests of the built-in generators ``builtin:shapes`` and ``builtin:xor``."""

from __future__ import annotations

import numpy as np
import pytest

from omnibind.data.sources import SOURCES
from omnibind.data.synthetic import COLOURS, SHAPES, SHAPES_FACTS, shapes, xor, xor_bayes_accuracy

MODALITIES = ["image", "caption", "sound", "table"]


@pytest.fixture(scope="module")
def data():
    return shapes(n=400, seed=3)


def _same(r1, r2) -> bool:
    if r1.values.keys() != r2.values.keys() or (r1.facts, r1.split, r1.label) != (
        r2.facts,
        r2.split,
        r2.label,
    ):
        return False
    return all(
        np.array_equal(np.asarray(r1.values[m]), np.asarray(r2.values[m])) for m in ("image", "sound")
    ) and ([r1.values[m] for m in ("caption", "table")] == [r2.values[m] for m in ("caption", "table")])


def test_registered():
    assert SOURCES.get("shapes") is shapes
    assert SOURCES.get("xor") is xor


def test_shapes_deterministic_for_a_seed():
    a, b, c = shapes(n=40, seed=7), shapes(n=40, seed=7), shapes(n=40, seed=8)
    assert all(_same(x, y) for x, y in zip(a.records, b.records, strict=True))
    assert not all(_same(x, y) for x, y in zip(a.records, c.records, strict=True))


def test_shapes_missing_keeps_the_scenes():
    full, sparse = shapes(n=60, seed=2), shapes(n=60, seed=2, missing=0.5)
    for r1, r2 in zip(full.records, sparse.records, strict=True):
        assert r1.facts == r2.facts
        if "image" in r2.values:
            assert np.array_equal(r1.values["image"], r2.values["image"])


def test_shapes_sizes_splits_and_ids(data):
    assert len(data.records) == 400
    assert len({r.id for r in data.records}) == 400
    splits = [r.split for r in data.records]
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (320, 40, 40)
    assert {r.source for r in data.records} == {"builtin:shapes"}
    assert all(r.line is None for r in data.records)
    assert len(shapes(n=1).records) == 1


def test_shapes_value_types(data):
    for r in data.records:
        assert set(r.values) == set(MODALITIES)
        img, snd, tab = r.values["image"], r.values["sound"], r.values["table"]
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8
        assert snd.shape == (4000,) and snd.dtype == np.float32 and np.abs(snd).max() <= 1.0
        assert isinstance(r.values["caption"], str) and r.values["caption"]
        assert set(tab) == {"width", "height", "x", "y"} and all(isinstance(v, float) for v in tab.values())
        assert r.label == f"{r.facts['colour']} {r.facts['shape']}"
    r = shapes(n=2, image_size=48, sample_rate=16000, seconds=0.25).records[0]
    assert r.values["image"].shape == (48, 48, 3) and r.values["sound"].shape == (4000,)


def test_shapes_facts_and_table(data):
    assert (
        set(data.facts)
        == set(SHAPES_FACTS)
        == {"shape", "colour", "size", "position", "mark", "tone", "timbre"}
    )
    assert data.facts["size"].carriers == ["image", "caption", "table"]
    owners = {k: s.owner for k, s in data.facts.items() if s.joint}
    assert owners == {"mark": "image", "tone": "caption", "timbre": "sound"}
    assert data.info["shapes"] == SHAPES and data.info["colours"] == COLOURS
    assert data.info["carriers"]["colour"] == ["image", "caption", "sound"]
    for r in data.records:
        assert r.facts["timbre"] == r.facts["mark"] ^ r.facts["tone"]


def test_shapes_xor_bits_pairwise_independent():
    facts = [r.facts for r in shapes(n=2000, seed=0).records]
    for x, y in [("mark", "tone"), ("mark", "timbre"), ("tone", "timbre")]:
        counts = np.zeros((2, 2))
        for f in facts:
            counts[f[x], f[y]] += 1
        # Each of the four combinations near 1/4: knowing one bit says nothing about another.
        assert np.allclose(counts / len(facts), 0.25, atol=0.04), (x, y, counts)


def test_shapes_carriers_render_the_facts(data):
    """Cheap checks that each modality shows what it claims: the mark frame, the caption words, the table."""
    for r in data.records:
        frame = r.values["image"][0].mean()  # the top row
        assert (frame < 80) == bool(r.facts["mark"])
        text = r.values["caption"].lower()
        assert any(w in text for w in ("dusk", "evening", "sunset")) == bool(r.facts["tone"])
        assert (r.values["table"]["x"] > 0.5) == (r.facts["position"] == "right")


def test_shapes_timbre_in_the_sound(data):
    """The harmonics of timbre = 1 put clearly more energy above 1.5 x the pitch."""
    for r in data.records[:40]:
        spec = np.abs(np.fft.rfft(r.values["sound"]))
        freq = np.fft.rfftfreq(len(r.values["sound"]), 1 / 8000)
        f0 = freq[np.argmax(spec)]
        high = (spec[freq > 1.5 * f0] ** 2).sum() / (spec**2).sum()
        assert (high > 0.1) == bool(r.facts["timbre"]), (r.facts, high)


def test_shapes_missing():
    records = shapes(n=2000, seed=1, missing=0.5).records
    assert all(len(r.values) >= 1 for r in records)
    share = 1 - np.mean([len(r.values) for r in records]) / len(MODALITIES)
    # Dropped share conditioned on >= 1 present: 0.5 * (1 - 0.5**3) / (1 - 0.5**4) = 0.4667.
    assert abs(share - 0.4667) < 0.02
    heavy = shapes(n=300, seed=1, missing=0.95).records
    assert all(len(r.values) >= 1 for r in heavy)
    assert all(len(r.values) == 4 for r in shapes(n=50, missing=0.0).records)


def test_shapes_rejects_bad_options():
    with pytest.raises(ValueError):
        shapes(n=0)
    with pytest.raises(ValueError):
        shapes(n=10, missing=1.0)


def test_xor_sizes_and_values():
    data = xor(n_train=30, n_val=5, n_test=10, d_v=4, seed=1)
    assert [r.split for r in data.records] == ["train"] * 30 + ["val"] * 5 + ["test"] * 10
    for r in data.records:
        for m in "abc":
            v = r.values[m]
            assert v.shape == (4,) and v.dtype == np.float32 and set(np.unique(v)) <= {0.0, 1.0}
            assert r.facts[m] == "".join(str(int(x)) for x in v)
        assert r.label == r.facts["b"]
    # each bit vector is a joint fact of its own modality, read from the other two together
    assert {k: (s.carriers, s.joint, s.owner) for k, s in data.facts.items()} == {
        m: (["a", "b", "c"], True, m) for m in "abc"
    }


def test_xor_deterministic_for_a_seed():
    a, b, c = (xor(n_train=50, n_val=0, n_test=0, seed=s).records for s in (4, 4, 5))
    assert [r.facts for r in a] == [r.facts for r in b]
    assert [r.facts for r in a] != [r.facts for r in c]


def test_xor_process():
    for r in xor(n_train=500, n_val=0, n_test=0, p=1.0).records:
        assert np.array_equal((r.values["a"] + r.values["b"]) % 2, r.values["c"])
    for r in xor(n_train=500, n_val=0, n_test=0, p=0.0).records:
        assert np.array_equal(r.values["a"], r.values["c"])
    half = xor(n_train=4000, n_val=0, n_test=0, p=0.5).records
    assert abs(np.mean([r.metadata["xor"] for r in half]) - 0.5) < 0.03


def test_xor_bayes_accuracy():
    assert xor_bayes_accuracy(5, 0.5) == pytest.approx(0.516, abs=5e-4)
    assert xor_bayes_accuracy(5, 1.0) == 1.0
    assert xor_bayes_accuracy(5, 0.0) == pytest.approx(1 / 32)


def test_xor_bayes_accuracy_matches_simulation():
    """The rule 'b = a XOR c, or b = 0 when c == a' is right as often as the formula says."""
    records = xor(n_train=20000, n_val=0, n_test=0, d_v=3, p=0.5, seed=2).records
    a, b, c = (np.stack([r.values[m] for r in records]) for m in "abc")
    guess = (a + c) % 2  # c == a gives the all-zero guess
    acc = np.mean((guess == b).all(axis=1))
    assert abs(acc - xor_bayes_accuracy(3, 0.5)) < 0.01
