"""Issue 32, `scoresde bench`: nothing silent. A run without samples is said on stderr, listed under the summary
with its reason and counted in the exit status; the default fit budget works at every n; adaptive methods are
held to the NFE budgets; argument errors come before any output or file; `--help` gives every default."""

import math

import pytest

from scoresde import bench
from scoresde.cli import main


def _args(tmp_path, *more):
    return ["bench", "--problems", "ring", "--peers", "", "--n", "200", "--no-progress", "--out", str(tmp_path), *more]


def test_a_failed_fit_is_said_on_stderr_listed_in_the_summary_and_fails_the_exit_status(tmp_path, capsys, monkeypatch):
    from scoresde.bench import runner

    def refuse(*a, **k):
        raise ValueError("fit_solver: no good")

    monkeypatch.setattr(runner, "fit_solver", refuse)
    assert main(_args(tmp_path, "--methods", "fitted,ddim", "--nfe", "5")) == 1
    out, err = capsys.readouterr()
    assert "scoresde bench: ring fitted budget=5: fit failed: fit_solver: no good\n" in err
    assert err.rstrip().splitlines()[-1].startswith("scoresde bench: 1 of 2 runs failed")
    assert "## Runs without a figure (1 of 2)" in out
    assert "| ring | fitted | budget=5 | 0 | failed | fit failed: fit_solver: no good |" in out
    assert (
        "| ring | fitted | budget=5 | 0 | failed | fit failed: fit_solver: no good |"
        in (tmp_path / "bench_full.md").read_text()
    )


def test_runs_that_all_gave_samples_add_nothing(tmp_path, capsys):
    assert main(_args(tmp_path, "--methods", "ddim", "--nfe", "5")) == 0
    out, err = capsys.readouterr()
    assert "Runs without a figure" not in out and err == ""


def test_the_least_fit_budget_is_fit_solvers_own(monkeypatch):
    """:func:`min_fit_budget` is the smallest budget fit_solver accepts: at it the fit starts (its model is
    called), one less is refused."""
    from scoresde.bench.config import min_fit_budget
    from scoresde.fitted import fit_solver

    class Called(Exception):
        pass

    def model(x, t):
        raise Called

    score = bench.make_problem("ring").score(bench.make_problem("ring").sde)
    score.model = model
    for steps in (2, 5, 10):
        with pytest.raises(Called):
            fit_solver(score, steps, (2,), budget=min_fit_budget(steps))
        with pytest.raises(ValueError, match=r"\(< 16\)"):
            fit_solver(score, steps, (2,), budget=min_fit_budget(steps) - 1)


def test_a_small_learned_bench_has_a_fitted_row_with_its_fit_counted(tmp_path, moons_ckpt):
    """The default fit budget was 2 n, refused by the fit below n ~ 1,600 (the docs' own --n 1437): the row said
    "fit failed". Now it is raised to what the fit needs, and the fit's calls are in the amortised NFE."""
    from scoresde.bench.config import min_fit_budget

    cfg = bench.BenchConfig(
        problems=(f"learned:{moons_ckpt}",),
        methods=("fitted",),
        peers=(),
        budgets=(5,),
        n=300,
        floor_seeds=2,
        out=str(tmp_path),
        tag="t",
    )
    assert cfg.fit_budget_for(5) == min_fit_budget(5) > 2 * 300
    (row,) = bench.run_bench(cfg, progress=False)
    assert row["status"] == "ok" and row["nfe"] == 5 and math.isfinite(row["tv"])
    assert 2 * 300 < row["fit_evals"] <= min_fit_budget(5) + 8  # the fit and the probe of the check at sampling
    assert row["nfe_amortised"] == pytest.approx(5 + row["fit_evals"] / 300, abs=0.005)
    # at large n the default is 2 per sample, at most 10,000 (fit_solver's own default)
    assert bench.BenchConfig(n=4000).fit_budget_for(10) == 8000 and bench.BenchConfig().fit_budget_for(5) == 10_000


def test_a_given_fit_budget_too_small_for_a_planned_fit_is_refused_before_any_run(tmp_path):
    from scoresde.bench.config import min_fit_budget

    cfg = dict(problems=("ring",), peers=(), budgets=(5, 10), n=200, out=str(tmp_path / "r"))
    need = f"--fit-budget: 2000 .* fit of 10 steps: it needs at least {min_fit_budget(10)}"
    with pytest.raises(ValueError, match=need):
        bench.run_bench(bench.BenchConfig(**cfg, methods=("fitted",), fit_budget=2000), progress=False)
    assert not (tmp_path / "r").exists()
    bench.validate(bench.BenchConfig(**cfg, methods=("ddim",), fit_budget=2000))  # no fit planned: no fit budget


def test_adaptive_methods_stop_at_the_largest_budget(tmp_path, capsys):
    """An adaptive method runs once per tolerance and is placed at the NFE it counted; one still going when it asks
    for a call beyond the largest budget is stopped there ("over budget"), so it cannot take the bench's time."""
    cfg = dict(problems=("ring",), peers=(), tolerances=(1e-2,), n=200, floor_seeds=2, out=str(tmp_path), tag="t")
    methods = ("ode-dopri5", "sde-adaptive")
    rows = bench.run_bench(bench.BenchConfig(**cfg, methods=methods, budgets=(5, 10)), progress=False)
    assert [(r["method"], r["nfe"], r["status"]) for r in rows] == [
        (m, 10, "over budget: > 10 NFE (largest --nfe)") for m in methods
    ]
    assert all(math.isnan(r["mode_swd"]) for r in rows)
    assert "ring ode-dopri5 tol=0.01: over budget: > 10 NFE (largest --nfe)" in capsys.readouterr().err
    # within the largest budget it runs to its end as before, at the NFE it counted
    (row,) = bench.run_bench(bench.BenchConfig(**cfg, methods=methods[:1], budgets=(10, 200)), progress=False)
    assert row["status"] == "ok" and 10 < row["nfe"] <= 200 and row["mode_swd"] > 0
    assert row["key"] != rows[0]["key"]  # the stop is part of what determines the row
    # the command line: over-budget runs are the method's result, exit 0, counted in a closing line
    capsys.readouterr()
    assert main(_args(tmp_path / "cli", "--methods", "ode-dopri5", "--nfe", "5", "--tol", "1e-2")) == 0
    out, err = capsys.readouterr()
    assert "| ring | ode-dopri5 | tol=0.01 | 5 | over budget | > 5 NFE (largest --nfe) |" in out
    assert err.rstrip().splitlines()[-1].startswith("scoresde bench: 1 of 1 runs over budget")


@pytest.mark.parametrize(
    "more",
    [
        ["--nfe", "0"],
        ["--nfe", ""],
        ["--problems", "gmm-family:d=2,k=2,seed=5-3"],
        ["--problems", "learned:no-such-folder"],
        ["--methods", "fitted", "--nfe", "5", "--fit-budget", "100"],
        ["--methods", "ddim", "--peers", "flow-torchdiffeq-euler"],
    ],
)
def test_an_argument_error_is_one_line_before_any_output_or_file(tmp_path, capsys, more):
    args = ["bench", "--no-progress", "--out", str(tmp_path / "r"), *more]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("scoresde bench: error: --"), (out, err)
    assert not (tmp_path / "r").exists()


def test_the_help_gives_every_default(capsys):
    from scoresde.cli import bench as bench_cli
    from scoresde.cli.args import Parser

    parser = Parser(prog="scoresde bench")
    bench_cli.add_arguments(parser)
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert "(default: " in (action.help or ""), action.option_strings
    assert main(["bench", "--help"]) == 0
    text = capsys.readouterr().out
    assert "default: None" not in text and "Exit status" in text


def test_the_header_still_opens_the_output(tmp_path, capsys):
    assert main(_args(tmp_path, "--methods", "ddim", "--nfe", "5")) == 0
    out = capsys.readouterr().out
    assert out.startswith("scoresde bench (full): problems ring, n = 200, NFE budgets (5,)\n## Best at each NFE")
