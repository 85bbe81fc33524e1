"""What the solver protocol declares (scoresde/solvers/base.py): two kinds, the configured order and cost, the
applicability check, errors located by whoever knows the step, nothing written into the run's shared objects."""

import math

import pytest
import torch

import scoresde as sd
from scoresde.checks import check_one_source
from scoresde.solvers import EngineSolver, Evaluator, GridSolver, NonFiniteError, Solver, get_solver, register

VP = sd.VPSDE()
RING = sd.get_problem("ring")


@pytest.mark.parametrize("method", sd.available_methods())
def test_every_method_is_one_of_the_two_kinds(method):
    cls = get_solver(method)
    assert issubclass(cls, GridSolver) != issubclass(cls, EngineSolver)
    assert cls.engine == issubclass(cls, EngineSolver) == sd.method_info(method)["engine"]
    # the engines are the torchdiffeq and torchsde methods and the adaptive reverse SDE's controller
    assert cls.engine == method.startswith(("ode-", "sde-"))
    assert cls.make().check(RING.score(VP), (4, 2)) == 0  # applies everywhere: no model call


def test_a_class_of_neither_kind_is_refused():
    class Loose(Solver):
        name, kind, order, nfe_per_step = "loose-test", "ode", 1, 1

    with pytest.raises(TypeError, match="GridSolver"):
        register(Loose)
    assert "loose-test" not in sd.available_methods()


def test_order_and_cost_follow_the_options():
    unipc = get_solver("unipc")
    assert [unipc.make(order=p).order for p in (1, 2, 3)] == [2, 3, 4]
    assert sd.method_info("unipc")["order"] == 3
    pc = get_solver("pc").make(n_corrector=2)
    assert pc.nfe_per_step == pc.draws_per_step == 3 and sd.method_info("pc")["nfe_per_step"] == 2
    out = sd.sample(RING.score(VP), shape=(4, 2), method="pc", n_corrector=2, steps=5, seed=0)
    assert out.nfe == 5 * pc.nfe_per_step


def test_a_fitted_solver_declares_its_check_and_its_own_grid():
    fitted = sd.fit_solver(RING.score(VP), 3, (2,), budget=3000, teacher_steps=8, grids=("logsnr",))
    assert type(fitted).check is not Solver.check and fitted.own_grid and not fitted.engine
    assert fitted.check(RING.score(VP), (4, 2)) == 1  # the fingerprint probe
    with pytest.raises(ValueError, match="runs on its own grid"):
        sd.sample(RING.score(VP), shape=(4, 2), method=fitted, seed=0, t_min=1e-2)
    # the state is the family's own type, its history most recent last
    seen = []
    sd.sample(RING.score(VP), shape=(4, 2), method=fitted, seed=0, callback=seen.append)
    assert all(type(i.state).__name__ == "FittedState" for i in seen)
    assert seen[1].state.history[-1] is seen[1].denoised and seen[1].state.history[0] is seen[0].denoised


def test_the_loop_locates_the_error_and_writes_nothing_into_the_evaluator():
    exact = RING.eps_model(VP)

    def model(x, t):
        return exact(x, t) * (math.nan if float(t[0]) < 0.5 else 1.0)

    score = sd.EpsilonScore(model, VP)
    for method in ("ddim", "ode-rk4", "sde-euler"):
        with pytest.raises(NonFiniteError, match=r"step \d+ of 10, t = ") as info:
            sd.sample(score, shape=(4, 2), method=method, steps=10, seed=0, dtype=torch.float64)
        assert info.value.step is not None
    ev = Evaluator(RING.score(VP), "ddim", 3)
    assert not hasattr(ev, "step")
    view = ev.view(check_calls=False)
    assert ev.check_calls and not view.check_calls and view._calls is ev._calls
    err = NonFiniteError("m: the score returned non-finite values (NaN/inf)", "t = 0.5, model evaluation 3")
    assert str(err.locate(1, 4).locate(2, 4)) == (
        "m: the score returned non-finite values (NaN/inf) at step 2 of 4, t = 0.5, model evaluation 3"
    )


def test_generator_or_seed_is_one_check():
    with pytest.raises(ValueError, match="pass either generator or seed, not both"):
        check_one_source(torch.Generator(), 0)
    check_one_source(None, 0)
    for call in (
        lambda: sd.sample(RING.score(VP), shape=(2, 2), generator=torch.Generator(), seed=0),
        lambda: sd.inpaint(
            RING.score(VP), torch.zeros(2, 2), torch.tensor([True, False]), generator=torch.Generator(), seed=0
        ),
    ):
        with pytest.raises(ValueError, match="pass either generator or seed, not both"):
            call()
