"""Command line: ``scoresde bench`` (the main job), ``methods``, ``train``, ``sample``, ``likelihood``, ``fields``.

Bad input ends in one line on stderr naming the flag and what it accepts, exit status 2, before any work.
"""

from __future__ import annotations

import argparse
import re
import sys

from . import __version__
from .util import unwritable


class _Parser(argparse.ArgumentParser):
    """A subcommand's parser whose errors are one line: which flag, what it accepts, where help is.

    The top-level parser keeps argparse's usage message (an unknown or missing subcommand).
    """

    def error(self, message: str):
        if " " not in self.prog:
            super().error(message)
        m = re.fullmatch(r"argument (\S+): invalid choice: (.+) \(choose from (.+)\)", message)
        if m:
            message = f"{m[1]} must be one of {m[3].replace(chr(39), '')}, got {m[2]}"
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _csv(kind):
    def parse(text: str) -> tuple:
        return tuple(kind(v) for v in text.split(",") if v)

    parse.__name__ = f"comma-separated {kind.__name__}"  # argparse's message: "invalid comma-separated int value"
    return parse


def _problem_list(text: str) -> tuple:
    """``--problems``: comma-separated names; a ``gmm-family:d=D,k=K,seed=S`` name keeps its own commas."""
    from .bench.problems import split_problems

    return split_problems(text)


def _device(text: str) -> str:
    """``--device``: a torch device that exists here, else one line saying what does (argparse exits 2)."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a device: {text!r}; accepted: {_devices()}") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise argparse.ArgumentTypeError(f"{text!r} is not available here; accepted: {_devices()}")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise argparse.ArgumentTypeError(f"{text!r} is not available here; accepted: {_devices()}")
    return text


def _devices() -> str:
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    elif torch.version.cuda is None:
        names.append("(no cuda: this torch is built without CUDA)")
    else:
        names.append("(no cuda: no GPU visible)")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        names.append("mps")
    return ", ".join(names)


def _int_at_least(low: int):
    """An argparse type: an integer ``>= low``, or one line saying what was expected."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value

    return parse


_positive, _at_least_2, _seed = _int_at_least(1), _int_at_least(2), _int_at_least(0)


def _suffix(text: str) -> str:
    """``--save``: ``safetensors`` or ``.safetensors`` (and ``npz``)."""
    suffix = "." + text.lstrip(".")
    if suffix not in (".safetensors", ".npz"):
        raise argparse.ArgumentTypeError(f"invalid choice {text!r}; accepted: safetensors, npz")
    return suffix


def _bench(args) -> int:
    import warnings

    import torch

    from .bench import BenchConfig, run_bench, summary_table
    from .bench.report import unavailable_peers
    from .process_group import launched, world

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
    cfg = BenchConfig.quick(**overrides) if args.quick else BenchConfig(**overrides)
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
                rows = run_bench(cfg, progress=not args.no_progress)
    except ValueError as err:  # a bad argument, checked before any run or file
        print(f"scoresde bench: error: {err}", file=sys.stderr)
        return 2
    if rank != 0:
        return 0
    for w in caught:
        if type(w.message).__name__ != "PeerUnavailableWarning":
            print(f"scoresde bench: warning: {w.message}", file=sys.stderr)
    print(summary_table(rows, cfg.budgets))
    print(f"full table: {cfg.out}/bench_{cfg.tag}.md (earlier rows kept); data: .csv, .json; plot: .png")
    return 0


def _methods(args) -> int:
    from .solvers import available_methods, method_info

    for name in available_methods():
        info = method_info(name)
        cost = "adaptive" if info["adaptive"] else f"{info['nfe_per_step']} NFE/step"
        print(f"{name:<20} {info['kind']}  order {info['order']:<4} {cost:<12} {info['description']}")
    from . import peers
    from .bench.report import unavailable_peers

    names = peers.available_peers()
    print(f"\npeers (scoresde bench --peers): {', '.join(names) or 'none installed (pip install scoresde[peers])'}")
    for name, why in unavailable_peers().items():
        print(f"  peer library {name}: {why}")
    return 0


def _train_processes(args) -> int:
    """``scoresde train``; under torchrun in one process group (gloo, nccl on CUDA): the ranks train one model with
    DDP on shares of every batch (scoresde/train/distributed.py), rank 0 alone writes and speaks."""
    from .train.distributed import process_group

    with process_group(args.device):
        return _train(args)


def _train(args) -> int:
    import signal
    from pathlib import Path

    from .train import TrainConfig, train

    try:
        if args.config:
            cfg = TrainConfig.from_file(args.config)
        elif args.resume and args.out and (Path(args.out) / "config.json").is_file():
            cfg = TrainConfig.from_saved(Path(args.out) / "config.json")
        else:
            cfg = TrainConfig()
        overrides = {
            "data": args.data,
            "class_conditional": args.class_conditional,
            "clusters": args.clusters,
            "cluster_method": args.cluster_method,
            "augment": args.augment,
            "prediction": args.prediction,
            "sde": {"name": args.sde} if args.sde else None,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": args.seed,
            "t_sampler": args.t_sampler,
            "weighting": args.weighting,
            "lr_schedule": args.lr_schedule,
            "warmup": args.warmup,
            "ckpt_every": args.ckpt_every,
            "plots": False if args.no_plots else None,
            "out": args.out,
            "device": args.device,
            "dtype": args.dtype,
        }
        if args.model and cfg.model.get("arch") != args.model:
            overrides["model"] = {"arch": args.model}
        cfg = cfg.replace(**{k: v for k, v in overrides.items() if v is not None})
        problem = unwritable(Path(cfg.out))
        if problem:
            raise ValueError(f"--out: cannot write the checkpoint to {cfg.out!r}: {problem}")
        res = train(cfg, resume=args.resume, progress=not args.no_progress, handle_signals=True)
    except ValueError as err:  # bad config, or a missing / corrupt / mismatched checkpoint
        print(f"scoresde train: error: {err}", file=sys.stderr)
        return 2
    if res.interrupted is not None:
        print(
            f"scoresde train: stopped by {signal.Signals(res.interrupted).name} at step {res.step} of {cfg.steps}; "
            f"checkpoint in {res.out}; continue with: scoresde train --out {res.out} --resume",
            file=sys.stderr,
        )
        return 128 + res.interrupted
    tail = res.losses[-cfg.log_every :]
    mem = "n/a" if res.peak_memory_mib is None else f"{res.peak_memory_mib:.0f} MiB ({res.memory_kind})"
    print(
        f"step {res.step}: mean loss of the last {len(tail)} steps {sum(tail) / max(len(tail), 1):.4f}; "
        f"{res.examples_per_s:.0f} examples/s over {res.steps_run} steps; peak memory {mem}; "
        f"{res.num_parameters:,} parameters; checkpoint in {res.out}"
    )
    return 0


def _interval(text: str) -> tuple[float, float]:
    from .train.pretrained import check_interval

    try:
        return check_interval(text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{err} (write LO,HI)") from None


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"options are key=value, got {text!r}")
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, {"true": True, "false": False}.get(value.lower(), value)


def _sample(args) -> int:
    """``scoresde sample``; under ``torchrun`` each process samples its shard and rank 0 gathers and writes."""
    from .process_group import launched

    with launched():
        if args.shard_size:
            from .cli_sample import sample_to_shards

            return sample_to_shards(args, _rank_device(args.device))
        return _sample_run(args)


def _load_guide(args, device):
    """``--guide``'s network (checked against ``--checkpoint``), or ``None``."""
    if args.guide is None:
        return None
    from .train import load_guide

    return load_guide(args.guide, args.checkpoint, ema=not args.raw_weights, device=device)


def _sample_run(args) -> int:
    from pathlib import Path

    import torch

    from . import data as data_mod
    from .conditioning import inpaint, make_mask
    from .distributed import any_rank, gather_samples, shard, world
    from .plot import save_image_grid, save_points
    from .precision import check_dtype_device, network_precision, state_dtype
    from .sample import sample
    from .train import load_score, make_score
    from .train.pretrained import label_sampler
    from .util import save_tensors

    rank, size = world()
    say = print if rank == 0 else (lambda *a, **k: None)  # one process speaks and writes
    stem = Path(args.out)
    targets = [stem.with_suffix(".png"), *(stem.with_suffix(x) for x in args.save)]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not args.force:
        say(
            f"scoresde sample: error: --out: {', '.join(existing)} already exists; pass --force to overwrite it, "
            "or choose another --out",
            file=sys.stderr,
        )
        return 2
    problem = unwritable(stem.parent) if rank == 0 else None
    if problem:
        print(f"scoresde sample: error: --out: cannot write to {str(stem.parent)!r}: {problem}", file=sys.stderr)
    if any_rank(bool(problem)):
        return 2
    device = _rank_device(args.device)
    n = args.n
    start, stop = shard(n, rank, size)  # this process's samples [start, stop), drawn with sample_offset=start
    out, error = None, None
    try:
        check_dtype_device(args.dtype, device)
        _, sde, cfg, net = load_score(args.checkpoint, ema=not args.raw_weights, device=device)
        guide = _load_guide(args, device)
        y = label_sampler(args.label, args.checkpoint, getattr(net, "num_classes", None), args.seed)(0, n)
        y_part = y if y is None or stop == start else y[start:stop]
        score = make_score(net, sde, cfg.prediction, y_part, args.guidance, args.guidance_interval, guide=guide)
        for m in (net, guide or net):  # float64 weights for a float64 run; bfloat16 autocasts a float32 network
            m.to(state_dtype(args.dtype))
        info = data_mod.dataset_info(cfg.data)
        common = dict(method=args.method, steps=args.steps, seed=args.seed, denoise=args.denoise, **dict(args.option))
        if args.grid:
            common["grid"] = args.grid
        if args.fitted:
            from .fitted import load_fitted

            if args.grid or args.option:
                raise ValueError("--fitted runs on its own grid and weights: drop --grid and --option")
            common["method"] = load_fitted(args.fitted)
        bar = _progress_bar(common["method"], args.steps, rank == 0 and not args.no_progress and not args.inpaint)
        if bar is not None:
            common["callback"] = lambda info: bar.update(1) and None  # tqdm returns True when it redraws
        if args.inpaint:
            x_test, _ = data_mod.get_dataset(cfg.data, "test", n=n, seed=cfg.data_seed)
            if x_test.shape[0] < n:
                raise ValueError(f"--inpaint needs n <= {x_test.shape[0]} test examples, got {n}")
            x_known = x_test[:n].to(device=device, dtype=state_dtype(args.dtype))  # inpaint follows its dtype
            mask = make_mask(args.inpaint, info["shape"], seed=args.seed).to(device)
            if stop > start:
                with network_precision(args.dtype, device):
                    out = inpaint(
                        score, x_known[start:stop], mask, resample=args.resample, sample_offset=start, **common
                    )
        elif stop > start:
            with network_precision(args.dtype, device):
                shape = (stop - start, *info["shape"])
                dtype = state_dtype(args.dtype)
                out = sample(
                    score, sde, shape, device=device, dtype=dtype, sample_offset=start, check=args.check, **common
                )
        if bar is not None:
            bar.close()
    except (ValueError, TypeError) as err:
        error = str(err)
        print(f"scoresde sample: error: {err}", file=sys.stderr)
    if any_rank(error is not None):
        return 2
    out = gather_samples(out)
    if rank != 0:
        return 0
    x = out.x.cpu()
    if x.ndim == 4:
        images = torch.cat([x_known.cpu().where(mask.cpu(), torch.tensor(-1.0)), x]) if args.inpaint else x
        save_image_grid(images, stem.with_suffix(".png"), nrow=min(n, 10))
    elif x.shape[1] == 2:
        ref, _ = data_mod.get_dataset(cfg.data, "test", n=max(n, 2000), seed=cfg.data_seed)
        save_points(x, stem.with_suffix(".png"), reference=ref, title=f"{args.method}, {out.nfe} NFE")
    tensors = {"x": x} | ({"y": y} if y is not None else {})
    for suffix in args.save:
        save_tensors(stem.with_suffix(suffix), tensors, metadata={"method": out.method, "nfe": str(out.nfe)})
    procs = f" on {size} processes" if size > 1 else ""
    what = f"the fitted solver in {args.fitted}" if args.fitted else args.method
    extra = [f"{out.fit_nfe} pilot calls for the grid"] if out.fit_nfe else []
    if out.check_nfe:
        from .fitted import FittedSolver

        extra.append(f"{out.check_nfe} fingerprint check call on {FittedSolver.PROBE_ROWS} probe rows")
    extra = f" (+ {', '.join(extra)})" if extra else ""
    print(f"{n} samples with {what} in {out.nfe} NFE{extra}{procs} -> {stem.with_suffix('.png')}")
    return 0


def _rank_device(device: str) -> str:
    """``--device cuda`` under torchrun: one GPU per process, as torchrun numbers them (``LOCAL_RANK``)."""
    import os

    from .process_group import world

    rank, size = world()
    if size > 1 and device == "cuda":
        return f"cuda:{os.environ.get('LOCAL_RANK', rank)}"
    return device


def _progress_bar(method, steps: int, show: bool):
    """A tqdm bar moved by the per-step callback, for methods on the stepping loop; engine-based methods would step
    differently (by the last bits) when given a callback, and adaptive ones take none: they get no bar."""
    if not show:
        return None
    from .solvers import Solver, get_solver

    cls, total = (type(method), method.steps) if isinstance(method, Solver) else (get_solver(method), steps)
    if cls.adaptive or cls.solve is not Solver.solve:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="sampling", unit="step", file=sys.stderr)


def _fit(args) -> int:
    """``scoresde fit``: a few-step solver fitted to a checkpoint or an exact problem, written to --out."""
    from pathlib import Path

    from .fitted import FitError, fit_solver

    out = Path(args.out)
    if (out / "fitted.json").exists() and not args.force:
        print(
            f"scoresde fit: error: --out: {out} already holds a fitted solver; pass --force to replace it",
            file=sys.stderr,
        )
        return 2
    problem = unwritable(out.parent if not out.exists() else out)
    if problem:
        print(f"scoresde fit: error: --out: cannot write to {str(out)!r}: {problem}", file=sys.stderr)
        return 2
    if (args.checkpoint is None) == (args.problem is None):
        print("scoresde fit: error: give exactly one of --checkpoint DIR or --problem NAME", file=sys.stderr)
        return 2
    try:
        if args.checkpoint is not None:
            from . import data as data_mod
            from .train import load_score

            score, _, cfg, _ = load_score(args.checkpoint, ema=not args.raw_weights, device=args.device)
            dims = tuple(data_mod.dataset_info(cfg.data)["shape"])
        else:
            from .problems import get_problem
            from .sde import VPSDE

            gmm = get_problem(args.problem)
            score, dims = gmm.score(VPSDE()), (gmm.dim,)
        fitted = fit_solver(score, args.steps, dims, budget=args.budget)
    except (ValueError, FitError) as err:
        print(f"scoresde fit: error: {err}", file=sys.stderr)
        return 2
    fitted.save(out)
    m = fitted.meta
    print(
        f"fitted {args.steps} steps on grid {m['grid_name']} ({'with' if fitted.corrector is not None else 'no'} "
        f"corrector): {m['fit_nfe']} model calls on {m['fit_batch']} samples = {m['fit_evals']} sample-evaluations; "
        f"written to {out}"
    )
    return 0


def _likelihood(args) -> int:
    import time

    import torch

    from .likelihood import log_likelihood
    from .problems import get_problem

    gmm, kw = None, {}
    try:
        if (args.problem is None) == (args.checkpoint is None):
            raise ValueError("give exactly one of --problem NAME and --checkpoint DIR")
        if args.problem is not None:
            if args.sde not in _SDES:
                raise ValueError(f"--sde must be one of {', '.join(_SDES)}, got {args.sde!r}")
            gmm, sde = get_problem(args.problem), _SDES[args.sde]()
            score, what = gmm.score(sde), args.problem
            x = gmm.sample(args.n or 200, generator=torch.Generator().manual_seed(args.seed))
        else:
            from . import data as data_mod
            from .train import load_score

            score, sde, cfg, _ = load_score(args.checkpoint, ema=not args.raw_weights, device=args.device)
            x, _ = data_mod.get_dataset(cfg.data, "test", n=args.n or 2000, seed=cfg.data_seed)
            x, what = x[: args.n].to(args.device), f"{args.checkpoint} on {cfg.data} (test split)"
            if cfg.data == "digits":  # pixel counts 0..16 at k / 8 - 1: dequantise to bits/dim of the counts
                kw = {"bins": data_mod.DIGIT_LEVELS, "data_range": (-1.0, 1.0)}
        opts = dict(t_min=args.t_min, trace=args.trace, probe=args.probe, n_probes=args.probes, seed=args.seed)
        opts |= dict(rtol=args.rtol, atol=args.atol, method=args.method, time=args.time, **kw)
        batch = args.batch or x.shape[0]
        start = time.perf_counter()
        parts = [log_likelihood(score, sde, x[i : i + batch], sample_offset=i, **opts) for i in range(0, len(x), batch)]
        seconds = time.perf_counter() - start
    except (ValueError, TypeError) as err:
        print(f"scoresde likelihood: error: {err}", file=sys.stderr)
        return 2
    cat = {k: torch.cat([getattr(r, k) for r in parts]) for k in ("nats", "bits_per_dim", "std_err", "prior_logp")}
    n, r0 = len(x), parts[0]
    print(f"scoresde likelihood: {what}, n = {n}, {sde!r}, trace {args.trace}", end="")
    print(f" ({args.probes} {args.probe} probes)" if args.trace == "hutchinson" else "", end="")
    print(f", {args.method} rtol {args.rtol:g} atol {args.atol:g} in {args.time}; log p at t_min = {r0.t_min:g}")
    spread = float(cat["nats"].std()) / n**0.5 if n > 1 else float("nan")
    deq = f" (dequantised, incl. d log Delta = {r0.log_bin_volume:.4g})" if kw else ""
    print(f"  mean log-likelihood {float(cat['nats'].mean()):.5f} nats +- {spread:.3g} (over samples){deq}")
    print(f"  mean NLL {float(cat['bits_per_dim'].mean()):.5f} bits/dim (d = {r0.dim})")
    if args.trace == "hutchinson" and args.probes > 1:
        se_mean = float(cat["std_err"].pow(2).sum().sqrt()) / n
        print(f"  Hutchinson std err: per sample {float(cat['std_err'].mean()):.4g}, of the mean {se_mean:.3g} nats")
    if gmm is not None:
        exact = gmm.log_prob(x, r0.t_min, sde)
        p_T = gmm.marginal(sde, r0.T)
        integ = torch.cat([r.nats - r.prior_logp + p_T.log_prob(r.x_T) for r in parts])
        for label, val in (("vs exact log p_t_min", cat["nats"]), ("  with exact p_T as prior", integ)):
            err = val - exact
            extra = ""
            if args.trace == "hutchinson":  # in units of the standard error of the mean: reported and empirical
                extra = f", mean err / (sd err / sqrt n) {float(err.mean()) / (float(err.std()) / n**0.5):+.2f}"
                if args.probes > 1:
                    extra += f", / reported std err of mean {float(err.mean()) / se_mean:+.2f}"
            print(
                f"  {label}: mean |err| {float(err.abs().mean()):.3g}, max |err| {float(err.abs().max()):.3g}, "
                f"mean err {float(err.mean()):+.3g} nats{extra}"
            )
    nfes = [r.nfe for r in parts]
    print(f"  NFE {sum(nfes)} in {len(parts)} batch(es) (max {max(nfes)} per batch), {seconds:.2f} s")
    return 0


def _fields(args) -> int:
    """``scoresde fields``: the score / drift field of a 2-D problem or model at several t (PNG, optional GIF)."""
    from pathlib import Path

    def fail(message: str) -> int:
        print(f"scoresde fields: error: {message}", file=sys.stderr)
        return 2

    if args.problem is not None and args.checkpoint is not None:
        return fail("give at most one of --problem NAME and --checkpoint DIR")
    if args.t is not None and not args.t:
        return fail("--t: give at least one time, e.g. --t 0.05,0.2,0.5,1.0")
    if not args.lim > 0:
        return fail(f"--lim must be > 0, got {args.lim:g}")
    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        return fail(f"--out must end in .png, .pdf or .svg, got {args.out!r}")
    targets = [out]
    if args.animate is not None:
        if Path(args.animate).suffix.lower() != ".gif":
            return fail(f"--animate must end in .gif, got {args.animate!r}")
        targets.append(Path(args.animate))
    existing = [str(t) for t in targets if t.exists()]
    if existing and not args.force:
        flag = "--out" if str(out) in existing else "--animate"
        return fail(
            f"{flag}: {', '.join(existing)} already exists; pass --force to overwrite it, or choose another name"
        )
    for target, flag in zip(targets, ("--out", "--animate"), strict=False):
        problem = unwritable(target.parent)
        if problem:
            return fail(f"{flag}: cannot write to {str(target.parent)!r}: {problem}")
    try:
        if args.checkpoint is not None:
            from . import data as data_mod
            from .train import load_score

            try:
                field, sde, cfg, _ = load_score(args.checkpoint, ema=not args.raw_weights)
            except (ValueError, OSError) as err:
                raise ValueError(f"--checkpoint: {err}") from None

            if tuple(data_mod.dataset_info(cfg.data)["shape"]) != (2,):
                raise ValueError(f"--checkpoint: fields need a 2-D model, {args.checkpoint} is trained on {cfg.data}")
            label = f"{cfg.data} model"
        else:
            from .problems import get_problem

            name = args.problem or "ring"
            try:
                field, sde, label = get_problem(name), _SDES[args.sde](), "exact"
            except ValueError as err:
                raise ValueError(f"--problem: {err}") from None
            if field.dim != 2:
                raise ValueError(f"--problem: fields need a 2-D problem (ring), {name} has d = {field.dim}")
        ts = tuple(args.t) if args.t is not None else (0.05, 0.2, 0.5, sde.T)
        bad = [t for t in ts if not 0 < t <= sde.T]
        if bad:
            raise ValueError(f"--t: times must lie in (0, {sde.T:g}], got {', '.join(f'{t:g}' for t in bad)}")
        from .plot import animate_fields, plot_fields, save_figure

        kw = dict(lim=args.lim, n=args.grid_size)
        fig = plot_fields({label: field}, sde, ts, args.kind, style=args.style, **kw)
        save_figure(fig, out, dpi=110)
        print(f"{args.kind} field at t = {', '.join(f'{t:g}' for t in ts)} -> {out}")
        if args.animate is not None:
            lo, hi = min(ts), max(ts)
            frames = [hi * (lo / hi) ** (i / max(args.frames - 1, 1)) for i in range(args.frames)]
            animate_fields(field, sde, frames, args.animate, args.kind, **kw)
            print(f"animation, {args.frames} frames from t = {hi:g} to {lo:g} -> {args.animate}")
    except ValueError as err:
        return fail(str(err))
    return 0


_SDES = {
    "vp": lambda: __import__("scoresde.sde", fromlist=["VPSDE"]).VPSDE(),
    "vp-cosine": lambda: __import__("scoresde.sde", fromlist=["VPSDE"]).VPSDE(schedule="cosine"),
    "subvp": lambda: __import__("scoresde.sde", fromlist=["SubVPSDE"]).SubVPSDE(),
    "ve": lambda: __import__("scoresde.sde", fromlist=["VESDE"]).VESDE(),
    "flow": lambda: __import__("scoresde.sde", fromlist=["FlowSDE"]).FlowSDE(),
}


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="scoresde", description="Score-based diffusion models as SDEs and ODEs.")
    p.add_argument("--version", action="version", version=f"scoresde {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("bench", help="NFE vs sample quality of every method on the built-in exact problems")
    b.add_argument(
        "--quick",
        action="store_true",
        help="the README's main job: the frontier, the classics and the peers' best on ring and gmm16, "
        "4000 samples, NFE 5 to 50 (under 3 minutes on 2 cores)",
    )
    b.add_argument(
        "--problems",
        type=_problem_list,
        help="comma-separated: ring, gmm16, gmm64, gmm-family:d=D,k=K,seed=S (seed=A-B: one problem per seed), "
        "learned:DIR (default: ring, gmm16, gmm64)",
    )
    b.add_argument("--methods", type=_csv(str), help="comma-separated method names (default: all)")
    b.add_argument(
        "--peers", type=_csv(str), help="comma-separated peer names (default: every installed one; '' for none)"
    )
    b.add_argument("--nfe", type=_csv(int), help="comma-separated NFE budgets >= 1 (default: 5,10,20,50,100,200)")
    b.add_argument("--tol", type=_csv(float), help="comma-separated rtol = atol of adaptive methods (1e-2,1e-3,1e-4)")
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
        type=_positive,
        help="torch threads (default: 1 with --quick, whose runs are small: on a loaded 2-core machine two "
        "threads made it 10x slower; otherwise torch's default)",
    )
    b.add_argument("--device", type=_device, help="where our methods run (default cpu); peers need the CPU")
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
    b.set_defaults(func=_bench)

    m = sub.add_parser("methods", help="list the sampling methods and what they declare")
    m.set_defaults(func=_methods)

    t = sub.add_parser("train", help="train a score network (checkpoints in --out; --resume continues exactly)")
    t.add_argument("--config", help="a .json or .toml training config (flags below override it)")
    t.add_argument("--data", help="moons, swissroll, checkerboard, rings or digits")
    t.add_argument("--model", choices=("mlp", "unet"), help="architecture (default: mlp for 2-D sets, unet for digits)")
    t.add_argument("--class-conditional", action="store_true", default=None, help="train with labels (digits)")
    t.add_argument("--clusters", type=int, help="K > 0: condition on K clusters of the data (no labels needed)")
    t.add_argument(
        "--cluster-method",
        choices=("kmeans", "spectral"),
        help="how --clusters finds them: k-means on the pixels (default) or spectral on their neighbour graph",
    )
    t.add_argument(
        "--augment",
        type=float,
        help="P > 0: each of EDM's non-leaking augmentations (flip, quarter turns, shift) with probability P (images)",
    )
    t.add_argument("--prediction", choices=("eps", "x0", "v", "flow"), help="flow: the velocity eps - x0 (--sde flow)")
    t.add_argument(
        "--sde",
        choices=("vp", "subvp", "ve", "flow"),
        help="the forward process: vp (linear VP SDE), subvp, ve, or flow (the rectified-flow path, shift 1)",
    )
    t.add_argument("--steps", type=_positive, help="optimizer steps (>= 1)")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=_seed, help="seed (>= 0)")
    t.add_argument("--t-sampler", choices=("uniform", "stratified", "importance", "lognormal", "logit-normal"))
    t.add_argument("--weighting", choices=("unit", "likelihood", "min-snr"))
    t.add_argument("--lr-schedule", choices=("constant", "cosine"))
    t.add_argument("--warmup", type=int, help="learning-rate warm-up steps")
    t.add_argument("--ckpt-every", type=int)
    t.add_argument("--no-plots", action="store_true", help="do not write loss.png / samples.png at checkpoints")
    t.add_argument("--out", help="output folder (checkpoint and config.json)")
    t.add_argument("--device", type=_device, help="cpu, cuda, cuda:1, ... (one that exists here)")
    t.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        help="bfloat16: the network's forward pass under bfloat16 autocast; weights, optimiser and loss stay "
        "float32 (default float32)",
    )
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the checkpoint in --out (SIGINT / SIGTERM write one and stop; a second signal exits at once)",
    )
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_train_processes)

    sp = sub.add_parser("sample", help="sample a trained checkpoint (PNG grid, tensors), with guidance or inpainting")
    sp.add_argument("--checkpoint", required=True, help="the training output folder")
    sp.add_argument("--method", default="ddim", help="a name from `scoresde methods`")
    sp.add_argument("--steps", type=_positive, default=50, help="solver steps (default: %(default)s)")
    sp.add_argument("--grid", help="uniform, quadratic, logsnr, ... (default: the method's own)")
    sp.add_argument(
        "--n",
        "--num-samples",
        dest="n",
        type=_positive,
        default=100,
        help="number of samples (default: %(default)s); under torchrun write --num-samples (torchrun reads --n)",
    )
    sp.add_argument("--seed", type=_seed, default=0, help="seed (default: %(default)s)")
    sp.add_argument(
        "--label",
        help="a labelled model's class (0-9 for digits), 'all' to cycle through the classes, or 'prior' to draw each "
        "sample's from the training frequencies (how a cluster-conditional model samples its data)",
    )
    sp.add_argument(
        "--guidance", type=float, default=0.0, help="guidance weight w >= 0 (classifier-free, or of --guide)"
    )
    sp.add_argument(
        "--guide",
        metavar="CHECKPOINT",
        help="autoguidance: guide with this weaker model (same data, SDE, prediction and labels; smaller or trained "
        "shorter) instead of the null label, out = (1 + w) model - w guide; works for unconditional models too",
    )
    sp.add_argument(
        "--guidance-interval",
        type=_interval,
        help="apply the guidance only at noise levels LO < sigma/alpha <= HI, written LO,HI (HI may be inf)",
    )
    sp.add_argument("--inpaint", help="fill in test images under a mask: left, right, top, bottom, center, random:P")
    sp.add_argument("--resample", type=int, default=1, help="RePaint passes per step (with --inpaint)")
    sp.add_argument("--option", type=_option, action="append", default=[], help="a method option, e.g. eta=1")
    sp.add_argument("--denoise", action="store_true", help="finish with one Tweedie denoising step")
    sp.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of the EMA")
    sp.add_argument("--out", default="samples", help="output stem: <out>.png and the --save files")
    sp.add_argument(
        "--save", action="append", default=[], type=_suffix, help="tensor formats: safetensors, npz (repeatable)"
    )
    sp.add_argument("--force", action="store_true", help="overwrite an existing <out>.png and --save files")
    sp.add_argument("--fitted", help="a folder written by `scoresde fit` (replaces --method, --steps, --grid)")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp.add_argument("--device", type=_device, default="cpu", help="default: %(default)s")
    sp.add_argument(
        "--dtype",
        choices=("float32", "float64", "bfloat16"),
        default="float32",
        help="state and noise dtype; bfloat16: float32 state, the network under bfloat16 autocast (%(default)s)",
    )
    sp.add_argument(
        "--shard-size",
        type=_positive,
        help="write --out as a folder of shards of this many samples with a manifest; a rerun completes it",
    )
    sp.add_argument("--batch-size", type=_positive, help="samples per model batch with --shard-size (default: a shard)")
    sp.add_argument(
        "--check",
        choices=("step", "call", "end"),
        default="step",
        help="test for NaN/inf after every step, every model call, or at the end (%(default)s; one host sync each)",
    )
    sp.set_defaults(func=_sample)

    lk = sub.add_parser("likelihood", help="log-likelihood and bits/dim through the probability-flow ODE")
    lk.add_argument("--problem", help="an exact problem (ring, gmm16, gmm64): errors vs its exact log-density")
    lk.add_argument("--checkpoint", help="a trained checkpoint directory (its test split; digits are dequantised)")
    lk.add_argument("--sde", default="vp", choices=tuple(_SDES), help="for --problem (default: %(default)s)")
    lk.add_argument("--n", type=_positive, help="samples (default 200 for a problem, the whole test split otherwise)")
    lk.add_argument("--trace", default="exact", choices=("exact", "hutchinson"), help="default: %(default)s")
    lk.add_argument(
        "--probe", default="rademacher", choices=("rademacher", "gaussian"), help="Hutchinson probes (%(default)s)"
    )
    lk.add_argument("--probes", type=_positive, default=1, help="Hutchinson probes per sample (%(default)s)")
    lk.add_argument("--rtol", type=float, default=1e-5)
    lk.add_argument("--atol", type=float, default=1e-5)
    lk.add_argument("--t-min", type=float, help="lower end of the integral (default: the SDE's t_min)")
    lk.add_argument("--method", default="dopri5", help="torchdiffeq adaptive method")
    lk.add_argument("--time", default="t", choices=("t", "logsnr"), help="integration variable (%(default)s)")
    lk.add_argument("--batch", type=_positive, help="samples per batch (default all at once)")
    lk.add_argument("--seed", type=_seed, default=0, help="data draw (problems), probes and dequantisation")
    lk.add_argument("--raw-weights", action="store_true", help="checkpoint: the raw weights instead of the EMA")
    lk.add_argument("--device", type=_device, default="cpu", help="default: %(default)s")
    lk.set_defaults(func=_likelihood)

    fl = sub.add_parser("fields", help="score, PF-ODE or reverse-SDE drift field of a 2-D problem or model (PNG, GIF)")
    fl.add_argument("--problem", help="an exact 2-D problem (default: ring)")
    fl.add_argument("--checkpoint", help="a trained 2-D model's checkpoint directory instead of --problem")
    fl.add_argument("--t", type=_csv(float), help="comma-separated times in (0, T] (default: 0.05,0.2,0.5,T)")
    fl.add_argument("--kind", default="score", choices=("score", "pf-drift", "sde-drift"), help="default: %(default)s")
    fl.add_argument("--sde", default="vp", choices=tuple(_SDES), help="for --problem (default: %(default)s)")
    fl.add_argument("--style", default="stream", choices=("stream", "quiver"), help="default: %(default)s")
    fl.add_argument("--lim", type=float, default=4.5, help="plot [-lim, lim]^2 (default: %(default)s)")
    fl.add_argument("--grid-size", type=_at_least_2, default=40, help="grid points a side (default: %(default)s)")
    fl.add_argument("--out", default="fields.png", help="the figure: .png, .pdf or .svg (default: %(default)s)")
    fl.add_argument("--animate", help="also write a GIF of the field over t (from max to min of --t)")
    fl.add_argument("--frames", type=_at_least_2, default=24, help="animation frames (default: %(default)s)")
    fl.add_argument("--force", action="store_true", help="overwrite existing --out / --animate files")
    fl.add_argument("--raw-weights", action="store_true", help="checkpoint: the raw weights instead of the EMA")
    fl.set_defaults(func=_fields)

    ft = sub.add_parser("fit", help="fit a few-step solver (grid and weights) to a checkpoint or an exact problem")
    ft.add_argument("--checkpoint", help="a `scoresde train` folder")
    ft.add_argument("--problem", help="an exact problem instead: ring, gmm16, gmm64, gmm-family:d=D,k=K,seed=S")
    ft.add_argument("--steps", type=_positive, default=5, help="model calls per sample, 2 to 10 (%(default)s)")
    ft.add_argument("--budget", type=_positive, default=40_000, help="sample-evaluations of the fit (%(default)s)")
    ft.add_argument("--out", required=True, help="the folder to write fitted.json and fitted.safetensors to")
    ft.add_argument("--force", action="store_true", help="replace a fitted solver already in --out")
    ft.add_argument("--device", type=_device, default="cpu", help="default: %(default)s")
    ft.add_argument("--raw-weights", action="store_true", help="checkpoint: the raw weights instead of the EMA")
    ft.set_defaults(func=_fit)

    try:
        args = p.parse_args(argv)
    except SystemExit as stop:  # a usage error (2, its one line printed), --help or --version (0)
        return stop.code if isinstance(stop.code, int) else 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
