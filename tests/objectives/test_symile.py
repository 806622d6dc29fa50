import itertools
import json
from pathlib import Path

import pytest
import torch

import omnibind.objectives.symile as symile_module
from omnibind.objectives import symile_loss

REFERENCE = Path("/work/shared/reference")
SYMILE_FILES = ["symile_3mod_b4_d8.json", "symile_3mod_b16_d8.json", "symile_4mod_b4_d8.json"]
MODES = {"n_squared": "n2", "n": "n"}


def _reference(name):
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"reference vectors not available: {path}")
    return json.loads(path.read_text())


def _case_inputs(data, case, dtype=torch.float64):
    reps = torch.tensor(data["inputs"]["representations"], dtype=dtype)
    names = [f"m{k}" for k in range(reps.shape[0])]
    emb = {name: reps[k].clone().requires_grad_(True) for k, name in enumerate(names)}
    perms = None
    if "permutations" in case:
        perms = {
            (names[p["anchor"]], names[p["non_anchor"]]): torch.tensor(p["perm"])
            for p in case["permutations"]
        }
    return names, emb, perms


@pytest.mark.parametrize("filename", SYMILE_FILES)
@pytest.mark.parametrize("mode", ["n_squared", "n"])
def test_matches_reference_float64(filename, mode):
    data = _reference(filename)
    case = next(c for c in data["cases"] if c["negative_sampling"] == mode)
    names, emb, perms = _case_inputs(data, case)
    scale = data["parameters"]["logit_scale"]
    out = symile_loss(emb, None, scale, negatives=MODES[mode], permutations=perms)
    expected = case["expected"]
    assert abs(out.loss.item() - expected["loss"]) < 1e-10
    for name, value in zip(names, expected["loss_per_anchor"], strict=True):
        assert abs(out.terms[f"anchor/{name}"] - value) < 1e-10
    assert out.count == len(names)
    if mode == "n":
        assert out.terms["false_negatives"] == case["num_off_diagonal_false_negatives"]
    else:
        assert out.terms["false_negatives"] == 0
    if "grad" in expected:
        out.loss.backward()
        for k, name in enumerate(names):
            ref = torch.tensor(expected["grad"][k], dtype=torch.float64)
            torch.testing.assert_close(emb[name].grad, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("mode", ["n_squared", "n"])
def test_matches_reference_float32(mode):
    data = _reference("symile_3mod_b16_d8.json")
    case = next(c for c in data["cases"] if c["negative_sampling"] == mode)
    _, emb, perms = _case_inputs(data, case, dtype=torch.float32)
    out = symile_loss(emb, None, data["parameters"]["logit_scale"], MODES[mode], permutations=perms)
    assert out.loss.dtype == torch.float32
    assert out.loss.item() == pytest.approx(case["expected"]["loss"], rel=1e-5)


def test_two_modalities_n2_is_clip():
    data = _reference("openclip_cliploss_b8_d8.json")
    a = torch.tensor(data["inputs"]["image_features"], dtype=torch.float64, requires_grad=True)
    b = torch.tensor(data["inputs"]["text_features"], dtype=torch.float64, requires_grad=True)
    out = symile_loss({"image": a, "text": b}, None, data["parameters"]["logit_scale"], "n2")
    expected = data["expected"]
    assert abs(out.loss.item() - expected["loss"]) < 1e-10
    assert abs(out.terms["anchor/image"] - expected["loss_image_to_text"]) < 1e-10
    assert abs(out.terms["anchor/text"] - expected["loss_text_to_image"]) < 1e-10
    out.loss.backward()
    torch.testing.assert_close(
        a.grad, torch.tensor(expected["grad_image_features"], dtype=torch.float64), rtol=0, atol=1e-10
    )
    torch.testing.assert_close(
        b.grad, torch.tensor(expected["grad_text_features"], dtype=torch.float64), rtol=0, atol=1e-10
    )


# ---- missing modalities: compare with a literal, loop-by-loop reading of the definition ----


def _naive(tensors, mask, scale, negatives, perms):
    """The docstring's definition, one row and one candidate tuple at a time."""
    m, n = len(tensors), mask.shape[0]
    per_anchor = []
    for i in range(m):
        row_losses = []
        for a in range(n):
            others = [j for j in range(m) if j != i and mask[a, j]]
            if not mask[a, i] or not others:
                continue

            def score(rows, a=a, i=i, others=others):
                product = tensors[i][a].clone()
                for j, k in zip(others, rows, strict=True):
                    product = product * tensors[j][k]
                return scale * product.sum()

            positive = score([a] * len(others))
            logits = []
            if negatives == "n2":
                choices = [[k for k in range(n) if mask[k, j]] for j in others]
                logits = [score(rows) for rows in itertools.product(*choices)]
            else:
                for c in range(n):
                    rows = [int(perms[(i, j)][c]) for j in others]
                    if c == a:
                        logits.append(positive)
                    elif all(mask[k, j] for j, k in zip(others, rows, strict=True)):
                        logits.append(score(rows))
            row_losses.append(torch.logsumexp(torch.stack(logits), 0) - positive)
        if row_losses:
            per_anchor.append(torch.stack(row_losses).mean())
    return torch.stack(per_anchor).mean()


def _random_batch(m, n, d, seed, p_absent=0.35):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(m, n, d, generator=g, dtype=torch.float64), dim=-1)
    mask = torch.rand(n, m, generator=g) > p_absent
    mask[0] = True  # at least one full row
    mask[1] = False
    mask[1, 0] = True  # a row with a single present modality
    perms = {(i, j): torch.randperm(n, generator=g) for i in range(m) for j in range(m) if i != j}
    return x, mask, perms


@pytest.mark.parametrize("negatives", ["n", "n2"])
@pytest.mark.parametrize("m,seed", [(2, 0), (3, 1), (3, 2), (4, 3)])
def test_missing_modalities_match_definition(negatives, m, seed):
    x, mask, perms = _random_batch(m, n=7, d=5, seed=seed)
    names = [f"m{k}" for k in range(m)]
    emb = {name: x[k].clone().requires_grad_(True) for k, name in enumerate(names)}
    named_perms = {(names[i], names[j]): p for (i, j), p in perms.items()}
    out = symile_loss(emb, mask, 3.0, negatives, permutations=named_perms)
    out.loss.backward()
    leaves = [x[k].clone().requires_grad_(True) for k in range(m)]
    zeroed = [torch.where(mask[:, k, None], leaves[k], 0.0) for k in range(m)]
    expected = _naive(zeroed, mask, 3.0, negatives, perms)
    expected.backward()
    torch.testing.assert_close(out.loss, expected, rtol=0, atol=1e-12)
    for k, name in enumerate(names):
        torch.testing.assert_close(emb[name].grad, leaves[k].grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("negatives", ["n", "n2"])
def test_absent_rows_never_matter(negatives):
    x, mask, perms = _random_batch(3, n=9, d=6, seed=4)
    names = ["a", "b", "c"]
    named_perms = {(names[i], names[j]): p for (i, j), p in perms.items()}
    results = []
    for fill in (0.0, 1e6, float("nan")):
        emb = {}
        for k, name in enumerate(names):
            values = torch.where(mask[:, k, None], x[k], torch.full_like(x[k], fill))
            emb[name] = values.requires_grad_(True)
        out = symile_loss(emb, mask, 5.0, negatives, permutations=named_perms)
        out.loss.backward()
        for k, name in enumerate(names):
            assert torch.all(emb[name].grad[~mask[:, k]] == 0)
        results.append((out.loss.detach(), [emb[name].grad for name in names]))
    for loss, grads in results[1:]:
        assert torch.isfinite(loss)
        torch.testing.assert_close(loss, results[0][0], rtol=0, atol=0)
        for grad, ref in zip(grads, results[0][1], strict=True):
            torch.testing.assert_close(grad, ref, rtol=0, atol=0)


@pytest.mark.parametrize("negatives", ["n", "n2"])
def test_modality_absent_for_everyone_equals_fewer_modalities(negatives):
    x, _, perms = _random_batch(3, n=6, d=4, seed=5)
    mask = torch.ones(6, 3, dtype=torch.bool)
    mask[:, 1] = False
    three = {"a": x[0], "b": torch.zeros_like(x[1]), "c": x[2]}
    named = {("a", "c"): perms[(0, 2)], ("c", "a"): perms[(2, 0)]}
    out3 = symile_loss(three, mask, 4.0, negatives, permutations=named)
    out2 = symile_loss({"a": x[0], "c": x[2]}, None, 4.0, negatives, permutations=named)
    torch.testing.assert_close(out3.loss, out2.loss, rtol=0, atol=1e-12)
    assert out3.count == 2 and "anchor/b" not in out3.terms


def test_only_single_present_rows_gives_attached_zero():
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.eye(4, 3, dtype=torch.bool)  # each row has at most one modality
    for negatives in ("n", "n2"):
        out = symile_loss({"a": x[0], "b": x[1], "c": x[2]}, mask, 2.0, negatives)
        assert out.count == 0 and out.loss.item() == 0.0
        out.loss.backward()
        assert torch.all(x.grad == 0)


def test_generator_draws_in_documented_order():
    x = torch.nn.functional.normalize(torch.randn(3, 10, 8, dtype=torch.float64), dim=-1)
    emb = {"a": x[0], "b": x[1], "c": x[2]}
    out = symile_loss(emb, None, 10.0, "n", generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    order = [("a", "b"), ("a", "c"), ("b", "a"), ("b", "c"), ("c", "a"), ("c", "b")]
    perms = {pair: torch.randperm(10, generator=g) for pair in order}
    explicit = symile_loss(emb, None, 10.0, "n", permutations=perms)
    assert out.loss.item() == explicit.loss.item()
    again = symile_loss(emb, None, 10.0, "n", generator=torch.Generator().manual_seed(7))
    assert again.loss.item() == out.loss.item()


@pytest.mark.parametrize("m", [3, 4])
def test_chunked_n2_equals_single_block(monkeypatch, m):
    x, mask, _ = _random_batch(m, n=6, d=5, seed=8)
    names = [f"m{k}" for k in range(m)]

    def run():
        emb = {name: x[k].clone().requires_grad_(True) for k, name in enumerate(names)}
        out = symile_loss(emb, mask, 3.0, "n2")
        out.loss.backward()
        return out.loss.detach(), [emb[name].grad for name in names]

    loss, grads = run()
    monkeypatch.setattr(symile_module, "_CHUNK_ELEMENTS", 7)  # forces many recomputed blocks
    chunked_loss, chunked_grads = run()
    torch.testing.assert_close(chunked_loss, loss, rtol=0, atol=1e-12)
    for grad, ref in zip(chunked_grads, grads, strict=True):
        torch.testing.assert_close(grad, ref, rtol=0, atol=1e-12)


def test_bad_arguments():
    x = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="negatives"):
        symile_loss({"a": x[0], "b": x[1]}, None, 1.0, negatives="n_squared")
    with pytest.raises(ValueError, match="permutations"):
        symile_loss({"a": x[0], "b": x[1]}, None, 1.0, permutations={("a", "b"): torch.arange(4)})
    with pytest.raises(ValueError, match="shape"):
        symile_loss({"a": x[0], "b": x[1]}, torch.ones(4, 3, dtype=torch.bool), 1.0)
