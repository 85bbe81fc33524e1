"""Peer adapters (diffusers, k-diffusion): the time mapping, counted NFE, quality, reproducibility, divergence.

Every test skips itself when its library is not installed (``pip install -e '.[peers]'`` and
``pip install --no-deps k-diffusion``), so the file passes without the extra.
"""

import importlib.abc
import importlib.util
import math
import sys
import warnings
from functools import cache

import pytest
import torch

import scoresde as sd
from scoresde import peers
from scoresde.metrics import mode_conditional_swd

SDE = sd.VPSDE(T=peers.PEER_T)
RING = sd.get_problem("ring")
PEERS = [p for p in peers.available_peers() if peers.peer_path(p) == "vp"]
FLOW_PEERS = [p for p in peers.available_peers() if peers.peer_path(p) == "flow"]
FLOW = sd.FlowSDE(T=peers.FLOW_PEER_T)
DIFFUSERS_PEERS = [p for p in PEERS if p.startswith("diffusers-")]
KDIFF_PEERS = [p for p in PEERS if p.startswith("kdiff-")]


def test_import_and_listing_need_no_peer_library():
    assert set(PEERS) <= set(peers._DIFFUSERS) | set(peers._KDIFF)
    assert set(FLOW_PEERS) == {p for p in peers._FLOW if "diffusers" not in p or DIFFUSERS_PEERS}
    assert peers.available_peers() == sorted(PEERS + FLOW_PEERS)


def test_unavailable_agrees_with_the_listing():
    missing = peers.unavailable()
    assert set(missing) <= {"diffusers", "k-diffusion"}
    assert ("diffusers" in missing) == (not DIFFUSERS_PEERS)
    assert ("k-diffusion" in missing) == (not KDIFF_PEERS)
    assert all(r.startswith(("not installed (", "failed to import (")) for r in missing.values()), missing


# --- a peer library that does not import is named, with the reason ------------------------------------------
class _Refuse(importlib.abc.MetaPathFinder):
    """Importing ``name`` or its submodules raises ``exc`` (as a broken install would)."""

    def __init__(self, name, exc):
        self.name, self.exc = name, exc

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.name or fullname.startswith(self.name + "."):
            raise self.exc
        return None


@pytest.fixture
def broken_import(monkeypatch):
    """``broken_import(module, exc)``: ``import module`` raises ``exc`` (``exc=None``: the module is not
    installed). The peers' import caches and their record start empty and are restored afterwards."""

    def arm(name, exc):
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            monkeypatch.delitem(sys.modules, mod)
        if exc is None:
            monkeypatch.setitem(sys.modules, name, None)  # import raises ModuleNotFoundError, find_spec gives None
        else:
            monkeypatch.setattr(sys, "meta_path", [_Refuse(name, exc), *sys.meta_path])

    def clear():
        peers._diffusers.cache_clear()
        peers._kdiffusion.cache_clear()

    monkeypatch.setattr(peers.registry, "_UNAVAILABLE", {})
    clear()
    yield arm
    clear()


@pytest.mark.parametrize("module,library", [("diffusers", "diffusers"), ("k_diffusion", "k-diffusion")])
def test_a_missing_peer_is_named_with_the_reason(broken_import, module, library):
    broken_import(module, None)
    with pytest.warns(peers.PeerUnavailableWarning, match=rf"peer library {library} is unavailable: not installed"):
        names = peers.available_peers()
    assert not any(n.startswith(library.replace("k-diffusion", "kdiff")) for n in names)
    reason = peers.unavailable()[library]
    assert reason.startswith("not installed (ModuleNotFoundError: ") and module in reason, reason
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: the second look neither warns nor forgets
        assert peers.available_peers() == names and peers.unavailable()[library] == reason


@pytest.mark.parametrize("module,library", [("diffusers", "diffusers"), ("k_diffusion", "k-diffusion")])
def test_a_broken_peer_says_what_it_raised(broken_import, module, library):
    broken_import(module, RuntimeError("undefined symbol in a torch extension"))
    with pytest.warns(peers.PeerUnavailableWarning, match=f"{library} is unavailable: failed to import") as rec:
        peers.available_peers()
    assert len([w for w in rec if library in str(w.message)]) == 1
    reason = peers.unavailable()[library]
    assert reason.startswith("failed to import (RuntimeError: undefined symbol in a torch extension"), reason
    with pytest.raises(ValueError, match="available peers"):
        peers.peer_sample(f"{library.replace('k-diffusion', 'kdiff')}-euler", RING.score(SDE), SDE, (4, 2), 5, 0)


@pytest.mark.skipif(importlib.util.find_spec("k_diffusion") is None, reason="k-diffusion not installed")
def test_kdiffusion_sampling_that_cannot_load_alone_is_reported(broken_import):
    # k_diffusion.sampling does not import (its package needs the training stack), and the fallback that
    # loads sampling.py alone fails too, on one of sampling.py's own imports.
    broken_import("k_diffusion.sampling", ImportError("no module named 'skimage'"))
    broken_import("torchsde", ImportError("torchsde is broken"))
    with pytest.warns(peers.PeerUnavailableWarning, match="k-diffusion is unavailable"):
        assert not any(n.startswith("kdiff-") for n in peers.available_peers())
    reason = peers.unavailable()["k-diffusion"]
    assert reason.startswith("not installed (ImportError: torchsde is broken) loading sampling.py alone"), reason
    assert "; before that, k_diffusion.sampling raised " in reason, reason


def test_timestep_mapping_reproduces_the_discrete_alpha_bar():
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDIMScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02, num_train_timesteps=1000)
    abar = peers.diffusers_alpha_bar()
    assert abar.dtype == torch.float64
    assert torch.allclose(abar.float(), sched.alphas_cumprod, rtol=1e-5, atol=0)  # the same chain (theirs is float32)
    t = peers.timestep_times(SDE, abar)
    assert t.dtype == torch.float64 and (t.diff() > 0).all()
    assert torch.allclose(SDE.alpha_bar(t), abar, rtol=1e-12, atol=0)
    assert math.isclose(float(t[0]), 9.17e-4, rel_tol=1e-3) and 1.003 < float(t[-1]) < peers.PEER_T


def test_sigma_space_round_trip():
    for t in (1e-3, 0.05, 0.3, 0.7, 1.0):  # sigma_hat = sigma / alpha and back
        assert math.isclose(peers.sigma_to_t(SDE, peers.sigma_hat(SDE, t)), t, rel_tol=1e-12)
    for s in (0.01, 1.0, 150.0):  # alpha_bar = 1 / (1 + sigma_hat^2)
        assert math.isclose(float(SDE.alpha_bar(peers.sigma_to_t(SDE, s))), 1 / (1 + s**2), rel_tol=1e-12)


@pytest.mark.parametrize("name", DIFFUSERS_PEERS)
def test_diffusers_grids_start_at_the_noisiest_timestep_and_never_repeat(name):
    diffusers = pytest.importorskip("diffusers")
    spec = peers._DIFFUSERS[name]
    karras = spec.config.get("use_karras_sigmas", False)
    # Karras sigmas are rounded to integer timesteps, which repeat once the grid is finer than the chain near
    # t = 0 (measured: from some step count between 50 and 200); a known diffusers pitfall, so only up to 50 here.
    for steps in (1, 2, 5, 10, 50) if karras else (1, 2, 5, 10, 50, 200, 999):
        sched = getattr(diffusers, spec.cls)(
            beta_schedule="linear", beta_start=1e-4, beta_end=0.02, timestep_spacing="trailing", **spec.config
        )
        sched.set_timesteps(steps)
        ts = sched.timesteps.tolist()
        if spec.per_step == 2:  # Heun repeats each interior timestep for its corrector by design
            ts = ts[:1] + ts[1::2]
        assert ts[0] == 999 and len(ts) == steps and all(a > b for a, b in zip(ts, ts[1:], strict=False)), ts


def test_refusals():
    with pytest.raises(ValueError, match="available peers"):
        peers.peer_sample("diffusers-magic", RING.score(SDE), SDE, (4, 2), 5, 0)
    if not PEERS:
        return
    with pytest.raises(ValueError, match="nfe"):
        peers.peer_sample(PEERS[0], RING.score(SDE), SDE, (4, 2), 0, 0)
    with pytest.raises(ValueError, match="built for"):
        peers.peer_sample(PEERS[0], RING.score(sd.VPSDE()), SDE, (4, 2), 5, 0)
    with pytest.raises(ValueError, match="linear VP"):
        peers.peer_sample(PEERS[0], RING.score(sd.VESDE()), sd.VESDE(), (4, 2), 5, 0)
    if DIFFUSERS_PEERS:  # diffusers' chain reaches t = 1.0034: a score on [0, 1] cannot serve it
        with pytest.raises(ValueError, match="T=1.01"):
            peers.peer_sample("diffusers-ddim", RING.score(sd.VPSDE()), sd.VPSDE(), (4, 2), 5, 0)


@cache
def _ring_floor(n: int = 2000, seeds: int = 4) -> float:
    """Mean mode-conditional SWD between exact draws and p_t at t = 1e-3 (at t = 0 and 9.2e-4 it agrees to 0.1 %)."""
    target = RING.marginal(SDE, 1e-3)
    vals = [mode_conditional_swd(target.sample(n, generator=_g(s)), target, _g(100 + s))[0] for s in range(seeds)]
    return sum(vals) / len(vals)


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# Measured mode-conditional SWD on the ring at a budget of 50 NFE, n = 2000, seeds 0 / 1 / 2, against a floor of
# 0.0316 +- 0.0024 (exact draws, 20 seeds; the same at t = 0, 9.2e-4 and 1e-3): diffusers ddpm 0.044 / 0.043 / 0.039,
# ddim 0.040 / 0.032 / 0.042 (euler identical), dpmpp_2m 0.039 / 0.033 / 0.048, unipc 0.039 / 0.031 / 0.039, heun
# 0.048 / 0.040 / 0.042; k-diffusion euler 0.040 / 0.034 / 0.049, heun, dpmpp_2m, lms and dpm_fast 0.038 / 0.030 /
# 0.041. The worst is 1.55x the floor (seed 0 here: at most 1.5x), so the bound, 2x the floor, is deterministic
# in practice and catches gross mapping errors (Euler without the input scaling: 3e5). On this 2-D problem a
# subtle one, the naive timestep i -> t = (i + 1) / 1000 in place of matching alpha_bar, is invisible (DDIM 0.0405
# vs 0.0399): the equivalence tests below, against our own DDIM on the peer's grid, catch that.
@pytest.mark.parametrize("name", PEERS)
def test_each_peer_counts_nfe_and_reaches_near_the_floor(name, counting):
    model, calls = counting(RING.eps_model(SDE))
    score = sd.EpsilonScore(model, SDE)
    res = peers.peer_sample(name, score, SDE, (2000, 2), 50, seed=0)
    assert res.status == "ok", res.status
    assert res.x.shape == (2000, 2) and torch.isfinite(res.x).all()
    assert 0 < res.nfe == len(calls) == score.nfe and 45 <= res.nfe <= 50
    if name in ("diffusers-ddpm", "diffusers-heun"):
        assert res.t_end == 0.0
    else:
        assert 9e-4 < res.t_end <= 1.0001e-3
    target = RING.marginal(SDE, res.t_end) if res.t_end > 0 else RING
    value = mode_conditional_swd(res.x.double(), target, _g(9))[0]
    floor = _ring_floor()
    assert value < 2 * floor, (value, floor)


@pytest.mark.parametrize("nfe", [1, 2, 3, 7])
@pytest.mark.parametrize("name", PEERS)
def test_counted_nfe_stays_within_small_budgets(name, nfe):
    score = RING.score(SDE)
    res = peers.peer_sample(name, score, SDE, (8, 2), nfe, seed=0)
    assert res.nfe == score.nfe and 1 <= res.nfe <= max(nfe, 2)  # Heun-type: at least one full step of 2 calls


@pytest.mark.parametrize("name", [p for p in ("diffusers-ddpm", "kdiff-euler") if p in PEERS])
def test_same_seed_same_samples_and_the_global_rng_is_untouched(name):
    state = torch.random.get_rng_state()
    a = peers.peer_sample(name, RING.score(SDE), SDE, (16, 2), 10, seed=3).x
    b = peers.peer_sample(name, RING.score(SDE), SDE, (16, 2), 10, seed=3).x
    c = peers.peer_sample(name, RING.score(SDE), SDE, (16, 2), 10, seed=4).x
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("name", PEERS)
def test_divergence_is_recorded_not_raised(name, bad):
    exact = RING.eps_model(SDE)
    score = sd.EpsilonScore(lambda x, t: exact(x, t) * (bad if float(t[0]) < 0.5 else 1.0), SDE)
    res = peers.peer_sample(name, score, SDE, (8, 2), 10, seed=0)
    assert res.status.startswith("diverged") and "non-finite" in res.status
    assert 0 < res.nfe == score.nfe


@pytest.mark.skipif(not {"diffusers-euler", "diffusers-ddim"} <= set(PEERS), reason="diffusers not installed")
def test_diffusers_euler_in_sigma_space_is_ddim():
    """Euler on the probability-flow ODE in sigma space is DDIM (Karras et al. 2022, sec. 4): with the input
    scaling, the initial noise and the final conversion done right the two adapters agree to float32 rounding."""
    a = peers.peer_sample("diffusers-euler", RING.score(SDE), SDE, (64, 2), 10, seed=1)
    b = peers.peer_sample("diffusers-ddim", RING.score(SDE), SDE, (64, 2), 10, seed=1)
    assert math.isclose(a.t_end, b.t_end, rel_tol=1e-3)  # Euler's final sigma is float32
    assert torch.allclose(a.x, b.x, atol=2e-4), (a.x - b.x).abs().max()


@pytest.mark.skipif("kdiff-euler" not in PEERS, reason="k-diffusion not installed")
def test_kdiffusion_euler_is_our_ddim_on_its_grid():
    """The denoiser k-diffusion sees returns the exact x0 at the t with sigma_hat = sigma / alpha: its Euler on a
    Karras grid equals our DDIM on the same times."""
    kd = peers._kdiffusion()
    s_min, s_max = peers.sigma_hat(SDE, SDE.t_min), peers.sigma_hat(SDE, 1.0)
    sigmas = kd.get_sigmas_karras(11, s_min, s_max, rho=7.0)[:-1]
    grid = torch.tensor([peers.sigma_to_t(SDE, float(s)) for s in sigmas], dtype=torch.float64)
    res = peers.peer_sample("kdiff-euler", RING.score(SDE), SDE, (64, 2), 10, seed=0)
    assert res.nfe == 10 and math.isclose(res.t_end, SDE.t_min, rel_tol=1e-5)
    x_init = torch.randn((64, 2), generator=_g(0)) * s_max * float(SDE.alpha(1.0))
    ours = sd.sample(RING.score(SDE), SDE, method="ddim", grid=grid, x_init=x_init).x
    assert torch.allclose(res.x, ours, atol=1e-4), (res.x - ours).abs().max()


@pytest.mark.skipif("diffusers-ddim" not in PEERS, reason="diffusers not installed")
def test_diffusers_ddim_is_our_ddim_on_its_grid():
    """diffusers' DDIM driven by the exact eps of its own alpha_bar_i equals our DDIM on the times with those
    alpha_bar values (trailing timesteps, then alpha_bar_0) from the same initial noise, to float32 rounding."""
    diffusers = pytest.importorskip("diffusers")
    spec = peers._DIFFUSERS["diffusers-ddim"]
    sched = diffusers.DDIMScheduler(
        beta_schedule="linear", beta_start=1e-4, beta_end=0.02, timestep_spacing="trailing", **spec.config
    )
    sched.set_timesteps(10)
    abar = peers.diffusers_alpha_bar()
    times = SDE.t_from_log_snr(torch.log(abar / (1 - abar)))
    grid = torch.cat([times[sched.timesteps.long()], times[:1]])
    res = peers.peer_sample("diffusers-ddim", RING.score(SDE), SDE, (64, 2), 10, seed=5)
    assert res.nfe == 10 and res.t_end == float(times[0])
    ours = sd.sample(RING.score(SDE), SDE, method="ddim", grid=grid, x_init=torch.randn((64, 2), generator=_g(5))).x
    assert torch.allclose(res.x, ours, atol=1e-4), (res.x - ours).abs().max()


# --- flow-matching peers: FlowSDE(T=1), driven by the exact velocity --------------------------------------------
def _flow_score(counting=None):
    model = RING.velocity_model(FLOW)
    calls = None
    if counting is not None:
        model, calls = counting(model)
    return sd.FlowVelocityScore(model, FLOW), calls


# Measured on the ring at 50 NFE, n = 2000, seed 0, against the floor at t = 0: every flow peer at 1.19x-1.27x the
# floor (DPM-Solver++, Heun, UniPC and midpoint 1.19-1.20x, the shift-3 schedulers 1.23-1.27x); the bound is the VP
# peers' 2x.
@pytest.mark.parametrize("name", FLOW_PEERS)
def test_each_flow_peer_counts_nfe_and_reaches_near_the_floor(name, counting):
    score, calls = _flow_score(counting)
    res = peers.peer_sample(name, score, FLOW, (2000, 2), 50, seed=0)
    assert res.status == "ok" and res.t_end == 0.0 and torch.isfinite(res.x).all()
    assert 0 < res.nfe == len(calls) == score.nfe and 45 <= res.nfe <= 50
    assert min(calls) > 0 and max(calls) <= 1.0  # never at noise level 0, where eps is undefined
    assert mode_conditional_swd(res.x.double(), RING, _g(9))[0] < 2 * _ring_floor()


@pytest.mark.parametrize("name", FLOW_PEERS)
def test_flow_peers_small_budgets_divergence_and_seeds(name):
    for nfe in (1, 2, 7):
        score, _ = _flow_score()
        res = peers.peer_sample(name, score, FLOW, (8, 2), nfe, seed=0)
        assert res.nfe == score.nfe and 1 <= res.nfe <= max(nfe, 2)
    exact = RING.velocity_model(FLOW)
    bad = sd.FlowVelocityScore(lambda x, t: exact(x, t) * (math.nan if float(t[0]) < 0.5 else 1.0), FLOW)
    res = peers.peer_sample(name, bad, FLOW, (8, 2), 10, seed=0)
    assert res.status.startswith("diverged") and "non-finite" in res.status
    a, b = (peers.peer_sample(name, _flow_score()[0], FLOW, (16, 2), 10, seed=3).x for _ in range(2))
    assert torch.equal(a, b)


def test_flow_peers_refuse_another_path():
    if not FLOW_PEERS:
        pytest.skip("no flow peer")
    with pytest.raises(ValueError, match="FlowSDE"):
        peers.peer_sample(FLOW_PEERS[0], RING.score(SDE), SDE, (8, 2), 5, seed=0)
    with pytest.raises(ValueError, match="FlowSDE"):
        shifted = sd.FlowSDE(shift=3.0, T=1.0)
        peers.peer_sample(
            FLOW_PEERS[0], sd.FlowVelocityScore(RING.velocity_model(shifted), shifted), shifted, (8, 2), 5, 0
        )
