"""``scoresde bench``: NFE vs sample quality of every method on the built-in exact problems (:mod:`scoresde.bench`)."""

from __future__ import annotations

import sys

from .args import csv, device, positive, problem_list
from .plugins import add_plugin_argument, load_plugins

NAME = "bench"
HELP = "NFE vs sample quality of every method on the built-in exact problems"


EPILOG = (
    "Adaptive methods (ode-dopri5, sde-adaptive, ...) run once per --tol and are placed at the NFE they counted; a "
    "run still short of its end after the largest --nfe budget is stopped there (status 'over budget'), since no "
    "budget could hold it. A run without samples is named on stderr as it happens and listed with its reason "
    "under the summary. Exit status: 0 when every run was made (a divergence or an adaptive run over budget is "
    "the method's result), 1 when a run could not be made (e.g. a fit failed; a closing stderr line counts "
    "them), 2 for a bad argument (one line on stderr, before anything is printed or written)."
)


def add_arguments(b) -> None:
    b.epilog = EPILOG
    b.add_argument(
        "--quick",
        action="store_true",
        help="the README's main job: the frontier, the classics and the peers' best on ring and gmm16, "
        "4000 samples, NFE 5 to 50 (under 3 minutes on 2 cores) (default: off, the full grid)",
    )
    b.add_argument(
        "--problems",
        type=problem_list,
        help="comma-separated: ring, gmm16, gmm64, gmm-family:d=D,k=K,seed=S (seed=A-B: one problem per seed), "
        "learned:DIR (default: ring,gmm16,gmm64; ring,gmm16 with --quick)",
    )
    b.add_argument(
        "--methods",
        type=csv(str),
        help="comma-separated method names, name@GRID for a grid, `fitted` (default: every method and the "
        "variants unipc@optimized, dpm++2m@optimized, ode-midpoint@quadratic, fitted; the quick grid's with --quick)",
    )
    b.add_argument(
        "--peers",
        type=csv(str),
        help="comma-separated peer names, '' for none (default: every installed one of --sde's path; their best "
        "with --quick)",
    )
    b.add_argument(
        "--nfe",
        type=csv(int),
        help="comma-separated NFE budgets >= 1 (default: 5,10,20,50,100,200; 5,10,20,50 with --quick)",
    )
    b.add_argument(
        "--tol",
        type=csv(float),
        help="comma-separated rtol = atol of adaptive methods, one run each, stopped after the largest --nfe "
        "budget (default: 1e-2,1e-3,1e-4; 1e-3 with --quick)",
    )
    b.add_argument(
        "--n",
        "--num-samples",
        dest="n",
        type=int,
        help="samples per run, >= 2; under torchrun spell it --num-samples (torchrun reads --n as an abbreviation "
        "of its own options) (default: 20000; 4000 with --quick)",
    )
    b.add_argument("--seed", type=int, help="seed >= 0 (default: 0)")
    b.add_argument(
        "--fit-budget",
        type=int,
        help="sample-evaluations per fit of the `fitted` method, teacher included; a budget too small for a "
        "planned fit is refused (default: 2 per sample of --n, at most 10000, raised to the least the fit "
        "needs where --n is small; the fit's calls per sample are counted in the amortised NFE)",
    )
    b.add_argument(
        "--threads",
        type=positive,
        help="torch threads (default: 1 with --quick, whose runs are small: on a loaded 2-core machine two "
        "threads made it 10x slower; otherwise torch's default)",
    )
    b.add_argument("--device", type=device, help="where our methods run; peers need the CPU (default: cpu)")
    b.add_argument(
        "--dtype",
        choices=("float32", "float64", "bfloat16"),
        help="our methods' state; bfloat16: float32 state, the network under bfloat16 autocast (default: float32)",
    )
    b.add_argument(
        "--sde",
        choices=("vp", "flow"),
        help="the path of the exact problems: vp (the linear VP SDE) or flow (the rectified-flow path, "
        "FlowSDE(), with the flow-matching peers) (default: vp)",
    )
    b.add_argument("--out", help="output folder; a rerun there merges into its tables (default: results)")
    b.add_argument(
        "--no-progress", action="store_true", help="no progress bar (default: a bar on stderr while the runs go)"
    )
    add_plugin_argument(b)


def run(args) -> int:
    import warnings

    import torch

    from .. import bench
    from ..bench.report import outcome, unavailable_peers
    from ..process_group import launched, world

    overrides = {
        "problems": args.problems,
        "methods": args.methods,
        "peers": args.peers,
        "budgets": args.nfe,
        "tolerances": args.tol,
        "n": args.n,
        "seed": args.seed,
        "out": args.out,
        "fit_budget": args.fit_budget,
        "device": args.device,
        "dtype": args.dtype,
        "sde": args.sde,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    threads = args.threads if args.threads is not None else (1 if args.quick else None)
    if threads is not None:  # the quick grid's problems are small: one thread, and no 2-thread contention
        torch.set_num_threads(threads)
    try:
        load_plugins(args.plugin)  # before the methods are checked: a plugin's solvers are methods like ours
        cfg = bench.BenchConfig.quick(**overrides) if args.quick else bench.BenchConfig(**overrides)
        with launched():  # under torchrun: the runs are shared out, rank 0 gathers, writes and speaks
            rank, size = world()

            def start():  # every argument is checked: now the header, then the runs
                if rank != 0:
                    return
                on = f" on {size} processes" if size > 1 else ""
                print(
                    f"scoresde bench ({cfg.tag}): problems {', '.join(cfg.problems)}, n = {cfg.n}, "
                    f"NFE budgets {cfg.budgets}{on}",
                    flush=True,
                )
                for name, why in unavailable_peers().items():  # named once, here
                    print(f"  peer library {name} {why}: its peers are not run", flush=True)

            def note(line: str):  # a run without samples, as it happens (above the progress bar)
                from tqdm.auto import tqdm

                tqdm.write(f"scoresde bench: {line}", file=sys.stderr)

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                rows = bench.run_bench(cfg, progress=not args.no_progress, on_start=start, note=note)
    except ValueError as err:  # a bad argument, checked before anything is printed, any run or any file
        print(f"scoresde bench: error: {err}", file=sys.stderr)
        return 2
    if rank != 0:
        return 0
    for w in caught:
        if type(w.message).__name__ != "PeerUnavailableWarning":
            print(f"scoresde bench: warning: {w.message}", file=sys.stderr)
    print(bench.summary_table(rows, cfg.budgets))
    print(f"full table: {cfg.out}/bench_{cfg.tag}.md (earlier rows kept); data: .csv, .json; plot: .png")
    return _closing(rows, outcome)


def _closing(rows: list[dict], outcome) -> int:
    """The exit status: 1 when a run could not be made (a `failed` row), else 0; a line on stderr counting the runs
    without a figure whenever there are any."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[outcome(r["status"])] = counts.get(outcome(r["status"]), 0) + 1
    failed, rest = counts.get("failed", 0), {k: v for k, v in counts.items() if k not in ("ok", "failed")}
    if not failed and not rest:
        return 0
    parts = [f"{failed} of {len(rows)} runs failed"] if failed else []
    parts += [f"{v} of {len(rows)} runs {k}" for k, v in rest.items()]
    tail = " (exit status 1)" if failed else " (exit status 0: these are the methods' results)"
    print(f"scoresde bench: {', '.join(parts)}: see 'Runs without a figure' above{tail}", file=sys.stderr)
    return 1 if failed else 0
