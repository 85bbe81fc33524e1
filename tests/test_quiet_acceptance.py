"""Inputs the Python API used to accept silently and now refuses with a message that names the argument."""

import importlib

import pytest
import torch

import scoresde as sd
from scoresde.train.config import TrainConfig

VP = sd.VPSDE()
RING = sd.get_problem("ring")


def test_train_config_refuses_zero_steps():
    # steps=0 wrote an untrained checkpoint as if training had happened
    with pytest.raises(ValueError, match=r"TrainConfig: steps must be an int >= 1, got 0"):
        TrainConfig(steps=0)
    assert TrainConfig(steps=1).steps == 1


@pytest.mark.parametrize("seed", [-1, -(2**70), 1.5, True, "0"])
def test_sample_refuses_a_seed_that_is_not_a_non_negative_int(seed):
    # seed=-1 was taken modulo 2^62, silently the same stream as seed 2^62 - 1
    with pytest.raises(ValueError, match=r"seed must be an int >= 0"):
        sd.sample(RING.score(VP), VP, (4, 2), method="ddim", steps=2, seed=seed)
    with pytest.raises(ValueError, match=r"seed must be an int >= 0"):
        sd.inpaint(RING.score(VP), torch.zeros(4, 2), torch.ones(4, 2, dtype=torch.bool), steps=2, seed=seed)


def test_sample_refuses_absurd_steps_before_allocating_anything(monkeypatch):
    # steps=10**8 allocated a 2.8 GB grid and coefficient table before anything else was checked
    run_mod = importlib.import_module("scoresde.grids")  # resolve_grid builds the grid of sample and inpaint

    class Built(Exception):
        pass

    def time_grid(*args, **kwargs):
        raise Built

    monkeypatch.setattr(run_mod, "time_grid", time_grid)
    with pytest.raises(ValueError, match=r"steps must be an int in \[1, 100000\] .*got 100000000"):
        sd.sample(RING.score(VP), VP, (4, 2), method="ddim", steps=10**8, seed=0)
    with pytest.raises(ValueError, match=r"steps must be an int in \[1, 100000\]"):
        sd.inpaint(RING.score(VP), torch.zeros(4, 2), torch.ones(4, 2, dtype=torch.bool), steps=10**8, seed=0)
    with pytest.raises(Built):  # the largest accepted number goes on to build its grid
        sd.sample(RING.score(VP), VP, (4, 2), method="ddim", steps=100_000, seed=0)


def test_an_explicit_grid_is_not_capped_by_steps():
    grid = torch.linspace(1.0, 1e-3, 4, dtype=torch.float64)
    out = sd.sample(RING.score(VP), VP, (4, 2), method="ddim", steps=10**8, grid=grid, seed=0)
    assert out.nfe == 3


def test_the_state_dtype_rules_the_samples_and_time_keeps_float32_precision():
    """A float64 model on a float32 state gives float32 samples (it promoted them); a bfloat16 state still hands
    the model t in float32, so t = 0.999 T is not rounded to T (bfloat16 has 8 bits of mantissa)."""
    vp = sd.VPSDE()
    exact = sd.get_problem("ring").eps_model(vp)
    out = sd.sample(sd.EpsilonScore(lambda x, t: exact(x, t).double(), vp), vp, (8, 2), steps=3, seed=0)
    assert out.x.dtype == torch.float32
    seen = []

    def model(x, t):
        seen.append(t)
        return torch.zeros_like(x)

    score = sd.EpsilonScore(model, vp)
    score.eps(torch.zeros(2, 2, dtype=torch.bfloat16), 0.999)
    assert seen[0].dtype == torch.float32 and float(seen[0][0]) == pytest.approx(0.999, abs=1e-7)
