"""Nothing a run writes is read by another: two runs interleaved step by step give what they give one after the other.

A run keeps everything it writes (the evaluator's count, the context's coefficient memo, the solver's state, the
torchsde cursor) in objects made for it (scoresde/run.py). These tests drive a second run from the first one's
callback, on the same score object and the same solver objects, and compare both with the same two runs (with the
same callbacks) made one after the other: bit for bit, NFE included. (Before the run builder, a run inside another's
callback on the same score added its model calls to the outer run's NFE: the count was the score's counter minus its
value at the start.)
"""

import threading

import pytest
import torch

import scoresde as sd
from scoresde.conditioning import inpaint

VP = sd.VPSDE()
RING = sd.get_problem("ring")
SHAPE = (8, 2)


@pytest.fixture(scope="module")
def score():
    return RING.score(VP)


@pytest.fixture(scope="module")
def fitted(score):
    return sd.fit_solver(score, 4, (2,), budget=6000, teacher_steps=16, grids=("logsnr", "karras"))


def _runs(score, fitted) -> dict:
    """Named runs, each ``run(callback) -> (x, nfe)``. Every sampler takes the callback; ``inpaint`` has its own (the
    replacement of the known entries) and runs whole when its turn comes."""
    y = torch.zeros(SHAPE, dtype=torch.float64)
    mask = torch.tensor([True, False])

    def sample(method, seed, **kw):
        def run(callback):
            out = sd.sample(score, shape=SHAPE, method=method, seed=seed, dtype=torch.float64, callback=callback, **kw)
            return out.x, out.nfe

        return run

    def painted(callback):
        out = inpaint(score, y, mask, method="ddpm", steps=5, seed=9, resample=2)
        return out.x, out.nfe

    return {
        "unipc": sample("unipc", 1, steps=5),
        "dpm++2m-sde": sample("dpm++2m-sde", 2, steps=5),
        "pc": sample("pc", 3, steps=4),
        "fitted": sample(fitted, 4),
        "ode-rk4": sample("ode-rk4", 5, steps=4),  # engine solvers: torchdiffeq and torchsde
        "sde-heun": sample("sde-heun", 6, steps=4),
        "sde-adaptive": sample("sde-adaptive", 7, rtol=0.1, atol=0.1),
        "inpaint": painted,
    }


def _sequential(run_a, run_b):
    return run_a(lambda info: None), run_b(lambda info: None)


def _lockstep(run_a, run_b):
    """Run B in a thread that takes one step each time A's callback lets it (only one of them runs at a time);
    B finishes after A if it has more steps."""
    go, done, box = threading.Semaphore(0), threading.Semaphore(0), {}

    def b_step(info):
        done.release()
        go.acquire()

    def b_thread():
        go.acquire()
        try:
            box["b"] = run_b(b_step)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            box["error"] = e
        finally:
            box["finished"] = True
            done.release()

    def a_step(info):
        if not box.get("finished"):
            go.release()
            done.acquire()

    thread = threading.Thread(target=b_thread)
    thread.start()
    a = run_a(a_step)
    while not box.get("finished"):
        go.release()
        done.acquire()
    thread.join()
    if "error" in box:
        raise box["error"]
    return a, box["b"]


def _nested(run_a, run_b):
    """Run B whole inside A's callback after A's second step."""
    box = {}

    def a_step(info):
        if info.k == 1:
            box["b"] = run_b(lambda i: None)

    a = run_a(a_step)
    return a, box["b"]


def _same(got, want):
    (xa, na), (xb, nb) = got
    (ya, ma), (yb, mb) = want
    assert torch.equal(xa, ya) and na == ma
    assert torch.equal(xb, yb) and nb == mb


PAIRS = [
    ("unipc", "fitted"),
    ("fitted", "sde-adaptive"),
    ("sde-adaptive", "pc"),
    ("pc", "sde-heun"),
    ("sde-heun", "ode-rk4"),
    ("dpm++2m-sde", "inpaint"),
    ("fitted", "fitted"),
    ("sde-adaptive", "sde-adaptive"),
]


@pytest.mark.parametrize("a, b", PAIRS)
def test_runs_in_lockstep_give_what_they_give_one_after_the_other(score, fitted, a, b):
    runs = _runs(score, fitted)
    _same(_lockstep(runs[a], runs[b]), _sequential(runs[a], runs[b]))


@pytest.mark.parametrize("a, b", [("unipc", "ode-dopri5"), ("sde-adaptive", "fitted"), ("fitted", "inpaint")])
def test_a_run_inside_a_callback_changes_neither_run(score, fitted, a, b):
    runs = _runs(score, fitted)

    def dopri(callback):  # an adaptive engine takes no callback: it runs whole
        out = sd.sample(score, shape=SHAPE, method="ode-dopri5", seed=8, dtype=torch.float64, rtol=1e-3, atol=1e-3)
        return out.x, out.nfe

    runs["ode-dopri5"] = dopri
    _same(_nested(runs[a], runs[b]), _sequential(runs[a], runs[b]))
