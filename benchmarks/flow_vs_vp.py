"""Does the straighter path buy fewer steps? A recipe trained both ways at the same budget.

``python benchmarks/flow_vs_vp.py`` trains a recipe on several paths at the same budget (same steps, batch, network
and learning rate, so the same time): on the VP SDE with v prediction and EDM's lognormal noise levels (the
recipe, ``vp``), on the rectified-flow path with the flow-matching loss (velocity ``eps - x0``) and SD3's
logit-normal times (``flow``), and, on the checkerboard, on the flow path with the flow-matching loss at the VP
run's lognormal levels (``flow-lognormal``: the same levels ``sigma / alpha``, mapped to ``t = r / (1 + r)``, so
the two flow runs differ only in which noise levels the loss visits). Each model samples at 10, 20 and 50 NFE with
every solver and grid of its data set's candidates (ending with the denoising step), and the table gives each
path's best at each budget and the solver that reached it.

- ``--data checkerboard`` (default): ``benchmarks/learned.py``'s 2-D recipe (6,000 steps of batch 1,024, the MLP on
  256 Fourier features), 100,000 points scored by the histogram total variation against fresh data over its
  two-sample floor.
- ``--data digits``: ``recipe("digits")`` (the width-64 U-Net on 20 pixel clusters, 8,000 steps of batch 128),
  sampled for its data's law (each sample's cluster drawn from the training frequencies), 1,437
  samples (the train split's size) per seed, seeds 0 and 1, scored by FD on the digit classifier's features against
  the test split over its floor (train against test, :class:`scoresde.bench.LearnedProblem`).

bfloat16 where the CPU has the kernels. Runs are trained into ``<out>/runs/<name>`` and resumed from their
checkpoints; every figure is cached in ``<out>/flow_vs_vp.<name>.json`` under a key holding the checkpoint's hash,
so a rerun reuses only what the same model produced, and ``--only PATH`` in separate processes runs the paths side
by side (the table is written once all are there). ``--quick`` trains a few steps and samples fewer points (a smoke
run, not a result).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

from _toy import tv_floor  # benchmarks/_toy.py, beside this script

import scoresde as sd
from scoresde import metrics
from scoresde.bench import LearnedProblem
from scoresde.precision import fast_bfloat16
from scoresde.train import TrainConfig, draw_labels, load_score, make_score, recipe, train
from scoresde.train.pretrained import label_counts
from scoresde.util import atomic_write_text

RECIPE = dict(
    data="checkerboard",
    n_train=100_000,
    model={"arch": "mlp", "fourier_features": 256, "fourier_scale": 0.5},
    steps=6000,
    batch_size=1024,
    lr=2e-3,
    warmup=200,
)
PATHS = {
    "vp": dict(prediction="v", t_sampler="lognormal"),  # benchmarks/learned.py's recipe
    "flow": dict(sde={"name": "flow"}, prediction="flow", t_sampler="logit-normal"),
    "flow-lognormal": dict(sde={"name": "flow"}, prediction="flow", t_sampler="lognormal"),
}
TITLES = {
    "vp": "VP (v, lognormal)",
    "flow": "flow (velocity, logit-normal)",
    "flow-lognormal": "flow (velocity, lognormal)",
}
# Each path's best no-fit choices on the exact mixtures (log-SNR multistep on VP; the family table of
# docs/guides/solvers.md on the flow path), and the cross-overs.
CANDIDATES = ["dpm++2m@logsnr", "unipc@logsnr", "unipc@uniform", "unipc@quadratic", "ode-midpoint@uniform"]
BUDGETS = (10, 20, 50)
SETS = {
    # every candidate is near the floor at 20: two at 50 (5 minutes each)
    "checkerboard": dict(
        recipe=RECIPE,
        n=100_000,
        quick_n=10_000,
        seeds=(0,),
        paths=tuple(PATHS),
        candidates=CANDIDATES,
        at_50=["dpm++2m@logsnr", "unipc@uniform"],
    ),
    # a network's error: the stochastic sampler joins at 50 (the MNIST table of docs/guides/benchmark.md)
    "digits": dict(
        recipe={k: v for k, v in recipe("digits").settings.items() if k != "dtype"},
        n=1437,
        quick_n=200,
        seeds=(0, 1),
        paths=("vp", "flow"),  # flow-lognormal is the checkerboard's question: not trained here (about 25 minutes)
        candidates=["dpm++2m@logsnr", "unipc@uniform", "unipc@quadratic", "ode-midpoint@uniform"],
        at_50=["dpm++2m@logsnr", "ddpm@logsnr"],
    ),
}
QUICK_STEPS = {"checkerboard": 300, "digits": 40}


def _candidates(data: str, budget: int) -> list[str]:
    return SETS[data]["at_50" if budget >= 50 else "candidates"]


def _run_name(data: str, path: str) -> str:
    return path if data == "checkerboard" else f"{data}-{path}"  # the checkerboard's runs kept their first names


def _train(data: str, path: str, out: Path, quick: bool) -> dict:
    dtype = "bfloat16" if fast_bfloat16("cpu") else "float32"
    saved = out / "runs" / _run_name(data, path) / "config.json"
    if saved.is_file():
        dtype = TrainConfig.from_saved(saved).dtype  # a run on disk resumes in its own dtype
    base = SETS[data]["recipe"]
    kw = {**base, **PATHS[path], "dtype": dtype, "steps": QUICK_STEPS[data] if quick else base["steps"]}
    cfg = TrainConfig(**kw, ckpt_every=500, log_every=50, out=str(out / "runs" / _run_name(data, path)))
    res = train(cfg, resume=(Path(cfg.out) / "ckpt.json").exists(), progress=sys.stderr.isatty())
    return {"steps": res.step, "dtype": dtype, "seconds_this_run": round(res.seconds, 1), "final_loss": res.losses[-1]}


def _hash(run: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(run.glob("ckpt*")):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


class _Judge:
    """A data set's score of samples and its floor: histogram TV on the checkerboard, FD on the digit judge (clean
    images against the test split: every run ends with the denoising step, so the FD depends on the data alone and
    one problem, read once from the first run it meets, scores every path and gives the floor)."""

    def __init__(self, data: str, n: int, out: Path):
        self.data, self.n = data, n
        if data == "checkerboard":
            self.ref = sd.data.toy_2d("checkerboard", n, seed=40_001)
            self.metric, self._floor = "histogram TV", tv_floor("checkerboard", n, 5)[0]
        else:
            self.metric, self._prob = "FD on the digit judge", None
            self._first_run = out / "runs" / _run_name(data, SETS[data]["paths"][0])

    def _problem(self, run: Path | None = None) -> LearnedProblem:
        if self._prob is None:
            self._prob = LearnedProblem(str(run or self._first_run))
        return self._prob

    def score(self, x, run: Path) -> float:
        if self.data == "checkerboard":
            return metrics.histogram_tv(x, self.ref)
        prob = self._problem(run)
        return prob.quality(x, prob.sde, 0.0, seed=7)["fd"]

    @property
    def floor(self) -> float:
        if "_floor" not in self.__dict__:
            prob = self._problem()
            self._floor = prob.floors(prob.sde, 0.0, self.n, 3)["fd_floor"]
        return self._floor


def _rows(data: str, path: str, out: Path, judge: _Judge, quick: bool) -> dict:
    """Train ``path`` on ``data`` (or resume) and score every candidate at every budget, cached by checkpoint."""
    cache_path = out / f"flow_vs_vp.{_run_name(data, path)}.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    info = _train(data, path, out, quick)
    run = out / "runs" / _run_name(data, path)
    score, sde, cfg, net = load_score(run)
    counts = label_counts(run) if cfg.clusters else None
    key, spec = _hash(run), SETS[data]
    shape = (judge.n, 2) if data == "checkerboard" else (judge.n, 1, 8, 8)
    metric = "tv" if data == "checkerboard" else "fd"
    # the training time is the process's that finished the run (a rerun resumes a finished run in 0 s)
    table = {"train": cache.setdefault(f"train:{key}", info), "rows": {}}
    for budget in BUDGETS:
        for cand in _candidates(data, budget):
            method, _, grid = cand.partition("@")
            steps = (budget - 1) // sd.method_info(method)["nfe_per_step"]  # one call for the denoising step
            per_seed = []
            for seed in spec["seeds"]:
                # the checkerboard's keys predate the seed list (one seed): kept so that its rows stay reusable; a
                # cluster-conditional model (the digits recipe) samples its data's law: each sample's cluster drawn
                # from the training frequencies with the sampling seed, as benchmarks/learned.py does
                ck = f"{key}:{cand}:{budget}:{judge.n}" + ("" if data == "checkerboard" else f":{seed}:prior")
                if ck not in cache:
                    t0 = time.perf_counter()
                    if counts is not None:
                        score = make_score(net, sde, cfg.prediction, y=draw_labels(counts, judge.n, seed))
                    s = sd.sample(score, sde, shape, method=method, steps=steps, grid=grid, seed=seed, denoise=True)
                    val = judge.score(s.x, run)
                    cache[ck] = {metric: val, "nfe": s.nfe, "s": time.perf_counter() - t0}
                    atomic_write_text(cache_path, json.dumps(cache, indent=1))
                per_seed.append(cache[ck])
            value = sum(r[metric] for r in per_seed) / len(per_seed)
            table["rows"][f"{cand}:{budget}"] = {"value": value, "nfe": per_seed[0]["nfe"]}
    cache["table"] = table
    atomic_write_text(cache_path, json.dumps(cache, indent=1))
    return table


def _report(data: str, table: dict, judge: _Judge) -> str:
    spec, floor = SETS[data], judge.floor
    paths = spec["paths"]
    head = " | ".join(f"{TITLES[p]}: best | / floor" for p in paths)
    lines = [
        f"{data}, {judge.metric} over its floor ({floor:.4g}, n = {judge.n}, seeds {list(spec['seeds'])}), "
        "best solver per path and budget",
        "",
        f"| NFE | {head} |",
        "|---:|" + "---|---:|" * len(paths),
    ]
    for budget in BUDGETS:
        cells = []
        for name in paths:
            rows = {c: table[name]["rows"][f"{c}:{budget}"] for c in _candidates(data, budget)}
            best = min(rows, key=lambda c: rows[c]["value"])
            cells += [f"{best} ({rows[best]['nfe']})", f"{rows[best]['value'] / floor:.2f}"]
        lines.append(f"| {budget} | " + " | ".join(cells) + " |")
    every = list(dict.fromkeys(spec["candidates"] + spec["at_50"]))
    lines += ["", "every candidate (value / floor):", ""]
    lines += ["| path | " + " | ".join(every) + " |", "|---|" + "---:|" * len(every)]
    for name in paths:
        for budget in BUDGETS:
            cells = [table[name]["rows"].get(f"{c}:{budget}") for c in every]
            vals = [f"{r['value'] / floor:.2f}" if r else "-" for r in cells]
            lines.append(f"| {name}, {budget} NFE | " + " | ".join(vals) + " |")
    for name in paths:
        lines.append(f"\n{name}: {json.dumps(table[name]['train'])}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=tuple(SETS), default="checkerboard")
    p.add_argument("--out", default="results/flow_vs_vp")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", choices=tuple(PATHS), help="train and sample one path (the others' cached rows are read)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = SETS[args.data]
    judge = _Judge(args.data, spec["quick_n"] if args.quick else spec["n"], out)
    table = {}
    paths = spec["paths"]
    for name in paths:
        if args.only not in (None, name):
            cache_path = out / f"flow_vs_vp.{_run_name(args.data, name)}.json"
            cached = json.loads(cache_path.read_text()) if cache_path.exists() else {}
            if "table" in cached and "value" in next(iter(cached["table"]["rows"].values())):
                table[name] = cached["table"]
            continue
        table[name] = _rows(args.data, name, out, judge, args.quick)
    if set(table) != set(paths):
        print(f"rows of {', '.join(table)} done; the table needs every path (run the others with --only)")
        return 0
    text = _report(args.data, table, judge)
    atomic_write_text(out / f"flow_vs_vp{'' if args.data == 'checkerboard' else '.' + args.data}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
