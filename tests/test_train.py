"""Training: the loss falls, resuming reproduces an uninterrupted run bit for bit, the EMA follows its closed
form, configs round-trip through JSON and TOML, and a trained model loads back as a score."""

import json

import pytest
import torch
from tiny import TINY_UNET

import scoresde as sd
from scoresde import checkpoint as ck
from scoresde.cli import main
from scoresde.train import (
    ConditionalModel,
    TrainConfig,
    ema_decay_at,
    learning_rate,
    load_score,
    make_score,
    train,
)

TINY_MLP = {"arch": "mlp", "width": 32, "num_blocks": 2}


def tiny(tmp_path, name="run", **kw):
    base = dict(data="moons", n_train=1024, model=TINY_MLP, batch_size=64, lr=3e-3, warmup=10, ckpt_every=1000)
    base.update(kw)
    return TrainConfig(out=str(tmp_path / name), **base)


def test_loss_decreases_on_moons(tmp_path):
    """The output layer starts at zero, so the first losses are E|eps|^2 / d = 1 up to sampling noise. Measured
    over seeds 0-5 (150 steps, uniform t, constant lr): the mean of the last 20 losses is 0.33-0.39 of the first
    20's; require < 0.55. (With the default lognormal levels the eps loss is an average over harder, less noisy
    levels and falls less in 150 steps.)"""
    cfg = tiny(tmp_path, steps=150, prediction="eps", t_sampler="uniform", lr_schedule="constant")
    res = train(cfg, progress=False)
    first, last = sum(res.losses[:20]) / 20, sum(res.losses[-20:]) / 20
    assert len(res.losses) == 150 and res.step == 150 and res.steps_run == 150
    assert abs(res.losses[0] - 1.0) < 0.3
    assert last < 0.55 * first, (first, last)
    assert res.examples_per_s > 0 and res.num_parameters > 0
    assert res.peak_memory_mib is None or res.peak_memory_mib > 0


def assert_same_run(a, b):
    assert a.step == b.step
    assert a.extra["losses"] == b.extra["losses"]
    for key in ("model", "ema"):
        sa, sb = getattr(a, key), getattr(b, key)
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), (key, k)
    assert a.optimizer["param_groups"] == b.optimizer["param_groups"]
    for i, st in a.optimizer["state"].items():
        for k, v in st.items():
            assert torch.equal(v, b.optimizer["state"][i][k]), (i, k)
    for k in a.rng_state:
        assert torch.equal(a.rng_state[k], b.rng_state[k]), k
    assert torch.equal(a.extra["perm"], b.extra["perm"]) and a.extra["pos"] == b.extra["pos"]


@pytest.mark.parametrize(
    "kind",
    [
        # dropout draws from the global RNG; 1024 / 64 = 16 batches per epoch, so 20 steps cross an epoch
        dict(model={**TINY_MLP, "dropout": 0.1}, t_sampler="stratified", prediction="v"),
        # labels, label dropout and the U-Net
        dict(
            data="digits",
            model=TINY_UNET,
            class_conditional=True,
            p_uncond=0.3,
            batch_size=16,
            t_sampler="importance",
            prediction="x0",
        ),
    ],
    ids=["mlp-dropout", "unet-cfg"],
)
def test_resume_reproduces_an_uninterrupted_run_bit_for_bit(tmp_path, kind):
    straight = tiny(tmp_path, "straight", steps=20, **kind)
    torch.manual_seed(1234)  # the caller's global RNG must not matter, nor be changed
    before = torch.get_rng_state()
    train(straight, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    split = straight.replace(out=str(tmp_path / "split"), steps=10, ckpt_every=4)
    train(split, progress=False)
    torch.manual_seed(999)
    res = train(split.replace(steps=20), resume=True, progress=False)
    assert res.steps_run == 10 and len(res.losses) == 20
    assert_same_run(ck.load_checkpoint(tmp_path / "straight"), ck.load_checkpoint(tmp_path / "split"))


def test_resume_refuses_what_it_cannot_continue(tmp_path):
    cfg = tiny(tmp_path, steps=4)
    with pytest.raises(ck.CheckpointError, match="no checkpoint"):
        train(cfg, resume=True, progress=False)
    train(cfg, progress=False)
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        train(cfg.replace(steps=8), progress=False)
    with pytest.raises(ck.CheckpointError, match="config differs in lr"):
        train(cfg.replace(steps=8, lr=1e-2), resume=True, progress=False)
    # finished already: nothing to do, nothing changes
    res = train(cfg, resume=True, progress=False)
    assert res.steps_run == 0 and res.step == 4 and len(res.losses) == 4
    # a tuple in a Python config and the list read back from config.json are the same config
    cfg = tiny(tmp_path, "tuple", data="digits", model={**TINY_UNET, "channel_mults": (1, 2)}, batch_size=16, steps=1)
    train(cfg, progress=False)
    res = train(TrainConfig.from_file(tmp_path / "tuple" / "config.json").replace(steps=2), resume=True, progress=False)
    assert res.step == 2


def test_ema_is_the_power_average_of_the_iterates(tmp_path):
    """Uncapped, d_n = (1 - 1/n)^(p+1) gives EMA_N = sum_n (n^(p+1) - (n-1)^(p+1)) / N^(p+1) theta_n exactly
    (the products telescope). Run 4 steps one at a time and compare with that sum of the saved iterates."""
    p = 2.0
    cfg = tiny(tmp_path, steps=1, ema_schedule="power", ema_power=p, ema_decay=1.0, ckpt_every=1)
    thetas = []
    for n in range(1, 5):
        train(cfg.replace(steps=n), resume=n > 1, progress=False)
        thetas.append(ck.load_checkpoint(cfg.out).model)
    ema = ck.load_checkpoint(cfg.out).ema
    N = len(thetas)
    w = [(n ** (p + 1) - (n - 1) ** (p + 1)) / N ** (p + 1) for n in range(1, N + 1)]
    for k in ema:
        want = sum(wn * th[k].double() for wn, th in zip(w, thetas, strict=True))
        torch.testing.assert_close(ema[k].double(), want, rtol=1e-5, atol=1e-6)
    assert ema_decay_at(1, "power", 0.999, 6.94) == 0.0
    assert ema_decay_at(10**7, "power", 0.999, 6.94) == 0.999
    assert ema_decay_at(3, "fixed", 0.9, 6.94) == 0.9


def test_config_round_trips_and_rejects_unknown_keys(tmp_path):
    cfg = TrainConfig(data="digits", model=TINY_UNET, class_conditional=True, sde={"name": "ve", "sigma_max": 20.0})
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.from_file(tmp_path / "c.json") == cfg
    (tmp_path / "c.toml").write_text(
        'data = "digits"\nclass_conditional = true\nsteps = 50\n\n[model]\narch = "unet"\nbase_channels = 8\n\n'
        '[sde]\nname = "vp"\nschedule = "cosine"\n'
    )
    got = TrainConfig.from_file(tmp_path / "c.toml")
    assert got == TrainConfig(
        data="digits", class_conditional=True, steps=50, model={"arch": "unet", "base_channels": 8},
        sde={"name": "vp", "schedule": "cosine"},
    )  # fmt: skip
    (tmp_path / "bad.json").write_text(json.dumps({"steps": 5, "learning_rate": 1e-3}))
    with pytest.raises(ValueError, match=r"unknown training config keys \['learning_rate'\]; known keys: data"):
        TrainConfig.from_file(tmp_path / "bad.json")
    (tmp_path / "c.yaml").write_text("steps: 5")
    with pytest.raises(ValueError, match="expected a .json or .toml"):
        TrainConfig.from_file(tmp_path / "c.yaml")
    with pytest.raises(ValueError, match="does not exist"):
        TrainConfig.from_file(tmp_path / "missing.json")
    for bad, match in [
        (dict(steps=0), "steps must be an int >= 1"),
        (dict(lr=0.0), "lr must be a number > 0"),
        (dict(prediction="score"), "prediction must be one of"),
        (dict(data="cifar10"), "data must be one of"),
        (dict(class_conditional=True), "has no labels"),
        (dict(model={"arch": "transformer"}), "model must be a dict with 'arch'"),
        (dict(sde={"name": "edm"}), "sde must be a dict"),
        (dict(p_uncond=1.0), r"p_uncond must be a number in \[0, 1\)"),
    ]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad)


def test_trained_model_loads_as_a_score_with_guidance(tmp_path):
    cfg = tiny(tmp_path, data="digits", model=TINY_UNET, class_conditional=True, batch_size=16, steps=6)
    cfg = cfg.replace(prediction="x0")
    train(cfg, progress=False)
    score, sde, got_cfg, model = load_score(cfg.out, y=3, guidance=2.0)
    assert got_cfg == cfg and isinstance(score, sd.DataScore) and not model.training
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(5, 1, 8, 8, generator=g), torch.rand(5, generator=g) * 0.9 + 0.05
    # guidance on the x0 output is guidance on eps: (1 + w) eps(y) - w eps(null)
    cond = sd.DataScore(ConditionalModel(model, 10, 3), sde).eps(x, t)
    null = sd.DataScore(ConditionalModel(model, 10, None), sde).eps(x, t)
    torch.testing.assert_close(score.eps(x, t), 3.0 * cond - 2.0 * null, rtol=1e-4, atol=1e-5)
    assert score.nfe == 1
    raw, _, _, raw_model = load_score(cfg.out, ema=False)
    ema_state, raw_state = model.state_dict(), raw_model.state_dict()
    assert any(not torch.equal(ema_state[k], raw_state[k]) for k in ema_state)
    with pytest.raises(ValueError, match="labels of shape"):
        ConditionalModel(model, 10, torch.zeros(3, dtype=torch.long))(x, t)
    with pytest.raises(ValueError, match="unconditional"):
        make_score(sd.models.MLP(dim=2), sde, "eps", y=1)


def test_guidance_interval_guides_inside_and_samples_the_conditional_model_outside():
    torch.manual_seed(0)
    net = sd.models.build_model({**TINY_UNET, "in_channels": 1, "num_classes": 10}).eval()
    calls = []

    def model(x, t, y):
        calls.append(x.shape[0])
        return net(x, t, y)

    sde = sd.VPSDE()
    y = torch.arange(4) % 10
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    full = ConditionalModel(model, 10, y, 2.0)
    cond = ConditionalModel(model, 10, y, 0.0)
    lo, hi = 0.5, 3.0  # sigma / alpha of the linear VP SDE: 0.5 at t ~ 0.18, 3.0 at t ~ 0.47
    limited = ConditionalModel(model, 10, y, 2.0, interval=(lo, hi), sde=sde)
    level = lambda t: float(sde.marginal_std(torch.tensor(t)) / sde.alpha(torch.tensor(t)))  # noqa: E731
    with torch.no_grad():
        for t_val in (0.05, 0.3, 0.9):
            t = torch.full((4,), t_val)
            inside = lo < level(t_val) <= hi
            calls.clear()
            got = limited(x, t)
            assert calls == ([8] if inside else [4])  # outside: one call on the batch, not the doubled one
            torch.testing.assert_close(got, (full if inside else cond)(x, t), rtol=0, atol=0)
        # per-sample times: each sample guided by its own level
        t = torch.tensor([0.05, 0.3, 0.9, 0.3])
        got, want_full, want_cond = limited(x, t), full(x, t), cond(x, t)
        for i, t_val in enumerate(t.tolist()):
            want = want_full if lo < level(t_val) <= hi else want_cond
            torch.testing.assert_close(got[i], want[i], rtol=1e-6, atol=1e-6)
    for bad, match in [
        ((1.0, 0.5), "0 <= lo < hi"),
        ((-1.0, 2.0), "0 <= lo < hi"),
        ((0.1,), "two numbers"),
        ("ab", "two numbers"),
    ]:
        with pytest.raises(ValueError, match=match):
            ConditionalModel(model, 10, y, 1.0, interval=bad, sde=sde)
    with pytest.raises(ValueError, match="needs the model's sde"):
        ConditionalModel(model, 10, y, 1.0, interval=(0.1, 1.0))
    with pytest.raises(ValueError, match="unconditional"):
        make_score(sd.models.MLP(dim=2), sde, "eps", guidance_interval=(0.1, 1.0))


def test_cli_trains_resumes_and_reports_errors(tmp_path, capsys):
    out = str(tmp_path / "cli")
    args = ["train", "--data", "moons", "--steps", "6", "--batch-size", "32", "--out", out, "--no-progress"]
    assert main([*args, "--ckpt-every", "3"]) == 0
    assert "step 6" in capsys.readouterr().out
    assert main([*args[:-2], str(tmp_path / "b16"), "--no-progress", "--dtype", "bfloat16", "--no-plots"]) == 0
    assert TrainConfig.from_file(tmp_path / "b16" / "config.json").dtype == "bfloat16"
    assert main(["train", "--out", out, "--steps", "9", "--resume", "--no-progress"]) == 0
    assert "step 9" in capsys.readouterr().out and ck.load_checkpoint(out).step == 9
    assert TrainConfig.from_file(tmp_path / "cli" / "config.json").steps == 9
    data = ck.load_checkpoint(out).path
    data.write_bytes(data.read_bytes()[:50])
    assert main(["train", "--out", out, "--steps", "12", "--resume", "--no-progress"]) == 2
    assert "truncated" in capsys.readouterr().err


@pytest.mark.slow
def test_trained_network_beats_the_best_affine_predictor(tmp_path):
    """The best eps predictor that is affine in x_t is the exact one for a Gaussian with the data's mean m and
    covariance C: sigma (alpha^2 C + sigma^2 I)^{-1} (x_t - alpha m). Moons is not Gaussian, so a network that
    learned the data must have a lower held-out loss. Paired on the same (t, eps) draws; measured over seeds
    0-3 (400 steps): the EMA network is lower by 15-19 standard errors of the paired difference; require 5."""
    cfg = tiny(tmp_path, n_train=4096, model={**TINY_MLP, "width": 64}, steps=400, batch_size=128, warmup=20)
    res = train(cfg.replace(ema_power=3.0, prediction="eps"), progress=False)
    sde = sd.VPSDE()
    x0 = sd.data.toy_2d("moons", 20_000, seed=77).double()
    m, C = x0.mean(0), torch.cov(x0.T)

    def affine(x, t):
        a, s = sde.alpha(t).to(x)[:, None, None], sde.marginal_std(t).to(x)[:, None, None]
        cov = a**2 * C + s**2 * torch.eye(2, dtype=x.dtype)
        return (s * torch.linalg.solve(cov, (x - a[:, :, 0] * m)[..., None]))[..., 0]

    def net(x, t):
        return res.ema(x.float(), t.float()).double()

    losses = [
        sd.loss.eps_mse(f, sde, x0, generator=torch.Generator().manual_seed(3), reduction="none") for f in (net, affine)
    ]
    diff = losses[0] - losses[1]
    assert float(diff.mean()) < -5 * float(diff.std() / diff.numel() ** 0.5), float(diff.mean())


def test_default_prediction_is_v():
    """v prediction is the default: it is the parameterisation every sampler works with (see TrainConfig)."""
    assert TrainConfig(data="moons").prediction == "v"


def test_learning_rate_warmup_then_cosine():
    cfg = TrainConfig(lr=1e-3, warmup=10, steps=111, lr_schedule="cosine", lr_min=0.1)
    lrs = [learning_rate(cfg, k) for k in range(111)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3) and lrs[10] == pytest.approx(1e-3)
    assert lrs[60] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5)) and lrs[110] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    const = cfg.replace(lr_schedule="constant")
    assert [learning_rate(const, k) for k in range(10, 111)] == [1e-3] * 101
    with pytest.raises(ValueError, match="lr_schedule"):
        cfg.replace(lr_schedule="step")


def test_configs_saved_before_the_new_options_resume_as_they_were(tmp_path):
    """A config.json written before lr_schedule / lognormal / Fourier features existed means a constant learning
    rate and the plain MLP; upgrade_saved_config makes that explicit, so such runs resume and load unchanged."""
    from scoresde.train.config import upgrade_saved_config
    from scoresde.train.state import _check_resumable

    new_fields = ("p_mean", "p_std", "snr_gamma", "lr_schedule", "lr_min", "plots")
    old = {k: v for k, v in TrainConfig(data="checkerboard", t_sampler="uniform").to_dict().items()}
    old = {k: v for k, v in old.items() if k not in new_fields} | {"model": {}}
    cfg = TrainConfig.from_dict(upgrade_saved_config(old))
    assert cfg.lr_schedule == "constant" and cfg.lr_min == 0.0 and cfg.t_sampler == "uniform"
    assert cfg.model_config()["arch"] == "mlp" and "fourier_features" not in cfg.model_config()
    _check_resumable(old, cfg, tmp_path)  # no error
    with pytest.raises(ck.CheckpointError, match="lr_schedule"):
        _check_resumable(old, cfg.replace(lr_schedule="cosine"), tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert TrainConfig.from_saved(tmp_path / "config.json") == cfg
    # today's configs pass unchanged, and a 2-D set's default network has Fourier features
    now = TrainConfig(data="checkerboard")
    assert upgrade_saved_config(now.to_dict()) == now.to_dict()
    assert now.model_config()["fourier_features"] == 64 and now.t_sampler == "lognormal"
    # a config saved after the cosine schedule but before --dtype trained in float32, and resumes as such
    before_dtype = {k: v for k, v in now.to_dict().items() if k != "dtype"}
    assert upgrade_saved_config(before_dtype)["dtype"] == "float32"
    _check_resumable(before_dtype, now, tmp_path)


def test_bfloat16_training_lowers_the_network_and_nothing_else(tmp_path, dtype_trace):
    """``dtype="bfloat16"``: the network's matrix products run in bfloat16 (seen by a dispatch trace), while the
    weights, the EMA and the loss stay float32; the trajectory follows the float32 run's to well within bfloat16's
    unit roundoff 2^-8 = 0.4% (the mean relative loss difference over 60 steps measured 1e-4 on seeds 0-2; the
    first losses agree exactly, since the output layer starts at zero)."""
    f32 = train(tiny(tmp_path, "f32", steps=60), progress=False)
    with dtype_trace() as mode:
        b16 = train(tiny(tmp_path, "b16", steps=60, dtype="bfloat16"), progress=False)
    assert any(torch.bfloat16 in mode.by_op.get(op, ()) for op in ("mm", "addmm", "bmm", "convolution"))
    assert all(p.dtype == torch.float32 for p in (*b16.model.parameters(), *b16.ema.parameters()))
    diff = sum(abs(a - b) for a, b in zip(b16.losses, f32.losses, strict=True)) / sum(f32.losses)
    assert 0 < diff < 2**-8, diff
    assert json.loads((tmp_path / "b16" / "config.json").read_text())["dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="dtype"):
        tiny(tmp_path, dtype="float16")


def test_bfloat16_on_a_cpu_without_its_kernels_warns(tmp_path, monkeypatch):
    """On a CPU where oneDNN has no bfloat16 kernels (x86 without AVX-512) autocast runs generic code, about 20x
    slower than float32 (precision module): training, sampling and the benchmark warn then, and only then."""
    import warnings

    from scoresde import precision

    monkeypatch.setattr(precision, "_cpu_has_bfloat16_kernels", lambda: False)
    assert not precision.fast_bfloat16("cpu") and precision.fast_bfloat16("cuda")
    with pytest.warns(RuntimeWarning, match="no bfloat16 kernels .* use dtype 'float32'") as record:
        train(tiny(tmp_path, "slow", steps=1, dtype="bfloat16"), progress=False)
    assert record[0].filename == __file__  # the warning names the caller's line, not the library's
    with pytest.warns(RuntimeWarning, match="no bfloat16 kernels"):
        precision.check_dtype_device("bfloat16", "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        precision.check_dtype_device("float32", "cpu")
        precision.check_dtype_device("bfloat16", "cuda")
        monkeypatch.setattr(precision, "_cpu_has_bfloat16_kernels", lambda: True)
        precision.check_dtype_device("bfloat16", "cpu")
        train(tiny(tmp_path, "fast", steps=1, dtype="bfloat16"), progress=False)


def test_learned_recipes_train_in_float32_where_bfloat16_is_slow(tmp_path, monkeypatch):
    """benchmarks/learned.py's recipes ask for bfloat16; a new run takes float32 on a CPU without bfloat16 kernels
    (20x slower there), and a run already on disk keeps its own dtype so that it resumes on any machine."""
    from pathlib import Path

    from scoresde import precision

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import learned

    assert learned.FULL["digits"]["dtype"] == "bfloat16"
    monkeypatch.setattr(precision, "_cpu_has_bfloat16_kernels", lambda: True)
    assert learned.recipe_dtype("digits") == "bfloat16"
    monkeypatch.setattr(precision, "_cpu_has_bfloat16_kernels", lambda: False)
    assert learned.recipe_dtype("digits") == learned.recipe_dtype("2d") == "float32"
    assert learned.recipe_dtype("digits", tmp_path / "none") == "float32"
    TrainConfig(**{**learned.FULL["digits"], "out": str(tmp_path)}).save(tmp_path / "config.json")
    assert learned.recipe_dtype("digits", tmp_path) == "bfloat16"
