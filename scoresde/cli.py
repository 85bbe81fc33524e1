"""Command line: ``scoresde bench`` (the main job) and ``scoresde methods``."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _csv(kind):
    return lambda s: tuple(kind(v) for v in s.split(",") if v)


def _bench(args) -> int:
    from .bench import BenchConfig, format_table, run_bench

    overrides = {
        k: v
        for k, v in dict(
            problems=args.problems, methods=args.methods, budgets=args.nfe, n=args.n, seed=args.seed, out=args.out
        ).items()
        if v is not None
    }
    cfg = BenchConfig.quick(**overrides) if args.quick else BenchConfig(**overrides)
    print(
        f"scoresde bench ({cfg.tag}): problems {', '.join(cfg.problems)}, n = {cfg.n}, NFE budgets {cfg.budgets}",
        flush=True,
    )

    def progress(row):
        print(
            f"  {row['problem']:>6} {row['method']:<18} {row['run']:<12} NFE {row['nfe']:>5}"
            f"  mode SWD {row['mode_swd']:.4f}  (floor {row['mode_swd_floor']:.4f})  {row['wall_s']:.2f}s",
            flush=True,
        )

    rows = run_bench(cfg, progress=None if args.no_progress else progress)
    print(format_table(rows))
    print(f"wrote {cfg.out}/bench_{cfg.tag}.csv, .json and .md")
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
