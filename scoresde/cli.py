"""Command line: ``scoresde bench`` (the main job), ``scoresde methods`` and ``scoresde train``."""

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


def _train(args) -> int:
    from pathlib import Path

    from .train import TrainConfig, train

    try:
        if args.config:
            cfg = TrainConfig.from_file(args.config)
        elif args.resume and args.out and (Path(args.out) / "config.json").is_file():
            cfg = TrainConfig.from_file(Path(args.out) / "config.json")
        else:
            cfg = TrainConfig()
        overrides = {
            "data": args.data,
            "class_conditional": args.class_conditional,
            "prediction": args.prediction,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": args.seed,
            "t_sampler": args.t_sampler,
            "ckpt_every": args.ckpt_every,
            "out": args.out,
            "device": args.device,
        }
        if args.model and cfg.model.get("arch") != args.model:
            overrides["model"] = {"arch": args.model}
        cfg = cfg.replace(**{k: v for k, v in overrides.items() if v is not None})
        res = train(cfg, resume=args.resume, progress=not args.no_progress)
    except ValueError as err:  # bad config, or a missing / corrupt / mismatched checkpoint
        print(f"scoresde train: error: {err}", file=sys.stderr)
        return 2
    tail = res.losses[-cfg.log_every :]
    mem = "n/a" if res.peak_memory_mib is None else f"{res.peak_memory_mib:.0f} MiB ({res.memory_kind})"
    print(
        f"step {res.step}: mean loss of the last {len(tail)} steps {sum(tail) / max(len(tail), 1):.4f}; "
        f"{res.examples_per_s:.0f} examples/s over {res.steps_run} steps; peak memory {mem}; "
        f"{res.num_parameters:,} parameters; checkpoint in {res.out}"
    )
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

    t = sub.add_parser("train", help="train a score network (checkpoints in --out; --resume continues exactly)")
    t.add_argument("--config", help="a .json or .toml training config (flags below override it)")
    t.add_argument("--data", help="moons, swissroll, checkerboard, rings or digits")
    t.add_argument("--model", choices=("mlp", "unet"), help="architecture (default: mlp for 2-D sets, unet for digits)")
    t.add_argument("--class-conditional", action="store_true", default=None, help="train with labels (digits)")
    t.add_argument("--prediction", choices=("eps", "x0", "v"))
    t.add_argument("--steps", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--t-sampler", choices=("uniform", "stratified", "importance"))
    t.add_argument("--ckpt-every", type=int)
    t.add_argument("--out", help="output folder (checkpoint and config.json)")
    t.add_argument("--device", help="cpu, cuda, cuda:1, ...")
    t.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_train)

    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
