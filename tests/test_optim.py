"""Optimisers, schedules and clipping: PyTorch as the oracle, plus the rules PyTorch does not decide."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm.optim import (
    SGD,
    AdamW,
    LambdaLR,
    WarmupCosineLR,
    clip_grad_norm_,
    lr_at,
    param_groups_for_weight_decay,
)

SHAPES = [(4, 3), (3,), (2, 2, 2), (5, 1)]
# float64 agrees with PyTorch to a few ulps of the values; float32 to its rounding over 20 steps.
TOLERANCE = {np.float64: dict(rtol=1e-12, atol=1e-14), np.float32: dict(rtol=2e-6, atol=2e-6)}


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [tl.Tensor(rng.standard_normal(shape).astype(dtype), requires_grad=True) for shape in SHAPES]


def torch_copies(torch, params):
    return [torch.tensor(p.data.copy(), requires_grad=True) for p in params]


def gradient_stream(dtype, steps, seed=1):
    """Per step, one gradient per parameter; parameter 3 has no gradient on odd steps (skipped then)."""
    rng = np.random.default_rng(seed)
    return [
        [None if (i == 3 and step % 2) else rng.standard_normal(shape).astype(dtype) for i, shape in enumerate(SHAPES)]
        for step in range(steps)
    ]


def run_both(torch, dtype, make_ours, make_theirs, steps=20, scheduler=None):
    params = make_params(dtype)
    tparams = torch_copies(torch, params)
    ours, theirs = make_ours(params), make_theirs(tparams)
    for grads in gradient_stream(dtype, steps):
        for p, tp, g in zip(params, tparams, grads):
            p.grad = None if g is None else g.copy()
            tp.grad = None if g is None else torch.tensor(g)
        ours.step()
        theirs.step()
    return params, tparams, ours, theirs


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw_matches_torch(torch, dtype, weight_decay):
    params, tparams, ours, theirs = run_both(
        torch,
        dtype,
        lambda ps: AdamW(ps, lr=3e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=weight_decay),
        lambda ps: torch.optim.AdamW(ps, lr=3e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=weight_decay),
    )
    for p, tp in zip(params, tparams):
        assert p.data.dtype == dtype
        np.testing.assert_allclose(p.data, tp.detach().numpy(), **TOLERANCE[dtype])
        state, tstate = ours.state[p], theirs.state[tp]
        assert state["step"] == int(tstate["step"])
        np.testing.assert_allclose(state["exp_avg"], tstate["exp_avg"].numpy(), **TOLERANCE[dtype])
        np.testing.assert_allclose(state["exp_avg_sq"], tstate["exp_avg_sq"].numpy(), **TOLERANCE[dtype])
    assert ours.state[params[3]]["step"] == 10  # only the steps where it had a gradient


def test_adamw_defaults_match_torch(torch):
    defaults = AdamW(make_params(np.float32)).defaults
    tdefaults = torch.optim.AdamW(torch_copies(torch, make_params(np.float32))).defaults
    for key in ("lr", "betas", "eps", "weight_decay"):
        assert defaults[key] == tdefaults[key], key


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adamw_param_groups_match_torch(torch, dtype):
    def groups(ps):
        return [{"params": ps[:2], "weight_decay": 0.2, "lr": 1e-2}, {"params": ps[2:], "weight_decay": 0.0}]

    params, tparams, _, _ = run_both(
        torch, dtype, lambda ps: AdamW(groups(ps), lr=5e-2), lambda ps: torch.optim.AdamW(groups(ps), lr=5e-2)
    )
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "options",
    [
        dict(momentum=0.9),
        dict(momentum=0.9, nesterov=True, weight_decay=0.01),
        dict(momentum=0.5, dampening=0.1),
        dict(),
    ],
)
def test_sgd_matches_torch(torch, dtype, options):
    params, tparams, ours, _ = run_both(
        torch, dtype, lambda ps: SGD(ps, lr=0.1, **options), lambda ps: torch.optim.SGD(ps, lr=0.1, **options)
    )
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), **TOLERANCE[dtype])
    assert bool(ours.state) == bool(options.get("momentum"))  # plain SGD keeps no state


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")
def test_warmup_cosine_matches_torch(torch):
    max_lr, min_lr, initial_lr, warmup, total = 6e-4, 6e-5, 6e-6, 10, 50
    ours_opt = AdamW(make_params(np.float32), lr=max_lr)
    scheduler = WarmupCosineLR(ours_opt, warmup_steps=warmup, total_steps=total, min_lr=min_lr, initial_lr=initial_lr)
    t_opt = torch.optim.AdamW(torch_copies(torch, make_params(np.float32)), lr=max_lr)
    t_scheduler = torch.optim.lr_scheduler.SequentialLR(
        t_opt,
        [
            torch.optim.lr_scheduler.LinearLR(t_opt, start_factor=initial_lr / max_lr, total_iters=warmup),
            torch.optim.lr_scheduler.CosineAnnealingLR(t_opt, T_max=total - warmup, eta_min=min_lr),
        ],
        milestones=[warmup],
    )
    for step in range(total):
        expected = t_opt.param_groups[0]["lr"]
        assert scheduler.get_last_lr()[0] == pytest.approx(expected, rel=1e-10, abs=1e-15), step
        assert (
            lr_at(step, max_lr=max_lr, total_steps=total, warmup_steps=warmup, min_lr=min_lr, initial_lr=initial_lr)
            == ours_opt.param_groups[0]["lr"]
        )
        scheduler.step()
        t_scheduler.step()
    assert ours_opt.param_groups[0]["lr"] == min_lr  # the floor, held past the end
    scheduler.step()
    assert ours_opt.param_groups[0]["lr"] == min_lr


def test_lr_at_shape():
    kw = dict(max_lr=1.0, total_steps=110, warmup_steps=10, min_lr=0.1)
    assert lr_at(0, **kw) == 0.0
    assert lr_at(5, **kw) == pytest.approx(0.5)
    assert lr_at(10, **kw) == 1.0
    assert lr_at(60, **kw) == pytest.approx(0.55)  # halfway down the cosine: (max + min) / 2
    assert lr_at(110, **kw) == lr_at(10_000, **kw) == 0.1
    values = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay after warmup
    assert lr_at(3, max_lr=1.0, total_steps=5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 5)))
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_at(0, max_lr=1.0, total_steps=5, warmup_steps=6)


def test_scheduler_state_round_trip():
    opt = SGD(make_params(np.float32), lr=1.0)
    scheduler = WarmupCosineLR(opt, warmup_steps=3, total_steps=20, min_lr=0.01)
    for _ in range(7):
        scheduler.step()
    state = scheduler.state_dict()
    opt2 = SGD(make_params(np.float32), lr=1.0)
    resumed = WarmupCosineLR(opt2, warmup_steps=3, total_steps=20, min_lr=0.01)
    resumed.load_state_dict(state)
    for _ in range(5):
        assert resumed.get_last_lr() == scheduler.get_last_lr()
        scheduler.step()
        resumed.step()
    lam = LambdaLR(SGD(make_params(np.float32), lr=0.5), lambda step: 0.9**step)
    lam.step()
    lam.step()
    assert lam.get_last_lr() == [0.5 * 0.9**2]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(torch, dtype, max_norm):
    params = make_params(dtype)
    tparams = torch_copies(torch, params)
    for p, tp, g in zip(params, tparams, gradient_stream(dtype, 1)[0]):
        p.grad = None if g is None else g * 3
        tp.grad = None if g is None else torch.tensor(g * 3)
    before = [None if p.grad is None else p.grad.copy() for p in params]
    norm = clip_grad_norm_(params, max_norm)
    tnorm = torch.nn.utils.clip_grad_norm_(tparams, max_norm)
    assert isinstance(norm, float)
    assert norm == pytest.approx(float(tnorm), rel=TOLERANCE[dtype]["rtol"])
    for p, tp, b in zip(params, tparams, before):
        if b is None:
            assert p.grad is None
            continue
        assert p.grad.dtype == dtype
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), **TOLERANCE[dtype])
    clipped = math.sqrt(sum(float((p.grad.astype(np.float64) ** 2).sum()) for p in params if p.grad is not None))
    assert clipped == pytest.approx(min(norm, max_norm), rel=1e-5)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_clip_grad_norm_nonfinite_leaves_gradients(bad):
    params = make_params(np.float32)
    for p in params:
        p.grad = np.ones_like(p.data)
    params[1].grad[0] = bad
    before = [p.grad.copy() for p in params]
    norm = clip_grad_norm_(params, 1.0)
    assert not math.isfinite(norm)
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p.grad, b)
    with pytest.raises(RuntimeError, match="inf or NaN"):
        clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    assert clip_grad_norm_([tl.Tensor([1.0], requires_grad=True)], 1.0) == 0.0  # no gradients at all


# --- the weight-decay rule -----------------------------------------------------------------------------


class _Module:
    """A stand-in for nn.Module: named_parameters() and named_modules() over attributes."""

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, value in vars(self).items():
            if isinstance(value, _Module):
                yield from value.named_modules(f"{prefix}{name}.")

    def named_parameters(self):
        for module_name, module in self.named_modules():
            for name, value in vars(module).items():
                if isinstance(value, tl.Tensor):
                    yield f"{module_name}{name}", value


class Linear(_Module):
    def __init__(self, n_in, n_out, bias=True):
        self.weight = tl.Tensor(np.zeros((n_out, n_in)), requires_grad=True)
        if bias:
            self.bias = tl.Tensor(np.zeros(n_out), requires_grad=True)


class LinearWithLoRA(Linear):  # derives from Linear: still a linear layer
    pass


class Embedding(_Module):
    def __init__(self, n, dim):
        self.weight = tl.Tensor(np.zeros((n, dim)), requires_grad=True)


class LayerNorm(_Module):
    def __init__(self, dim):
        self.scale = tl.Tensor(np.ones(dim), requires_grad=True)
        self.shift = tl.Tensor(np.zeros(dim), requires_grad=True)


class TinyGPT(_Module):
    def __init__(self):
        self.tok_emb, self.pos_emb = Embedding(10, 4), Embedding(6, 4)
        self.proj, self.lora = Linear(4, 4), LinearWithLoRA(4, 4, bias=False)
        self.frozen = Linear(4, 4)
        self.frozen.weight.requires_grad = False
        self.norm = LayerNorm(4)
        self.odd_matrix = tl.Tensor(np.zeros((2, 2)), requires_grad=True)  # 2-D but not a Linear weight
        self.out_head = Linear(4, 10, bias=False)


def test_weight_decay_groups_by_module_type():
    model = TinyGPT()
    groups = param_groups_for_weight_decay(model, 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    decayed = sorted(name for name, _ in groups[0]["params"])
    not_decayed = sorted(name for name, _ in groups[1]["params"])
    assert decayed == ["lora.weight", "out_head.weight", "proj.weight"]
    assert not_decayed == [
        "frozen.bias",
        "norm.scale",
        "norm.shift",
        "odd_matrix",
        "pos_emb.weight",
        "proj.bias",
        "tok_emb.weight",
    ]  # frozen.weight left out: not trained
    optimizer = AdamW(groups, lr=1e-3)
    assert optimizer.param_groups[0]["param_names"] == [name for name, _ in groups[0]["params"]]


def test_tied_embedding_weight_is_not_decayed():
    model = TinyGPT()
    model.out_head.weight = model.tok_emb.weight  # GPT-2's weight tying: the head is the embedding
    decayed = [name for name, _ in param_groups_for_weight_decay(model, 0.1)[0]["params"]]
    assert decayed == ["proj.weight", "lora.weight"]


def test_weight_decay_rules_agree_on_gpt_model():
    from tinygrad_llm.model import GPTConfig, GPTModel

    model = GPTModel(GPTConfig.preset("tiny"))
    by_type = param_groups_for_weight_decay(model, 0.1)
    by_name = param_groups_for_weight_decay(model.named_parameters(), 0.1)
    for a, b in zip(by_type, by_name):
        assert [name for name, _ in a["params"]] == [name for name, _ in b["params"]]
    decayed = [name for name, _ in by_type[0]["params"]]
    assert decayed and all(name.endswith(".weight") and "emb" not in name for name in decayed)
    assert {"tok_emb.weight", "pos_emb.weight", "final_norm.scale"} <= {n for n, _ in by_type[1]["params"]}


def test_weight_decay_groups_by_name():
    names = {
        "tok_emb.weight": (10, 4),
        "trf_blocks.0.att.W_query.weight": (4, 4),
        "trf_blocks.0.att.W_query.bias": (4,),
        "trf_blocks.0.norm1.scale": (4,),
        "wte.weight": (10, 4),
        "transformer.wpe.weight": (6, 4),
        "out_head.weight": (10, 4),
    }
    pairs = [(name, tl.Tensor(np.zeros(shape), requires_grad=True)) for name, shape in names.items()]
    pairs.append(pairs[1])  # a tied (shared) parameter is listed once
    groups = param_groups_for_weight_decay(pairs, 0.1)
    assert [name for name, _ in groups[0]["params"]] == ["trf_blocks.0.att.W_query.weight", "out_head.weight"]
    assert len(groups[1]["params"]) == 5


# --- frozen parameters, state round trip, accumulation, bad input --------------------------------------


@pytest.mark.parametrize("make", [lambda ps: AdamW(ps, lr=0.1), lambda ps: SGD(ps, lr=0.1, momentum=0.9)])
def test_frozen_and_unused_parameters_untouched(make):
    params = make_params(np.float32)
    frozen, unused = params[0], params[1]
    frozen.requires_grad = False
    frozen.grad = np.ones_like(frozen.data)  # a stale gradient must not move a frozen parameter
    params[2].grad = np.ones_like(params[2].data)
    before = [p.data.copy() for p in params]
    optimizer = make(params)
    for _ in range(3):
        optimizer.step()
    np.testing.assert_array_equal(frozen.data, before[0])
    np.testing.assert_array_equal(unused.data, before[1])
    assert not np.array_equal(params[2].data, before[2])
    assert frozen not in optimizer.state and unused not in optimizer.state and params[2] in optimizer.state


@pytest.mark.parametrize(
    "make", [lambda ps: AdamW(ps, lr=0.01, weight_decay=0.1), lambda ps: SGD(ps, lr=0.01, momentum=0.9, nesterov=True)]
)
def test_state_dict_resume_is_bitwise(make):
    grads = gradient_stream(np.float32, 20)

    def run(params, optimizer, steps):
        for step_grads in steps:
            for p, g in zip(params, step_grads):
                p.grad = None if g is None else g.copy()
            optimizer.step()

    straight = make_params(np.float32)
    run(straight, make(straight), grads)

    first = make_params(np.float32)
    optimizer = make(first)
    run(first, optimizer, grads[:10])
    saved = copy.deepcopy(optimizer.state_dict())
    resumed = [tl.Tensor(p.data.copy(), requires_grad=True) for p in first]
    optimizer2 = make(resumed)
    optimizer2.load_state_dict(saved)
    run(resumed, optimizer2, grads[10:])
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a.data, b.data)


def test_load_state_dict_checks_shapes_and_names():
    params = make_params(np.float32)
    optimizer = AdamW([(f"p{i}", p) for i, p in enumerate(params)])
    for p in params:
        p.grad = np.ones_like(p.data)
    optimizer.step()
    state = optimizer.state_dict()
    other = make_params(np.float32)
    other[0] = tl.Tensor(np.zeros((3, 4), np.float32), requires_grad=True)
    with pytest.raises(ValueError, match=r"'p0'.*shape \(4, 3\).*shape \(3, 4\)"):
        AdamW([(f"p{i}", p) for i, p in enumerate(other)]).load_state_dict(state)
    with pytest.raises(ValueError, match="'p1' in the saved state but 'q1'"):
        AdamW([(n, p) for n, p in zip(["p0", "q1", "p2", "p3"], make_params(np.float32))]).load_state_dict(state)
    with pytest.raises(ValueError, match="has 4 parameters, this optimizer.s has 3"):
        AdamW(make_params(np.float32)[:3]).load_state_dict(state)


def test_gradient_accumulation_equals_full_batch():
    rng = np.random.default_rng(3)
    x, w0 = rng.standard_normal((8, 3)), rng.standard_normal((3, 2))
    full = tl.Tensor(w0.copy(), requires_grad=True)
    ((tl.Tensor(x) @ full) ** 2).mean().backward()
    accumulated = tl.Tensor(w0.copy(), requires_grad=True)
    for micro in np.split(x, 4):
        (((tl.Tensor(micro) @ accumulated) ** 2).mean() / 4).backward()
    np.testing.assert_allclose(accumulated.grad, full.grad, rtol=1e-12, atol=1e-15)
    optimizer = AdamW([accumulated])
    optimizer.zero_grad()
    assert accumulated.grad is None


def test_bad_arguments():
    params = make_params(np.float32)
    for lr in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="lr must be a finite number"):
            AdamW(params, lr=lr)
    with pytest.raises(ValueError, match="betas"):
        AdamW(params, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="empty parameter list"):
        AdamW([])
    with pytest.raises(TypeError, match="single tensor"):
        SGD(params[0])
    with pytest.raises(ValueError, match="more than one parameter group"):
        AdamW([{"params": params[:2]}, {"params": params[1:]}])
    with pytest.raises(ValueError, match="unknown options.*momentum"):
        AdamW([{"params": params, "momentum": 0.9}])
    with pytest.raises(ValueError, match="nesterov"):
        SGD(params, nesterov=True)
    with pytest.raises(TypeError, match="floating-point"):
        SGD([tl.Tensor(np.zeros(3, np.int64))])
    optimizer = AdamW(params)
    optimizer.param_groups[0]["lr"] = float("nan")  # e.g. set by a broken schedule
    params[0].grad = np.ones_like(params[0].data)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        optimizer.step()


# ---- exponential moving average of the weights ----------------------------------------------------------------


def test_ema_is_a_running_mean_then_an_exponential_average():
    """decay 0.75: the first 1/(1-0.75) = 4 updates average the weights seen so far equally (the first copies
    them: the initial weights never count); from the fifth on, avg <- 0.75 avg + 0.25 w. Frozen parameters
    get no average."""
    from tinygrad_llm.nn import Linear
    from tinygrad_llm.optim import ExponentialMovingAverage

    layer = Linear(3, 2)
    layer.bias.requires_grad_(False)
    ema = ExponentialMovingAverage(layer, decay=0.75)
    assert set(ema.shadow) == {"weight"}
    rng = np.random.default_rng(0)
    seen, expected = [], None
    for n in range(1, 9):
        layer.weight.data[...] = rng.standard_normal(layer.weight.shape).astype(np.float32)
        seen.append(layer.weight.data.copy())
        ema.update(layer)
        expected = np.mean(seen, axis=0) if n <= 4 else 0.75 * expected + 0.25 * seen[-1]
        np.testing.assert_allclose(ema.shadow["weight"], expected, rtol=1e-6, atol=1e-6)
    assert ema.num_updates == 8 and ema.current_decay() == 0.75
    assert ema.shadow["weight"].dtype == np.float32


def test_ema_average_parameters_swaps_in_and_back():
    from tinygrad_llm.nn import Linear
    from tinygrad_llm.optim import ExponentialMovingAverage

    layer = Linear(4, 2)
    ema = ExponentialMovingAverage(layer, decay=0.9)
    ema.update(layer)
    raw = {k: v.copy() for k, v in layer.state_dict().items()}
    layer.weight.data += 1.0  # the model moves on; the average stays where it was
    moved = layer.weight.data.copy()
    x = np.ones((1, 4), dtype=np.float32)
    with ema.average_parameters(layer):
        np.testing.assert_array_equal(layer.weight.data, raw["weight"])
        averaged_out = layer(tl.Tensor(x)).numpy()
    np.testing.assert_array_equal(layer.weight.data, moved)  # its own weights are back
    np.testing.assert_allclose(averaged_out, x @ raw["weight"].T + raw["bias"], rtol=1e-6)
    assert not np.allclose(layer(tl.Tensor(x)).numpy(), averaged_out)
    with pytest.raises(ValueError, match="decay"):
        ExponentialMovingAverage(layer, decay=1.5)


def test_ema_with_decay_one_is_the_plain_mean_of_every_update():
    """decay 1 (stochastic weight averaging's average): after any number of updates, the mean of the weights
    each update saw, with equal weight; a decay below 1 forgets the early ones."""
    from tinygrad_llm.nn import Linear
    from tinygrad_llm.optim import ExponentialMovingAverage

    layer = Linear(3, 2, dtype=np.float64)
    plain, forgetting = ExponentialMovingAverage(layer, decay=1.0), ExponentialMovingAverage(layer, decay=0.5)
    seen = []
    for step in range(6):
        layer.weight.data = layer.weight.data + step  # the weights move
        seen.append(layer.weight.data.copy())
        plain.update(layer)
        forgetting.update(layer)
    np.testing.assert_allclose(plain.state_dict()["weight"], np.mean(seen, axis=0), rtol=1e-12)
    assert not np.allclose(forgetting.state_dict()["weight"], np.mean(seen, axis=0))
