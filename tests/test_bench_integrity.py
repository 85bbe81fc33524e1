"""The bench never reports a stale row and never loses one: keyed resume, merging reruns, checks before work."""

import json
import os
import shutil
import warnings

import pytest

import scoresde
from scoresde import bench
from scoresde.cli import main
from scoresde.problems import PROBLEMS, ring


def _cfg(tmp_path, **kw):
    base = dict(problems=("ring",), methods=("ddim",), peers=(), budgets=(5,), tolerances=(1e-2,), n=300)
    return bench.BenchConfig(**{**base, "floor_seeds": 2, "out": str(tmp_path), "tag": "t", **kw})


@pytest.fixture
def runs(monkeypatch):
    """The (method, run) of every row actually computed (not resumed)."""
    calls = []
    real = bench.runner._run_one
    monkeypatch.setattr(bench.runner, "_run_one", lambda item, *a: calls.append(item["method"]) or real(item, *a))
    return calls


def _train(path, seed=0):
    from scoresde.train import TrainConfig, train

    cfg = TrainConfig(data="moons", n_train=256, steps=2, batch_size=16, ckpt_every=2, seed=seed, out=str(path))
    train(cfg, progress=False)
    return path


def _rows(tmp_path):
    return json.loads((tmp_path / "bench_t.json").read_text())["rows"]


def test_an_unchanged_rerun_resumes_every_row(tmp_path, runs):
    bench.run_bench(_cfg(tmp_path), progress=False)
    bench.run_bench(_cfg(tmp_path), progress=False)
    assert runs == ["ddim"]


def _other_ring():
    return ring(radius=5.0)


def _other_options(planned):
    def f(pname, method, cfg):
        return [{**r, "kwargs": {**r["kwargs"], "eta": 0.5}} for r in planned(pname, method, cfg)]

    return f


@pytest.mark.parametrize("change", ["n", "seed", "version", "problem", "options", "grid"])
def test_changing_anything_that_determines_a_row_reruns_it(tmp_path, runs, monkeypatch, change):
    bench.run_bench(_cfg(tmp_path), progress=False)
    kw = {}
    if change == "n":
        kw = {"n": 301}
    elif change == "seed":
        kw = {"seed": 1}
    elif change == "version":
        monkeypatch.setattr(scoresde, "__version__", scoresde.__version__ + ".post1")
    elif change == "problem":  # same name, another definition
        monkeypatch.setitem(PROBLEMS, "ring", _other_ring)
    elif change == "options":  # same method and run label, other options
        monkeypatch.setattr(bench.runner, "_planned", _other_options(bench.runner._planned))
    elif change == "grid":
        monkeypatch.setattr(bench.runner, "_planned", _with_grid(bench.runner._planned))
    bench.run_bench(_cfg(tmp_path, **kw), progress=False)
    assert runs == ["ddim", "ddim"]


def test_a_changed_fit_refits_the_fitted_row_and_keeps_the_others(tmp_path, runs, monkeypatch):
    """A fitted row's fit is part of its key (scoresde.fitted.REVISION): after the fit changes (the grid search
    came in revision 2), the same budget's row is fitted and sampled again; the other methods' rows resume."""
    cfg = dict(methods=("ddim", "fitted"), fit_budget=6000)
    bench.run_bench(_cfg(tmp_path, **cfg), progress=False)
    bench.run_bench(_cfg(tmp_path, **cfg), progress=False)
    assert runs == ["ddim", "fitted"]
    monkeypatch.setattr(bench.runner, "FIT_REVISION", bench.runner.FIT_REVISION + 1)
    bench.run_bench(_cfg(tmp_path, **cfg), progress=False)
    assert runs == ["ddim", "fitted", "fitted"]


def _with_grid(planned):
    def f(pname, method, cfg):
        return [{**r, "kwargs": {**r["kwargs"], "grid": "quadratic"}} for r in planned(pname, method, cfg)]

    return f


def test_a_retrained_checkpoint_in_place_reruns_and_another_of_the_same_name_keeps_both(tmp_path, runs):
    first, second = _train(tmp_path / "a" / "moons", seed=0), _train(tmp_path / "b" / "moons", seed=1)
    res = tmp_path / "res"
    (r1,) = bench.run_bench(_cfg(res, problems=(f"learned:{first}",)), progress=False)
    (r2,) = bench.run_bench(_cfg(res, problems=(f"learned:{second}",)), progress=False)
    assert runs == ["ddim", "ddim"] and r1["swd"] != r2["swd"]
    rows = _rows(res)  # both kept, told apart in the table
    assert sorted(r["swd"] for r in rows) == sorted([r1["swd"], r2["swd"]])
    md = (res / "bench_t.md").read_text()
    assert md.count("### learned:moons [") == 2
    shutil.rmtree(first)
    _train(first, seed=5)  # retrained in place: same folder, other weights
    (r3,) = bench.run_bench(_cfg(res, problems=(f"learned:{first}",)), progress=False)
    assert runs == ["ddim"] * 3 and r3["swd"] != r1["swd"]


def test_a_rerun_with_other_methods_merges_into_the_table(tmp_path):
    bench.run_bench(_cfg(tmp_path, methods=("ddim",)), progress=False)
    bench.run_bench(_cfg(tmp_path, methods=("ode-euler",)), progress=False)
    assert [r["method"] for r in _rows(tmp_path)] == ["ddim", "ode-euler"]
    md = (tmp_path / "bench_t.md").read_text()
    assert "| ddim | budget=5 |" in md and "| ode-euler | budget=5 |" in md
    assert len((tmp_path / "bench_t.csv").read_text().splitlines()) == 3
    # The same rows again replace themselves instead of doubling.
    bench.run_bench(_cfg(tmp_path, methods=("ddim",)), progress=False)
    assert [r["method"] for r in _rows(tmp_path)] == ["ddim", "ode-euler"]


def test_merge_replaces_a_keyless_row_of_the_same_run_and_keeps_the_others():
    old = [dict(problem="p", method="m", run="r", n=1, seed=0), dict(problem="p", method="x", run="r", n=1, seed=0)]
    new = [dict(problem="p", method="m", run="r", n=1, seed=0, key="k")]
    assert bench.report.merge_rows(old, new) == [old[1], new[0]]


@pytest.mark.parametrize(
    "kw, flag",
    [
        ({"budgets": (0,)}, "--nfe"),
        ({"budgets": ()}, "--nfe"),
        ({"n": 0}, "--n"),
        ({"n": 1}, "--n"),
        ({"seed": -1}, "--seed"),
        ({"methods": ("nope",)}, "--methods"),
        ({"methods": ("ddim@nope",)}, "--methods"),
        ({"problems": ("nope",)}, "--problems"),
        ({"problems": ("learned:/no/such/dir",)}, "--problems"),
        ({"peers": ("nope",)}, "--peers"),
        ({"tolerances": (-1.0,)}, "--tol"),
        ({"methods": ("ode-dopri5",), "tolerances": ()}, "--nfe"),  # an empty plan
    ],
)
def test_bad_arguments_fail_before_anything_is_written(tmp_path, runs, kw, flag):
    bench.run_bench(_cfg(tmp_path), progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match=f"^{flag}:"):
        bench.run_bench(_cfg(tmp_path, **kw), progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before and runs == ["ddim"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_out_fails_before_any_run(tmp_path, runs):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="^--out:"):
            bench.run_bench(_cfg(locked / "res"), progress=False)
    finally:
        locked.chmod(0o700)
    assert runs == []


def test_an_out_that_is_a_file_fails_before_any_run(tmp_path, runs):
    (tmp_path / "f").write_text("mine")
    with pytest.raises(ValueError, match="^--out:"):
        bench.run_bench(_cfg(tmp_path / "f"), progress=False)
    assert runs == [] and (tmp_path / "f").read_text() == "mine"


def test_a_failing_plot_keeps_the_tables(tmp_path, monkeypatch):
    import scoresde.plot

    def boom(rows, path):
        raise ValueError("Data cannot be log-scaled")

    monkeypatch.setattr(scoresde.plot, "plot_nfe_quality", boom)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bench.run_bench(_cfg(tmp_path), progress=False)
    assert any("log-scaled" in str(w.message) for w in caught)
    for ext in ("csv", "json", "md"):
        assert (tmp_path / f"bench_t.{ext}").stat().st_size > 0
    assert not (tmp_path / "bench_t.png").exists()


def test_small_n_is_reported_not_lost_through_the_cli(tmp_path, capsys):
    args = ["bench", "--problems", "ring", "--methods", "ddim", "--peers", "", "--nfe", "5,10", "--no-progress"]
    assert main([*args, "--n", "10", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "bench_full.md").stat().st_size > 0 and (tmp_path / "bench_full.json").exists()
    err = capsys.readouterr().err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--methods", "nope"], "--methods"),
        (["--problems", "nope"], "--problems"),
        (["--peers", "nope"], "--peers"),
        (["--n", "0"], "--n"),
        (["--n", "1"], "--n"),
        (["--nfe", "0"], "--nfe"),
        (["--problems", "learned:/no/such/dir"], "--problems"),
    ],
)
def test_cli_bench_bad_input_is_one_line_exit_2(tmp_path, capsys, args, flag):
    assert main(["bench", "--quick", "--no-progress", "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"scoresde bench: error: {flag}:") and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_a_damaged_result_file_is_refused_before_any_run(tmp_path, runs):
    (tmp_path / "bench_t.json").write_text("{not json")
    with pytest.raises(ValueError, match="^--out:.*not a bench result file"):
        bench.run_bench(_cfg(tmp_path), progress=False)
    assert runs == [] and (tmp_path / "bench_t.json").read_text() == "{not json"


def test_missing_peers_are_named_in_the_report_and_the_cli(tmp_path, monkeypatch, capsys):
    from scoresde import peers

    monkeypatch.setattr(
        peers, "unavailable", lambda: {"k-diffusion": "not installed (ImportError: no k_diffusion)"}, raising=False
    )
    args = ["bench", "--problems", "ring", "--methods", "ddim", "--peers", "", "--nfe", "5", "--n", "200"]
    assert main([*args, "--no-progress", "--out", str(tmp_path)]) == 0
    assert "peer library k-diffusion not installed (ImportError: no k_diffusion)" in capsys.readouterr().out
    assert "k-diffusion (not installed (ImportError: no k_diffusion))" in (tmp_path / "bench_full.md").read_text()


def test_peers_on_another_sde_are_refused_before_any_run(tmp_path, runs, monkeypatch):
    from scoresde import peers
    from scoresde.sde import VPSDE

    if "diffusers-ddim" not in peers.available_peers():
        pytest.skip("diffusers is not installed")
    cosine = bench.ExactProblem("ring", sde=VPSDE(schedule="cosine"))
    monkeypatch.setattr(bench.runner, "make_problem", lambda name, sde=None: cosine)
    with pytest.raises(ValueError, match="^--peers: diffusers-ddim runs on the linear VP SDE only"):
        bench.run_bench(_cfg(tmp_path, peers=("diffusers-ddim",)), progress=False)
    assert runs == [] and not list(tmp_path.iterdir())


def test_rows_of_two_sample_sizes_get_a_table_each(tmp_path):
    bench.run_bench(_cfg(tmp_path, n=300), progress=False)
    bench.run_bench(_cfg(tmp_path, n=200), progress=False)
    md = (tmp_path / "bench_t.md").read_text()
    assert "### ring [n = 300] (d = 2, n = 300)" in md and "### ring [n = 200] (d = 2, n = 200)" in md
    assert sorted(r["n"] for r in _rows(tmp_path)) == [200, 300]
