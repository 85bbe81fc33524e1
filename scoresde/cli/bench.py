"""``scoresde bench``: NFE vs sample quality of every method on the built-in exact problems (:mod:`scoresde.bench`)."""

from __future__ import annotations

import sys

from .args import csv, device, positive, problem_list

NAME = "bench"
HELP = "NFE vs sample quality of every method on the built-in exact problems"


def add_arguments(b) -> None:
    b.add_argument(
        "--quick",
        action="store_true",
        help="the README's main job: the frontier, the classics and the peers' best on ring and gmm16, "
        "4000 samples, NFE 5 to 50 (under 3 minutes on 2 cores)",
    )
    b.add_argument(
        "--problems",
        type=problem_list,
        help="comma-separated: ring, gmm16, gmm64, gmm-family:d=D,k=K,seed=S (seed=A-B: one problem per seed), "
        "learned:DIR (default: ring, gmm16, gmm64)",
    )
    b.add_argument("--methods", type=csv(str), help="comma-separated method names (default: all)")
    b.add_argument(
        "--peers", type=csv(str), help="comma-separated peer names (default: every installed one; '' for none)"
    )
    b.add_argument("--nfe", type=csv(int), help="comma-separated NFE budgets >= 1 (default: 5,10,20,50,100,200)")
    b.add_argument("--tol", type=csv(float), help="comma-separated rtol = atol of adaptive methods (1e-2,1e-3,1e-4)")
    b.add_argument(
        "--n",
        "--num-samples",
        dest="n",
        type=int,
        help="samples per run, >= 2 (default: 20000; 4000 with --quick); under torchrun spell it --num-samples "
        "(torchrun reads --n as an abbreviation of its own options)",
    )
    b.add_argument("--seed", type=int, help="seed >= 0 (default: 0)")
    b.add_argument(
        "--fit-budget",
        type=int,
        help="sample-evaluations per fit of the `fitted` method, teacher included (default: 2 per sample of --n, "
        "at most 40000)",
    )
    b.add_argument(
        "--threads",
        type=positive,
        help="torch threads (default: 1 with --quick, whose runs are small: on a loaded 2-core machine two "
        "threads made it 10x slower; otherwise torch's default)",
    )
    b.add_argument("--device", type=device, help="where our methods run (default cpu); peers need the CPU")
    b.add_argument(
        "--dtype",
        choices=("float32", "float64", "bfloat16"),
        help="our methods' state; bfloat16: float32 state, the network under bfloat16 autocast (default float32)",
    )
    b.add_argument(
        "--sde",
        choices=("vp", "flow"),
        help="the path of the exact problems: vp (the linear VP SDE, default) or flow (the rectified-flow path, "
        "FlowSDE(), with the flow-matching peers)",
    )
    b.add_argument("--out", help="output folder (default results/); a rerun there merges into its tables")
    b.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    import warnings

    import torch

    from .. import bench
    from ..bench.report import unavailable_peers
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
    cfg = bench.BenchConfig.quick(**overrides) if args.quick else bench.BenchConfig(**overrides)
    threads = args.threads if args.threads is not None else (1 if args.quick else None)
    if threads is not None:  # the quick grid's problems are small: one thread, and no 2-thread contention
        torch.set_num_threads(threads)
    try:
        with launched():  # under torchrun: the runs are shared out, rank 0 gathers, writes and speaks
            rank, size = world()
            on = f" on {size} processes" if size > 1 else ""
            if rank == 0:
                print(
                    f"scoresde bench ({cfg.tag}): problems {', '.join(cfg.problems)}, n = {cfg.n}, "
                    f"NFE budgets {cfg.budgets}{on}"
                )
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                for name, why in unavailable_peers().items() if rank == 0 else ():  # named once, here
                    print(f"  peer library {name} {why}: its peers are not run")
                rows = bench.run_bench(cfg, progress=not args.no_progress)
    except ValueError as err:  # a bad argument, checked before any run or file
        print(f"scoresde bench: error: {err}", file=sys.stderr)
        return 2
    if rank != 0:
        return 0
    for w in caught:
        if type(w.message).__name__ != "PeerUnavailableWarning":
            print(f"scoresde bench: warning: {w.message}", file=sys.stderr)
    print(bench.summary_table(rows, cfg.budgets))
    print(f"full table: {cfg.out}/bench_{cfg.tag}.md (earlier rows kept); data: .csv, .json; plot: .png")
    return 0
