"""Host synchronisations per step, counted on the CPU with a dispatch trace.

On a GPU every read of a device value by the host (``.item()``, ``float(t)``, ``bool(t)``, ``torch.equal``,
``nonzero``) makes the host wait for the device. A ``TorchDispatchMode`` sees every such read as an aten op. Only
reads of values that derive from the sampled state count: the run's time arithmetic is float64 on Python floats
and CPU tensors by design (it never touches the device), while the noise, the state and the model's outputs would
live on the device. Taint starts at the random draws and follows every op's outputs (and the base of a view that is
written into).
"""

import math

import pytest
import torch

import scoresde as sd
from scoresde.diagnostics import HostSyncs


def _net_score(sde):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.SiLU(), torch.nn.Linear(16, 2))
    return sd.EpsilonScore(lambda x, t: net(torch.cat([x, t[:, None]], 1)), sde)


def _syncs(method, steps=10, **kw):
    sde = sd.VPSDE()
    with torch.no_grad(), HostSyncs() as counter:
        out = sd.sample(_net_score(sde), sde, (8, 2), method=method, steps=steps, seed=0, **kw)
    assert torch.isfinite(out.x).all()
    return counter.count


LOOP_METHODS = ["ddim", "ddpm", "dpm++2m", "dpm++2m-sde", "dpm++3m", "dpm2s", "dpm3s", "unipc", "edm-heun"]
LOOP_METHODS += ["edm-churn", "pc"]
CHECKS = ("step", "call", "end")


def test_the_counter_sees_a_sync():
    """The trace is not blind: one ``.item()`` and one ``bool()`` of a state-derived value are two, the time
    arithmetic on a CPU float64 tensor none."""
    with HostSyncs() as counter:
        x = torch.randn(4, 2)
        float(torch.tensor(0.5, dtype=torch.float64).exp())
        y = (x * 2).sum()
        y.item()
        bool(y > 0)
    assert counter.count == 2


@pytest.mark.parametrize("method", LOOP_METHODS)
def test_at_most_one_host_sync_per_step(method):
    """By default (``check="step"``) a fixed-grid method on the stepping loop reads the device once per step: the
    finiteness test of the state. Before this option it was 2-5 (a test of every model output and inner stage)."""
    steps = 10
    assert _syncs(method, steps) <= steps
    assert _syncs(method, steps, check="end") <= 1
    assert _syncs(method, steps, check="call") >= steps  # every model output too: the precise report costs more


def test_check_modes_report_a_nan():
    """Every mode catches a NaN; ``"step"`` names the step it appeared in, ``"end"`` only says that the samples are
    bad; an unknown mode is refused before any work."""
    ring = sd.get_problem("ring")
    vp = sd.VPSDE()
    exact = ring.eps_model(vp)

    def model(x, t):
        return exact(x, t) * (math.nan if float(t[0]) < 0.5 else 1.0)

    score = sd.EpsilonScore(model, vp)
    with pytest.raises(sd.NonFiniteError, match=r"ddim: the solver state .* step 7 of 10"):
        sd.sample(score, vp, (4, 2), method="ddim", steps=10, seed=0)
    with pytest.raises(sd.NonFiniteError, match=r"ddim: the score .* step 7 of 10"):
        sd.sample(score, vp, (4, 2), method="ddim", steps=10, seed=0, check="call")
    with pytest.raises(sd.NonFiniteError, match=r"ddim: the sampler returned non-finite") as info:
        sd.sample(score, vp, (4, 2), method="ddim", steps=10, seed=0, check="end")
    assert "step" not in str(info.value)
    with pytest.raises(ValueError, match="check must be one of"):
        sd.sample(score, vp, (4, 2), method="ddim", steps=10, seed=0, check="never")


def test_check_mode_does_not_change_the_samples():
    ring = sd.get_problem("ring")
    vp = sd.VPSDE()
    runs = [sd.sample(ring.score(vp), vp, (16, 2), method="unipc", steps=6, seed=1, check=c).x for c in CHECKS]
    assert all(torch.equal(runs[0], r) for r in runs[1:])


@pytest.mark.parametrize("t_sampler", ["lognormal", "uniform", "stratified", "importance"])
def test_a_training_loss_never_waits_for_the_device(t_sampler):
    """The loss of a training step reads no drawn value back: its times are drawn inside ``[t_eps, T]`` and not
    checked again (before, ``sde.perturb``'s range check read their min and max every step). Times a caller
    passes are still checked."""
    sde = sd.VPSDE()
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    model = lambda x, t: net(torch.cat([x, t[:, None]], 1))  # noqa: E731
    g = torch.Generator().manual_seed(0)
    with HostSyncs() as counter:
        sd.loss.denoising_loss(model, sde, torch.randn(16, 2), prediction="v", t_sampler=t_sampler, generator=g)
    assert counter.count == 0
    with pytest.raises(ValueError, match="time must lie in"):
        sd.loss.denoising_loss(model, sde, torch.randn(4, 2), t=torch.full((4,), 2.0))
