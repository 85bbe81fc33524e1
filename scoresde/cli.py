"""Command line: ``scoresde bench`` (the main job) and ``scoresde methods``."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _csv(kind):
    return lambda s: tuple(kind(v) for v in s.split(",") if v)


def _bench(args) -> int:
    from .bench import BenchConfig, run_bench, summary_table

    overrides = {
        "problems": args.problems,
        "methods": args.methods,
        "peers": args.peers,
        "budgets": args.nfe,
        "n": args.n,
        "seed": args.seed,
        "out": args.out,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    cfg = BenchConfig.quick(**overrides) if args.quick else BenchConfig(**overrides)
    print(f"scoresde bench ({cfg.tag}): problems {', '.join(cfg.problems)}, n = {cfg.n}, NFE budgets {cfg.budgets}")
    rows = run_bench(cfg, progress=not args.no_progress)
    print(summary_table(rows, cfg.budgets))
    print(f"full table: {cfg.out}/bench_{cfg.tag}.md; data: .csv, .json; plot: .png")
    return 0


def _methods(args) -> int:
    from .solvers import available_methods, method_info

    for name in available_methods():
        info = method_info(name)
        cost = "adaptive" if info["adaptive"] else f"{info['nfe_per_step']} NFE/step"
        print(f"{name:<20} {info['kind']}  order {info['order']:<4} {cost:<12} {info['description']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scoresde", description="Score-based diffusion models as SDEs and ODEs.")
    p.add_argument("--version", action="version", version=f"scoresde {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("bench", help="NFE vs sample quality of every method on the built-in exact problems")
    b.add_argument("--quick", action="store_true", help="small sizes (the README's main job; minutes on 2 cores)")
    b.add_argument("--problems", type=_csv(str), help="comma-separated: ring, gmm16, gmm64")
    b.add_argument("--methods", type=_csv(str), help="comma-separated method names (default: all)")
    b.add_argument(
        "--peers", type=_csv(str), help="comma-separated peer names (default: every installed one; '' for none)"
    )
    b.add_argument("--nfe", type=_csv(int), help="comma-separated NFE budgets")
    b.add_argument("--n", type=int, help="samples per run")
    b.add_argument("--seed", type=int)
    b.add_argument("--out", help="output folder (default results/)")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(func=_bench)

    m = sub.add_parser("methods", help="list the sampling methods and what they declare")
    m.set_defaults(func=_methods)

    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
