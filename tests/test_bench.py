"""The benchmark runner: a smoke run, resume after interruption, the summary, and the model timer."""

import json
import math

import pytest
import torch

from scoresde import bench
from scoresde.sde import FlowSDE


def _cfg(tmp_path, **kw):
    base = dict(
        problems=("ring",), methods=("ddim", "ode-dopri5"), peers=(), budgets=(5, 10), tolerances=(1e-2,), n=300
    )
    return bench.BenchConfig(**{**base, "floor_seeds": 3, "out": str(tmp_path), "tag": "t", **kw})


def test_smoke_run_writes_every_file(tmp_path):
    # the largest budget (100) lets dopri5 finish at tol 1e-2 (an adaptive run is stopped there)
    rows = bench.run_bench(_cfg(tmp_path, budgets=(5, 10, 100)), progress=False)
    assert [(r["method"], r["run"]) for r in rows] == [
        ("ddim", "budget=5"),
        ("ddim", "budget=10"),
        ("ddim", "budget=100"),
        ("ode-dopri5", "tol=0.01"),
    ]
    for r in rows:
        assert r["status"] == "ok" and r["nfe"] > 0 and r["mode_swd"] > 0 and r["mode_swd_floor"] > 0
        assert 0 < r["model_s"] <= r["wall_s"]
    assert rows[0]["nfe"] == 5 and rows[1]["nfe"] == 10
    for ext in ("csv", "json", "md", "png"):
        assert (tmp_path / f"bench_t.{ext}").stat().st_size > 0
    data = json.loads((tmp_path / "bench_t.json").read_text())
    assert data["config"]["n"] == 300 and len(data["rows"]) == 4
    assert "| ring | 10 | ddim (10)" in (tmp_path / "bench_t.md").read_text()
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_resume_skips_finished_runs_and_redoes_a_torn_line(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, budgets=(5, 100))  # dopri5 at tol 1e-2 ends within 100 NFE
    first = bench.run_bench(cfg, progress=False)
    partial = tmp_path / "bench_t.partial.jsonl"
    lines = partial.read_text().splitlines()
    partial.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])  # crash while writing the third run
    calls = []
    real = bench.runner._run_one
    monkeypatch.setattr(bench.runner, "_run_one", lambda item, *a: calls.append(item["run"]) or real(item, *a))
    second = bench.run_bench(cfg, progress=False)
    assert calls == ["tol=0.01"]
    assert [r["mode_swd"] for r in second] == pytest.approx([r["mode_swd"] for r in first])
    # Another sample size is another experiment: nothing is reused.
    calls.clear()
    bench.run_bench(_cfg(tmp_path, n=200), progress=False)
    assert len(calls) == 3


def test_diverging_method_is_recorded_not_raised(tmp_path, monkeypatch):
    class NaNProblem(bench.ExactProblem):
        def score(self, sde, timer=None):
            s = super().score(sde, timer)
            inner = s.model
            s.model = lambda x, t: inner(x, t) * math.nan
            return s

    monkeypatch.setattr(bench.problems, "ExactProblem", NaNProblem)
    rows = bench.run_bench(_cfg(tmp_path, methods=("ddim",), budgets=(5,)), progress=False)
    assert rows[0]["status"].startswith("diverged") and "step 1 of 5" in rows[0]["status"]
    assert math.isnan(rows[0]["mode_swd"])


def test_summary_picks_the_best_run_within_each_budget():
    def row(method, source, nfe, d):
        return dict(problem="p", method=method, source=source, nfe=nfe, mode_swd=d, mode_swd_floor=0.1)

    rows = [row("a", "ours", 10, 0.5), row("b", "ours", 20, 0.2), row("x", "peer", 10, 1.0), row("y", "peer", 20, 0.1)]
    text = bench.summary_table(rows, (10, 20))
    a, b, x, y = (
        "a (10) | 0.5000 / 5.00x",
        "b (20) | 0.2000 / 2.00x",
        "x (10) | 1.0000 / 10.00x",
        "y (20) | 0.1000 / 1.00x",
    )
    assert f"| p | 10 | {a} | {a} | {x} | 0.50 | 0.50 | - | - |" in text
    assert f"| p | 20 | {b} | {b} | {y} | 2.00 | 2.00 | - | - |" in text


def test_summary_counts_fits_at_their_amortised_nfe():
    # A fitted run of 5 model calls per sample whose fit cost 8,000 sample-evaluations over n = 4,000 samples
    # costs 7 per sample: it is not a 5-NFE result, it competes at budget 10, and the no-fit column names the
    # best method that needs no fit. The last columns show the fitted run at its own per-sample NFE.
    def row(method, source, nfe, d, fit_evals=0):
        amortised = nfe + fit_evals / 4000
        return dict(
            problem="p", method=method, source=source, nfe=nfe, mode_swd=d, mode_swd_floor=0.1, n=4000,
            fit_evals=fit_evals, nfe_amortised=amortised,
        )  # fmt: skip

    rows = [
        row("fitted", "ours", 5, 0.3, 8000),
        row("ddim", "ours", 5, 0.9),
        row("unipc", "ours", 10, 0.4),
        row("unipc@optimized", "ours", 10, 0.2, 16640),
        row("x", "peer", 5, 1.0),
        row("x", "peer", 10, 0.6),
    ]
    text = bench.summary_table(rows, (5, 10, 20))
    fitted = "fitted (5 + 2.00 fit = 7.00) | 0.3000 / 3.00x"
    assert (
        f"| p | 5 | ddim (5) | 0.9000 / 9.00x | ddim (5) | 0.9000 / 9.00x | x (5) | 1.0000 / 10.00x | 0.90 | 0.90 "
        f"| {fitted} |" in text
    )
    assert (
        f"| p | 10 | {fitted} | unipc (10) | 0.4000 / 4.00x | x (10) | 0.6000 / 6.00x | 0.50 | 0.67 | - | - |" in text
    )
    opt = "unipc@optimized (10 + 4.16 fit = 14.16) | 0.2000 / 2.00x"
    assert f"| p | 20 | {opt} | unipc (10) |" in text


def test_family_table_gives_median_and_worst_over_members():
    def row(seed, method, source, d):
        return dict(
            problem=f"gmm-family:d=4,k=2,seed={seed}", method=method, source=source, nfe=5, mode_swd=d,
            mode_swd_floor=0.1,
        )  # fmt: skip

    rows = [row(s, "a", "ours", d) for s, d in zip((1, 2, 3), (0.2, 0.3, 0.7), strict=True)]
    rows += [row(s, "b", "ours", 0.25) for s in (1, 2)]  # missing on member 3: not ranked
    rows += [row(s, "x", "peer", d) for s, d in zip((1, 2, 3), (0.5, 0.4, 0.9), strict=True)]
    text = bench.family_table(rows, (5,))
    assert "gmm-family:d=4,k=2: 3 members" in text
    assert "| 5 | a | 3.00 / 7.00 | a | 3.00 / 7.00 | x | 5.00 / 9.00 | - | - |" in text
    assert bench.family_table(rows[:1], (5,)) == ""  # one member is no family
    # a fitted run at 5 per sample whose fit adds 2 per sample: not in the budget-5 ranking, shown beside it
    pairs = zip((1, 2, 3), (0.1, 0.2, 0.4), strict=True)
    fitted = [{**row(s, "fitted", "ours", d), "nfe_amortised": 7.0} for s, d in pairs]
    text = bench.family_table(rows + fitted, (5,))
    assert "| 5 | a | 3.00 / 7.00 | a | 3.00 / 7.00 | x | 5.00 / 9.00 | fitted (5 + 2.00 fit) | 2.00 / 4.00 |" in text


def test_problem_lists_keep_family_names_and_expand_seed_ranges():
    from scoresde.bench.problems import expand_problems, split_problems

    names = split_problems("ring,gmm-family:d=8,k=3,seed=4-6,gmm16")
    assert names == ("ring", "gmm-family:d=8,k=3,seed=4-6", "gmm16")
    assert expand_problems(names) == (
        "ring",
        "gmm-family:d=8,k=3,seed=4",
        "gmm-family:d=8,k=3,seed=5",
        "gmm-family:d=8,k=3,seed=6",
        "gmm16",
    )
    with pytest.raises(ValueError, match="seed range"):
        expand_problems(("gmm-family:d=8,seed=6-4",))
    assert bench.BenchConfig(problems=names).problems[1] == "gmm-family:d=8,k=3,seed=4"


def test_fitted_methods_are_fitted_once_and_counted(tmp_path, monkeypatch):
    # `fitted` and two `@optimized` methods at two budgets: one fit per budget (and grid order), made once;
    # every row carries its fit's evaluations and the amortised NFE; the fit budget is 2 calls per sample of n.
    from scoresde.bench import runner

    made = []
    real_fit_solver, real_fit_grid = runner.fit_solver, runner.fit_grid
    monkeypatch.setattr(runner, "fit_solver", lambda *a, **k: made.append("solver") or real_fit_solver(*a, **k))
    monkeypatch.setattr(runner, "fit_grid", lambda *a, **k: made.append("grid") or real_fit_grid(*a, **k))
    cfg = _cfg(tmp_path, problems=("ring",), methods=("fitted", "unipc@optimized", "dpm++2m@optimized"), n=3000)
    rows = bench.run_bench(cfg, progress=False)
    # one fitted solver per budget; one grid per budget and solver order (unipc: 3, dpm++2m: 2)
    assert made.count("solver") == 2 and made.count("grid") == 4
    for r in rows:
        assert r["status"] == "ok" and r["fit_evals"] > 0
        assert r["nfe_amortised"] == pytest.approx(r["nfe"] + r["fit_evals"] / 3000, abs=0.005)
    fitted = [r for r in rows if r["method"] == "fitted"]
    assert [r["nfe"] for r in fitted] == [5, 10] and all(r["fit_evals"] <= 2 * 3000 for r in fitted)
    # a rerun resumes every row and fits nothing
    made.clear()
    bench.run_bench(cfg, progress=False)
    assert made == []
    # a fit that cannot be made is a failed row, not a crash (a budget too small for it is refused before any run,
    # and the default never is: see tests/test_bench_honest.py)
    monkeypatch.setattr(runner, "fit_solver", lambda *a, **k: (_ for _ in ()).throw(ValueError("no fit")))
    rows = bench.run_bench(_cfg(tmp_path, methods=("fitted",), n=100, tag="small"), progress=False)
    assert all(r["status"] == "fit failed: no fit" and math.isnan(r["mode_swd"]) for r in rows)


def test_timed_model_accumulates_model_time():
    timer = bench.TimedModel(lambda x, t: x * 2)
    x = torch.ones(3, 2)
    assert torch.equal(timer(x, torch.zeros(3)), 2 * x) and timer.seconds > 0


def test_learned_problem_through_the_runner(tmp_path, moons_ckpt):
    # A (barely) trained 2-D checkpoint goes through the same runner: TV / SWD / MMD against fresh data noised to
    # t_end, with their two-sample floors, and the summary picks the problem's primary figure.
    ckpt = moons_ckpt
    cfg = bench.BenchConfig(
        problems=(f"learned:{ckpt}",),
        methods=("ddim",),
        peers=(),
        budgets=(3,),
        n=300,
        floor_seeds=2,
        out=str(tmp_path / "res"),
        tag="t",
    )
    rows = bench.run_bench(cfg, progress=False)
    (row,) = rows
    assert row["problem"] == f"learned:{ckpt.name}" and row["primary"] == "tv" and row["nfe"] == 3
    assert row["tv"] > row["tv_floor"] > 0 and row["swd"] > row["swd_floor"] > 0 and row["mmd_floor_std"] >= 0
    table = (tmp_path / "res" / "bench_t.md").read_text()
    assert f"learned:{ckpt.name}" in table and "tv floor" in table and "swd floor" in table


def test_a_network_trained_on_a_mixture_is_scored_against_the_exact_mixture(tmp_path, mixture_ckpt):
    """``mixture16``'s network: its samples are scored as the exact problem it was drawn from scores its own (the
    mode-conditional SWD against the exact law at t_end, the exact floors), so the network's error is measured apart
    from a reference sample's."""
    learned = bench.make_problem(f"learned:{mixture_ckpt}")
    exact = bench.make_problem("gmm-family:d=16,k=4,seed=100")
    assert learned.primary == exact.primary == "mode_swd" and learned.metrics == exact.metrics
    x = exact.mixture.sample(500, generator=torch.Generator().manual_seed(1))
    t = learned.sde.t_min
    assert learned.quality(x, learned.sde, t, 3) == exact.quality(x, learned.sde, t, 3)
    assert learned.floors(learned.sde, t, 500, 2) == exact.floors(learned.sde, t, 500, 2)
    cfg = bench.BenchConfig(problems=(f"learned:{mixture_ckpt}",), methods=("unipc",), peers=(), budgets=(3,),
                            n=300, floor_seeds=2, out=str(tmp_path), tag="m")  # fmt: skip
    (row,) = bench.run_bench(cfg, progress=False)
    assert row["primary"] == "mode_swd" and row["status"] == "ok" and row["mode_swd_floor"] > 0
    assert row["swd"] > row["swd_floor"] > 0  # three training steps: some modes get no sample (mode_swd is nan)


def test_the_learned_table_gives_mmd_in_floor_standard_deviations_not_a_ratio_to_a_negative_floor():
    """Issue 32: the unbiased MMD^2 floor is about 0 and often negative, so "mmd / floor" was nan in every row."""
    from scoresde.bench.report import _learned_table

    row = dict(problem="learned:moons", dim=2, n=1000, method="ddim", run="ode", steps=5, nfe=5, wall_s=1.0,
               model_s=0.5, status="ok", tv=0.2, tv_floor=0.1, tv_floor_std=0.01, swd=0.03, swd_floor=0.01,
               swd_floor_std=0.002, mmd=4e-4, mmd_floor=-1e-4, mmd_floor_std=2.5e-4)  # fmt: skip
    lines = _learned_table([row])
    assert "mmd | (- floor) / floor std" in lines[1]
    cells = [c.strip() for c in lines[-1].split("|")]
    assert cells[5:11] == ["0.2", "2.00", "0.03", "3.00", "0.0004", "2.00"]


def test_grid_variants_are_planned_and_run(tmp_path):
    cfg = bench.BenchConfig(problems=("ring",), methods=("unipc@optimized",), peers=(), budgets=(4,), n=200)
    (item,) = bench.plan(cfg)
    assert item["method"] == "unipc@optimized" and item["kwargs"] == {"steps": 4, "grid": "optimized"}
    default = bench.plan(bench.BenchConfig(problems=("ring",), peers=(), budgets=(4,)))
    assert {"unipc@optimized", "dpm++2m@optimized", "ddim"} <= {r["method"] for r in default}
    cfg = bench.BenchConfig(**{**cfg.__dict__, "out": str(tmp_path), "tag": "v", "floor_seeds": 2})
    (row,) = bench.run_bench(cfg, progress=False)
    assert row["method"] == "unipc@optimized" and row["nfe"] == 4 and row["status"] == "ok"


def test_problems_share_one_interface(moons_ckpt):
    # The runner asks every problem the same things: its SDE, the keys its quality returns (all of them nan
    # when a run fails), its primary figure and that figure's floor.
    exact, learned = bench.make_problem("ring"), bench.make_problem(f"learned:{moons_ckpt}")
    for prob in (exact, learned):
        x = torch.randn(prob.shape(200), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        q = prob.quality(x, prob.sde, prob.sde.t_min, seed=1)
        assert tuple(q) == prob.metrics and prob.primary in prob.metrics
        floors = prob.floors(prob.sde, prob.sde.t_min, 200, 2)
        assert floors[f"{prob.primary}_floor"] > 0 and floors[f"{prob.primary}_floor_std"] >= 0
        score = prob.score(prob.sde, bench.TimedModel(None))
        assert score(x.to(torch.get_default_dtype()), torch.full((200,), 0.5)).shape == x.shape


def test_diverging_learned_run_is_recorded_with_every_metric(tmp_path, monkeypatch, moons_ckpt):
    # A failed run of a learned 2-D model has nan for tv, swd and mmd alike, so the table beside a good run renders.
    ckpt = moons_ckpt
    real = bench.problems.LearnedProblem.score

    def score(self, sde, timer=None):
        s = real(self, sde, timer)
        inner = s.model
        s.model = lambda x, t: inner(x, t) * (math.nan if self.poison else 1.0)
        return s

    monkeypatch.setattr(bench.problems.LearnedProblem, "score", score)
    monkeypatch.setattr(bench.problems.LearnedProblem, "poison", False, raising=False)
    cfg = bench.BenchConfig(
        problems=(f"learned:{ckpt}",), methods=("ddim", "ode-euler"), peers=(), budgets=(3,), n=300, floor_seeds=2,
        out=str(tmp_path / "res"), tag="t",
    )  # fmt: skip
    real_run = bench.runner._run_one

    def run_one(item, problem, *rest):
        problem.poison = item["method"] == "ode-euler"
        return real_run(item, problem, *rest)

    monkeypatch.setattr(bench.runner, "_run_one", run_one)
    good, bad = bench.run_bench(cfg, progress=False)
    assert good["status"] == "ok" and bad["status"].startswith("diverged")
    assert math.isnan(bad["tv"]) and math.isnan(bad["swd"]) and math.isnan(bad["mmd"])
    assert (
        "| ode-euler | budget=3 | 3 | 1 | nan | nan | nan | nan | nan | nan |"
        in (tmp_path / "res" / "bench_t.md").read_text()
    )


def test_torchrun_bench_equals_one_process_and_resumes_on_any_count(tmp_path, monkeypatch):
    """``torchrun --nproc_per_node 2 -m scoresde bench``: the ranks share the runs out, rank 0 gathers, writes
    and speaks; every row equals a one-process run's (timings aside), and a one-process rerun into the same
    folder resumes all of them from the ranks' partial files."""
    import os
    import socket
    import subprocess
    import sys

    from scoresde import peers
    from scoresde.cli import main

    peer = [p for p in ("diffusers-ddim",) if p in peers.available_peers()]
    args = ["bench", "--problems", "ring", "--methods", "ddim,unipc@optimized,dpm++2m", "--peers", ",".join(peer)]
    args += ["--nfe", "5,10", "--num-samples", "600", "--no-progress"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks (OMP_NUM_THREADS=1): the metrics' reductions round alike
    try:
        assert main([*args, "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    done = subprocess.run(
        [*cmd, "-m", "scoresde", *args, "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("## Best at each NFE budget") == 1 and "on 2 processes" in done.stdout
    assert sorted(p.name for p in (tmp_path / "two").glob("*.partial*")) == [
        "bench_full.partial.rank0.jsonl",
        "bench_full.partial.rank1.jsonl",
    ]
    assert all(p.stat().st_size > 0 for p in (tmp_path / "two").glob("*.partial*"))  # both ranks ran something

    def rows(folder):
        data = json.loads((tmp_path / folder / "bench_full.json").read_text())["rows"]
        return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in data]

    one, two = rows("one"), rows("two")
    assert len(one) == 6 + 2 * len(peer) and one == two
    calls = []
    monkeypatch.setattr(bench.runner, "_run_one", lambda *a: calls.append(a) or {})
    assert main([*args, "--out", str(tmp_path / "two")]) == 0 and calls == []


def test_dtype_and_device_of_our_methods(tmp_path, moons_ckpt):
    """``--dtype float64`` / ``bfloat16`` reach our methods and their fits (other rows: the dtype is in the key);
    the peers are refused off the CPU; a CPU bench never initialises CUDA."""
    ckpt = moons_ckpt
    methods = ("ddim", "unipc@optimized", "fitted")  # the fitted solver probes the timed network in the run's dtype
    base = dict(problems=(f"learned:{ckpt}",), methods=methods, peers=(), budgets=(3,), n=1200)
    base |= dict(floor_seeds=2, out=str(tmp_path / "res"), tag="t")
    rows = {d: bench.run_bench(bench.BenchConfig(**base, dtype=d), progress=False) for d in ("float32", "bfloat16")}
    rows["float64"] = bench.run_bench(bench.BenchConfig(**base, dtype="float64"), progress=False)
    assert all(r["status"] == "ok" for rs in rows.values() for r in rs)
    keys = {d: [r["key"] for r in rs] for d, rs in rows.items()}
    assert len({k for ks in keys.values() for k in ks}) == 9  # each dtype its own rows
    swd = {d: rs[0]["swd"] for d, rs in rows.items()}
    assert swd["float32"] != swd["bfloat16"]  # the network really ran in bfloat16
    assert swd["float64"] == pytest.approx(swd["float32"], rel=1e-4)  # float64: the same samples up to rounding
    assert not torch.cuda.is_initialized()
    with pytest.raises(ValueError, match="--dtype"):
        bench.validate(bench.BenchConfig(**base, dtype="float16"))
    with pytest.raises(ValueError, match="--peers.*CPU"):
        bench.validate(bench.BenchConfig(**{**base, "peers": None}, device="cuda"))


def test_quick_bench_runs_on_one_thread_unless_told(monkeypatch, tmp_path):
    from scoresde import cli

    seen = []
    monkeypatch.setattr(bench, "run_bench", lambda cfg, progress=True, **kw: seen.append(torch.get_num_threads()) or [])
    threads = torch.get_num_threads()
    try:
        assert cli.main(["bench", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
        assert cli.main(["bench", "--quick", "--threads", "2", "--out", str(tmp_path), "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert seen == [1, 2]


def test_flow_path_runs_ours_and_the_flow_peers(tmp_path, moons_ckpt):
    """``--sde flow``: the exact problem on FlowSDE(), our methods from its T, the flow peers from pure noise; the
    rows differ from the VP bench's (the problem's identity holds its path) and peers of the other path are refused."""
    cfg = _cfg(tmp_path, sde="flow", methods=("ddim",), peers=("flow-torchdiffeq-euler",), tolerances=())
    rows = bench.run_bench(cfg, progress=False)
    assert [(r["method"], r["nfe"], r["status"]) for r in rows] == [
        ("ddim", 5, "ok"),
        ("ddim", 10, "ok"),
        ("flow-torchdiffeq-euler", 5, "ok"),
        ("flow-torchdiffeq-euler", 10, "ok"),
    ]
    assert rows[0]["t_end"] == 1e-3 and rows[2]["t_end"] == 0.0
    assert all(r["mode_swd"] < 10 * r["mode_swd_floor"] for r in rows)
    vp = bench.run_bench(_cfg(tmp_path / "vp", methods=("ddim",), tolerances=()), progress=False)
    assert vp[0]["mode_swd"] != rows[0]["mode_swd"]
    with pytest.raises(ValueError, match="--peers: 'flow-torchdiffeq-euler' samples the flow path"):
        bench.validate(_cfg(tmp_path, peers=("flow-torchdiffeq-euler",)))
    with pytest.raises(ValueError, match="--sde: unknown path"):
        bench.validate(_cfg(tmp_path, sde="ve"))
    with pytest.raises(ValueError, match="--sde"):
        bench.make_problem(f"learned:{moons_ckpt}", FlowSDE())
