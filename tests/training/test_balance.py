"""Balance policies: modality dropout never empties an item; the hooks see per-modality predictions;
OGM-GE, AGM and MMPareto follow their formulas, train end to end and resume exactly."""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from omnibind.config import config_from_dict
from omnibind.errors import ConfigError, OmnibindError
from omnibind.fusion import create_head, list_heads
from omnibind.training.balance import (
    AGM,
    BALANCE_METHODS,
    OGMGE,
    BalancePolicy,
    MMPareto,
    ModalityDropout,
    StepContext,
    create_policies,
    drop_modalities,
)
from omnibind.training.balance.agm import agm_coefficients, shapley_responses
from omnibind.training.balance.mmpareto import pareto_weight
from omnibind.training.balance.ogm_ge import ogm_coefficients
from omnibind.training.callbacks import Callback
from omnibind.training.classify import criterion_for, train_classifier
from tests.helpers import tiny_shapes_config


def test_dropout_keeps_a_present_modality_of_every_item_and_never_adds_one() -> None:
    gen = torch.Generator().manual_seed(0)
    present = torch.rand(2000, 4, generator=gen) < 0.6
    present[0] = False  # an item with nothing stays empty, and nothing breaks
    for p in (0.0, 0.3, 0.9, 0.99):
        kept = drop_modalities(present, p, gen)
        assert not (kept & ~present).any()
        assert torch.equal(kept.any(dim=1), present.any(dim=1))
    kept = drop_modalities(torch.ones(20000, 2, dtype=torch.bool), 0.3, gen)
    # Per entry: kept with prob 0.7, plus the rescue of rows that lost both (0.09, half to each column).
    assert abs(float(kept.float().mean()) - (0.7 + 0.09 / 2)) < 0.01


def test_dropout_is_seeded_and_validated() -> None:
    present = torch.ones(50, 3, dtype=torch.bool)
    a = ModalityDropout(0.5).mask(present, torch.Generator().manual_seed(1))
    b = ModalityDropout(0.5).mask(present, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        ModalityDropout(1.0)


def test_context_gives_unimodal_logits_by_masking() -> None:
    head = create_head("late", ("a", "b"), 4, 3).eval()
    z = {"a": torch.randn(5, 4), "b": torch.randn(5, 4)}
    present = torch.ones(5, 2, dtype=torch.bool)
    ctx = StepContext(0, z, present, torch.zeros(5, dtype=torch.long), head, lambda lg, y: lg.sum(1), {})
    only_a = head(z, torch.tensor([[True, False]] * 5)).logits
    assert torch.equal(ctx.logits_of(["a"]), only_a)
    BalancePolicy().after_backward(ctx)  # the base hooks do nothing


# ---- OGM-GE, AGM, MMPareto: formulas on hand-made tensors --------------------------------------------


def _step(m: int = 3, b: int = 24, head: str = "late", seed: int = 0, full: bool = False, **options):
    """Per-modality linear encoders, a head without dropout, and a function giving a fresh context."""
    torch.manual_seed(seed)
    names = [f"m{j}" for j in range(m)]
    encoders = {n: nn.Linear(6, 8) for n in names}
    inputs = {n: torch.randn(b, 6) for n in names}
    net = create_head(head, names, 8, 5, dropout=0.0, **options)
    present = torch.ones(b, m, dtype=torch.bool) if full else torch.rand(b, m) < 0.7
    present[~present.any(1), 0] = True
    y = torch.randint(5, (b,))
    groups = {n: list(encoders[n].parameters()) for n in names}

    def context(step: int = 0) -> StepContext:
        z = {n: encoders[n](inputs[n]) for n in names}
        return StepContext(step, z, present, y, net, criterion_for(False), groups, total_steps=100)

    return context, names, net, groups


def _only(present: torch.Tensor, j: int) -> torch.Tensor:
    keep = torch.zeros_like(present)
    keep[:, j] = True
    return present & keep


def _reference_ogm_two(s_a: float, s_v: float, alpha: float) -> tuple[float, float]:
    """The two-modality rule of the OGM-GE code: the stronger one gets 1 - tanh(alpha * ratio)."""
    ratio_v = s_v / s_a
    if ratio_v > 1:
        return 1.0, 1 - math.tanh(alpha * ratio_v)
    return 1 - math.tanh(alpha / ratio_v), 1.0


def test_ogm_coefficients_follow_the_two_modality_rule_and_the_mean_of_the_others() -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        s_a, s_v = (torch.rand(2, generator=gen) * 0.9 + 0.05).tolist()
        alpha = float(torch.rand(1, generator=gen)) * 2
        ks = ogm_coefficients({"audio": s_a, "visual": s_v}, alpha)
        assert (ks["audio"], ks["visual"]) == pytest.approx(_reference_ogm_two(s_a, s_v, alpha))
    scores = {"a": 0.8, "b": 0.2, "c": 0.4}
    ks = ogm_coefficients(scores, alpha=0.7)
    assert ks["a"] == pytest.approx(1 - math.tanh(0.7 * 0.8 / ((0.2 + 0.4) / 2)))
    assert ks["b"] == 1.0 and ks["c"] == 1.0  # 0.4 < mean(0.8, 0.2): behind the others, untouched
    assert ogm_coefficients({"a": 0.9}, 1.0) == {"a": 1.0}


def test_ogm_scales_every_gradient_tensor_of_the_stronger_modality() -> None:
    context, names, _, groups = _step(m=3)
    ctx = context()
    ctx.head(ctx.embeddings, ctx.present).logits.logsumexp(1).mean().backward()
    plain = {id(p): p.grad.clone() for ps in groups.values() for p in ps}
    policy = OGMGE(alpha=0.6, gaussian=False)
    policy.after_backward(ctx)
    with torch.no_grad():  # S_m: mean true-class probability from m alone, over the items that have m
        scores = {}
        for j, m in enumerate(names):
            prob = ctx.head(ctx.embeddings, _only(ctx.present, j)).logits.softmax(1)
            scores[m] = float(prob[torch.arange(len(prob)), ctx.targets][ctx.present[:, j]].mean())
    assert policy.coefficients == pytest.approx(ogm_coefficients(scores, 0.6))
    assert min(policy.coefficients.values()) < 1
    for m, ps in groups.items():
        for p in ps:  # weights and biases alike, not only 4-D conv weights
            assert torch.allclose(p.grad, plain[id(p)] * policy.coefficients[m])
    assert policy.metrics() == {f"balance/coeff/{m}": k for m, k in policy.coefficients.items()}


def test_ogm_ge_noise_has_the_spread_of_the_gradient() -> None:
    torch.manual_seed(0)
    head = create_head("late", ("a", "b"), 4, 3, dropout=0.0)
    big = nn.Parameter(torch.zeros(200, 200))
    big.grad = torch.randn(200, 200) * 3.0
    before = big.grad.clone()
    z = {"a": torch.randn(8, 4), "b": torch.randn(8, 4)}
    ctx = StepContext(
        0,
        z,
        torch.ones(8, 2, dtype=torch.bool),
        torch.zeros(8, dtype=torch.long),
        head,
        criterion_for(False),
        {"a": [big], "b": []},
    )
    policy = OGMGE(alpha=0.5, gaussian=True)
    policy.after_backward(ctx)
    noise = big.grad - policy.coefficients["a"] * before
    assert abs(float(noise.std()) / float(before.std()) - 1) < 0.02
    assert abs(float(noise.mean())) < 0.05


def test_ogm_handles_multilabel_targets_and_a_window() -> None:
    head = create_head("late", ("a", "b"), 4, 3, dropout=0.0)
    z = {"a": torch.randn(8, 4), "b": torch.randn(8, 4)}
    y = (torch.rand(8, 3) < 0.4).float()
    ctx = StepContext(0, z, torch.ones(8, 2, dtype=torch.bool), y, head, criterion_for(True), {}, 10)
    policy = OGMGE(alpha=1.0, start=0.0, end=0.5)
    policy.after_backward(ctx)
    assert set(policy.coefficients) == {"a", "b"} and all(0 < k <= 1 for k in policy.coefficients.values())
    ctx.step = 5  # outside [0, 0.5) of 10 steps: nothing happens
    policy.after_backward(ctx)
    assert policy.coefficients == {}


def test_mmpareto_weight_is_the_min_norm_mix_of_two_gradients() -> None:
    gen = torch.Generator().manual_seed(0)
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64)
    conflicts = 0
    for _ in range(40):
        f, u = torch.randn(2, 7, generator=gen, dtype=torch.float64)
        w = pareto_weight(f, u)
        if torch.dot(f, u) > 0:
            assert w == 0.5
            continue
        conflicts += 1
        norms = (grid[:, None] * f + (1 - grid[:, None]) * u).norm(dim=1)  # brute force over w in [0, 1]
        assert w == pytest.approx(float(grid[norms.argmin()]), abs=1e-4)
        assert float((w * f + (1 - w) * u).norm()) <= float(norms.min()) + 1e-12
    assert conflicts > 5
    assert pareto_weight(torch.zeros(3), torch.ones(3)) == 0.5


def test_mmpareto_gradients_match_the_formula() -> None:
    context, names, head, groups = _step(m=3)
    ctx = context()
    crit = ctx.criterion
    fused = crit(head(ctx.embeddings, ctx.present).logits, ctx.targets).mean()
    unimodal = [
        crit(head(ctx.embeddings, _only(ctx.present, j)).logits, ctx.targets)[ctx.present[:, j]].mean()
        for j in range(len(names))
    ]
    expected = {}
    for j, m in enumerate(names):
        g_f = torch.autograd.grad(fused, groups[m], retain_graph=True)
        g_u = torch.autograd.grad(unimodal[j], groups[m], retain_graph=True)
        w = pareto_weight(torch.cat([g.flatten() for g in g_f]), torch.cat([g.flatten() for g in g_u]))
        for p, f, u in zip(groups[m], g_f, g_u, strict=True):
            mixed = 2 * (w * f + (1 - w) * u)
            expected[id(p)] = 1.5 * mixed * max(1.0, float((f + u).norm() / mixed.norm()))
    head_params = list(head.parameters())
    head_grads = torch.autograd.grad(fused + sum(unimodal), head_params)

    ctx = context()
    loss = crit(head(ctx.embeddings, ctx.present).logits, ctx.targets).mean()
    policy = MMPareto(gamma=1.5)
    policy.backward(loss, ctx)
    for ps in groups.values():
        for p in ps:
            assert torch.allclose(p.grad, expected[id(p)], atol=1e-6)
    for p, g in zip(head_params, head_grads, strict=True):
        assert torch.allclose(p.grad, g, atol=1e-6)
    assert set(policy.weights) == set(names)


def test_agm_exact_responses_add_up_to_the_fused_logits() -> None:
    context, names, head, _ = _step(m=3, head="attention", width=16)
    head.eval()
    ctx = context()
    phi, evaluated = shapley_responses(ctx, samples=None)
    assert evaluated == len(ctx.present) * (2**3 - 1)
    with torch.no_grad():
        full = head(ctx.embeddings, ctx.present).logits
    assert torch.allclose(sum(phi.values()), full, atol=1e-5)
    for j, m in enumerate(names):  # a modality an item lacks has no share of its prediction
        assert torch.equal(phi[m][~ctx.present[:, j]], torch.zeros_like(phi[m][~ctx.present[:, j]]))


def test_agm_two_modality_responses_are_the_reference_formula() -> None:
    context, _, head, _ = _step(m=2, full=True)
    head.eval()
    ctx = context()
    phi, _ = shapley_responses(ctx, samples=None)
    with torch.no_grad():
        both = head(ctx.embeddings, ctx.present).logits
        only = [head(ctx.embeddings, _only(ctx.present, j)).logits for j in range(2)]
    assert torch.allclose(phi["m0"], 0.5 * ((both - only[1]) + only[0]), atol=1e-6)
    assert torch.allclose(phi["m1"], 0.5 * ((both - only[0]) + only[1]), atol=1e-6)


def test_agm_monte_carlo_is_close_to_exact_within_its_pass_budget() -> None:
    context, _, head, _ = _step(m=5, head="attention", full=True, width=16)
    rows: list[int] = []
    head.register_forward_hook(lambda mod, args, out: rows.append(args[1].shape[0]))
    ctx = context()
    exact, evaluated = shapley_responses(ctx, samples=None)
    assert evaluated == 24 * (2**5 - 1)
    rows.clear()
    estimate, evaluated = shapley_responses(ctx, samples=32, generator=torch.Generator().manual_seed(0))
    assert sum(rows) == evaluated <= 24 * (2**5 - 1)
    scale = torch.stack(list(exact.values())).abs().mean()
    error = torch.stack([estimate[m] - exact[m] for m in exact]).abs().mean()
    rough, _ = shapley_responses(ctx, samples=2, generator=torch.Generator().manual_seed(0))
    assert error < 0.12 * scale  # 64 of the 120 orders per item (with reverses)
    assert error < 0.5 * torch.stack([rough[m] - exact[m] for m in exact]).abs().mean()
    one, _ = shapley_responses(ctx, samples=1, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(sum(one.values()), sum(exact.values()), atol=1e-5)  # every order telescopes
    context8, _, _, _ = _step(m=8, b=16)
    _, evaluated = shapley_responses(context8(), samples=1, generator=torch.Generator().manual_seed(0))
    assert evaluated <= 16 * (2 * 7 + 1) < 16 * (2**8 - 1)  # one order and its reverse per item


def test_agm_keeps_the_subset_passes_within_its_budget() -> None:
    context, _, head, _ = _step(m=3, b=40)
    rows: list[int] = []
    head.register_forward_hook(lambda mod, args, out: rows.append(args[1].shape[0]))
    ctx = context()
    ctx.head(ctx.embeddings, ctx.present).logits.logsumexp(1).mean().backward()
    for budget, items in ((2.0, 11), (None, 40), (100.0, 40), (0.01, 1)):
        rows.clear()
        AGM(budget=budget).after_backward(ctx)
        assert sum(rows) == items * (2**3 - 1)  # exact at M = 3: 7 subsets per item


def test_agm_coefficients_follow_the_reference_ratios() -> None:
    c, history, alpha = {"a": 0.7, "v": 1.3}, {"a": 1.1, "v": 0.9}, 2.5
    mean, mean_hist = sum(c.values()) / 2, sum(history.values()) / 2
    ks = agm_coefficients(c, history, alpha)
    for m in c:  # the AV-MNIST reference: ratio = exp(2 (mean - score)), coefficient exp(alpha (r* - r))
        r, r_star = math.exp(2 * (mean - c[m])), math.exp(2 * (mean_hist - history[m]))
        assert ks[m] == pytest.approx(math.exp(alpha * (r_star - r)))
    c3, h3 = {"a": 0.4, "b": 1.0, "c": 2.2}, {"a": 0.9, "b": 1.0, "c": 1.6}
    ks = agm_coefficients(c3, h3, 1.0)
    for m in c3:  # M modalities: M / (M - 1) (mean - c_m) = mean of the others - c_m
        r = math.exp(1.5 * (sum(c3.values()) / 3 - c3[m]))
        r_star = math.exp(1.5 * (sum(h3.values()) / 3 - h3[m]))
        assert ks[m] == pytest.approx(math.exp(min(r_star - r, 10.0)))
    assert agm_coefficients(c, {}, alpha) == {"a": 1.0, "v": 1.0}  # no history yet: no modulation


def test_agm_scales_each_group_and_keeps_running_averages() -> None:
    context, names, _, groups = _step(m=3)
    policy = AGM(alpha=2.5, exact_max=4)
    for step in range(3):
        ctx = context(step)
        for ps in groups.values():
            for p in ps:
                p.grad = None
        ctx.head(ctx.embeddings, ctx.present).logits.logsumexp(1).mean().backward()
        plain = {id(p): p.grad.clone() for ps in groups.values() for p in ps}
        policy.after_backward(ctx)
        assert set(policy.coefficients) == set(names)
        for m, ps in groups.items():
            for p in ps:
                assert torch.allclose(p.grad, plain[id(p)] * policy.coefficients[m])
    assert policy.count == {m: 3 for m in names}
    phi, _ = shapley_responses(ctx, samples=None)
    nll = {m: -phi[m].log_softmax(1)[torch.arange(len(ctx.targets)), ctx.targets] for m in names}
    expected = {m: float(nll[m][ctx.present[:, j]].mean()) for j, m in enumerate(names)}
    assert AGM(budget=None).response_losses(ctx) == pytest.approx(expected)
    state = policy.state_dict()
    again = AGM()
    again.load_state_dict(state)
    assert again.running == policy.running and again.count == policy.count
    with pytest.raises(OmnibindError, match="running averages"):
        AGM().load_state_dict({})


@pytest.mark.parametrize(
    ("method", "options", "key"),
    [
        ("ogm_ge", {"alpha": -1}, "alpha"),
        ("ogm_ge", {"gaussian": "yes"}, "gaussian"),
        ("ogm_ge", {"start": 0.6, "end": 0.5}, "end"),
        ("agm", {"momentum": 1.0}, "momentum"),
        ("agm", {"samples": 0}, "samples"),
        ("agm", {"exact_max": 2.5}, "exact_max"),
        ("agm", {"budget": 0}, "budget"),
        ("mmpareto", {"gamma": 0}, "gamma"),
    ],
)
def test_bad_options_name_the_key(method: str, options: dict, key: str) -> None:
    task = SimpleNamespace(modality_dropout=0.0, balance=method, balance_options=options)
    with pytest.raises(ConfigError, match=rf"task\.balance_options\.{key} must be"):
        create_policies(task)


@pytest.mark.parametrize("head", list_heads())
@pytest.mark.parametrize("name", BALANCE_METHODS.names())
def test_every_method_runs_a_step_on_every_head(name: str, head: str) -> None:
    context, _, net, groups = _step(m=3, head=head)
    policy = BALANCE_METHODS.get(name)()
    ctx = context()
    out = net(ctx.embeddings, ctx.present)
    policy.backward(net.loss(out, ctx.targets, ctx.criterion), ctx)
    policy.after_backward(ctx)
    for p in [*net.parameters(), *(p for ps in groups.values() for p in ps)]:
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert all(math.isfinite(v) for v in policy.metrics().values())


@pytest.mark.parametrize("name", BALANCE_METHODS.names())
def test_every_method_takes_multilabel_targets(name: str) -> None:
    context, _, net, _ = _step(m=3)
    ctx = replace(context(), targets=(torch.rand(24, 5) < 0.3).float(), criterion=criterion_for(True))
    policy = BALANCE_METHODS.get(name)()
    policy.backward(net.loss(net(ctx.embeddings, ctx.present), ctx.targets, ctx.criterion), ctx)
    policy.after_backward(ctx)
    assert policy.metrics() and all(math.isfinite(v) for v in policy.metrics().values())


@pytest.mark.parametrize("name", BALANCE_METHODS.names())
def test_every_option_is_documented(name: str) -> None:
    cls = BALANCE_METHODS.get(name)
    doc = inspect.getdoc(cls) or ""
    args = doc.split("Args:", 1)[1].split("References:", 1)[0]
    for option in list(inspect.signature(cls.__init__).parameters)[1:]:
        assert re.search(rf"^\s+{option}:", args, flags=re.M), f"{name}: option '{option}' is not documented"


# ---- end to end through the supervised loop ----------------------------------------------------------


def _shapes_task(method: str, **options: object) -> dict:
    raw = tiny_shapes_config(n=160, epochs=2, threads=1)
    raw.pop("eval")
    raw["task"] = {
        "type": "classify",
        "label": "mark+tone",
        "head": "late",
        "modality_dropout": 0.2,
        "balance": method,
        "balance_options": options,
    }
    return raw


@pytest.mark.parametrize("method", ["ogm_ge", "agm", "mmpareto"])
def test_a_balanced_run_trains_a_model_and_logs_its_coefficients(tmp_path: Path, method: str) -> None:
    options = {"samples": 2, "exact_max": 0} if method == "agm" else {}  # 4 modalities: Monte-Carlo
    result = train_classifier(config_from_dict(_shapes_task(method, **options)), tmp_path / "run")
    assert (tmp_path / "run" / "model" / "model.safetensors").exists() and result.test is not None
    logged = [x for x in result.history if any(k.startswith("balance/") for k in x)]
    assert logged and all(math.isfinite(v) for x in logged for k, v in x.items() if k.startswith("balance/"))


@pytest.mark.parametrize("method", ["agm", "ogm_ge"])
def test_resume_with_a_balance_method_is_exact(tmp_path: Path, method: str) -> None:
    class Crash(Callback):
        def on_step(self, step: int, logs: dict) -> None:
            if step == 5:
                raise KeyboardInterrupt("simulated crash")

    raw = _shapes_task(method, **({"gaussian": True} if method == "ogm_ge" else {}))  # noise: global RNG
    raw["train"]["checkpoint_every"] = 2
    train_classifier(config_from_dict(raw), tmp_path / "full", evaluate=False)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(config_from_dict(raw), tmp_path / "crashed", evaluate=False, callbacks=[Crash()])
    train_classifier(config_from_dict(raw), tmp_path / "crashed", resume=True, evaluate=False)
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "crashed" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
