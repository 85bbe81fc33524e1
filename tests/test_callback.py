"""The per-step hook: sample(..., callback=fn) on the one stepping loop (scoresde/solvers/base.py)."""

import math
import re

import pytest
import torch

import scoresde as sd
from scoresde.conditioning import inpaint

VP = sd.VPSDE()
RING = sd.get_problem("ring")
FIXED = [m for m in sd.available_methods() if not sd.method_info(m)["adaptive"]]
ADAPTIVE_ODE = [m for m in sd.available_methods() if sd.method_info(m)["adaptive"] and m.startswith("ode-")]


@pytest.mark.parametrize("method", FIXED)
def test_a_callback_that_returns_nothing_changes_nothing(method):
    """Called once per step in order, with the state the loop holds; the samples are bit for bit those of a run
    without it (the torchdiffeq methods then take one engine call per step: the same arithmetic). torchsde's
    per-interval calls differ from one call over the grid in the last bits (measured 4e-15 after 5 steps)."""
    kw = dict(shape=(6, 2), method=method, steps=5, seed=3, dtype=torch.float64, return_trajectory=True)
    plain = sd.sample(RING.score(VP), **kw)
    seen = []
    hooked = sd.sample(RING.score(VP), callback=seen.append, **kw)
    exact = 1e-13 if method.startswith("sde-") else 0.0
    torch.testing.assert_close(hooked.x, plain.x, rtol=0, atol=exact)
    assert hooked.nfe == plain.nfe
    assert [i.k for i in seen] == list(range(5)) and all(i.n_steps == 5 for i in seen)
    times = plain.times.tolist()
    assert [(i.t, i.s) for i in seen] == list(zip(times[:-1], times[1:], strict=True))
    for i, info in enumerate(seen):
        torch.testing.assert_close(info.x, plain.trajectory[i + 1], rtol=0, atol=exact)
        assert info.denoised is None or info.denoised.shape == info.x.shape


def test_denoised_is_the_data_prediction_at_the_step_start():
    seen = []
    out = sd.sample(RING.score(VP), shape=(4, 2), method="ddim", steps=3, seed=0, callback=seen.append)
    score = RING.score(VP)
    x = sd.sample(RING.score(VP), shape=(4, 2), method="ddim", steps=3, seed=0, return_trajectory=True).trajectory
    for info in seen:
        torch.testing.assert_close(info.denoised, score.x0(x[info.k], info.t))
    assert out.nfe == 3


def test_a_returned_state_replaces_the_solver_state():
    """Clamping every step to a box: the next step starts from the returned tensor (dpm++2m keeps its history)."""

    def clamp(info):
        return info.x.clamp(-0.5, 0.5)

    out = sd.sample(RING.score(VP), shape=(64, 2), method="dpm++2m", steps=6, seed=0, callback=clamp)
    free = sd.sample(RING.score(VP), shape=(64, 2), method="dpm++2m", steps=6, seed=0)
    assert out.x.abs().max() <= 0.5 and free.x.abs().max() > 0.5


def test_bad_callback_output_and_adaptive_methods_are_refused():
    with pytest.raises(ValueError, match=re.escape("callback must return None or a tensor of shape (4, 2)")):
        sd.sample(RING.score(VP), shape=(4, 2), method="ddim", steps=3, seed=0, callback=lambda i: i.x[:2])
    with pytest.raises(sd.NonFiniteError, match="ddim: the callback returned non-finite values .* step 2 of 3"):
        sd.sample(
            RING.score(VP),
            shape=(4, 2),
            method="ddim",
            steps=3,
            seed=0,
            callback=lambda i: i.x * math.nan if i.k == 1 else None,
        )
    for method in ADAPTIVE_ODE:  # torchdiffeq's own steps have no hook of ours
        with pytest.raises(ValueError, match="no per-step callback"):
            sd.sample(RING.score(VP), shape=(4, 2), method=method, seed=0, callback=lambda i: None)


def test_sde_adaptive_takes_a_callback():
    """sde-adaptive's controller calls the hook after every accepted step: times decreasing from T to t_min without
    gaps, n_steps unknown (None); a hook that returns nothing changes nothing, and a returned state replaces it."""
    kw = dict(shape=(16, 2), method="sde-adaptive", seed=4, dtype=torch.float64, rtol=0.05, atol=0.05)
    plain = sd.sample(RING.score(VP), **kw)
    seen = []
    hooked = sd.sample(RING.score(VP), callback=seen.append, **kw)
    assert torch.equal(hooked.x, plain.x) and hooked.nfe == plain.nfe
    assert len(seen) >= 2 and [i.k for i in seen] == list(range(len(seen)))
    assert all(i.n_steps is None and i.s < i.t for i in seen)
    assert seen[0].t == VP.T and seen[-1].s == VP.t_min
    assert all(a.s == b.t for a, b in zip(seen, seen[1:], strict=False))
    torch.testing.assert_close(seen[-1].x, plain.x, rtol=0, atol=0)
    boxed = sd.sample(RING.score(VP), callback=lambda i: i.x.clamp(-0.2, 0.2), **kw)
    assert boxed.x.abs().max() <= 0.2 + 1e-12 and plain.x.abs().max() > 0.2


def test_a_nan_while_inpainting_names_the_real_step():
    """Inpainting runs on the ordinary loop: a score that turns NaN below t = 0.5 is reported at the step that
    reaches it (step 6 or 7 of 10 on the uniform grid), not at "step 1"."""
    exact = RING.eps_model(VP)

    def model(x, t):
        return exact(x, t) * (math.nan if float(t[0]) < 0.5 else 1.0)

    y = torch.zeros(4, 2, dtype=torch.float64)
    for method in ("dpm++2m", "ddpm", "edm-heun"):
        grid = sd.time_grid(VP, 10, sd.solvers.get_solver(method).default_grid)
        crossing = next(k for k in range(1, 11) if grid[k] < 0.5)
        with pytest.raises(sd.NonFiniteError) as info:
            inpaint(sd.EpsilonScore(model, VP), y, torch.tensor([True, False]), method=method, steps=10, seed=0)
        step = int(str(info.value).split("step ")[1].split(" of 10")[0])
        assert step in (crossing, crossing + 1), str(info.value)
