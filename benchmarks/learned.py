"""Learned scores end to end: train a 2-D model, two 8x8 digits models and an MNIST model, then measure them.

    python benchmarks/learned.py                 # full size: the targets of the learned-scores issue
    python benchmarks/learned.py --quick         # minutes; the same pipeline at toy sizes
    python benchmarks/learned.py --only 2d       # or: digits, mnist

``--only mnist`` retrains recipe("mnist") from scratch (about 60 min on two idle cores) and scores it beside the
shipped model (``scoresde/weights/mnist``) the same way, saying how close it came (benchmarks/_mnist.py).

Writes under ``--out`` (default ``results/learned``; ``results/learned_quick`` with --quick):

- ``runs/<name>/``: the checkpoints (``scoresde train``'s format; a rerun resumes or reuses them);
- ``<name>_samples.png``: the scatter (2-D) or the image grids (digits: the unconditional model's, and the
  class-conditional model's with guidance w = 1, one row per class) that a person looks at;
- ``learned.json`` / ``learned.md``: training throughput (examples/s, the figure CI machines can compare),
  wall time and peak memory; sample quality against its floor (histogram TV and SWD for 2-D, the
  digit-classifier FD for digits, FD and class accuracy of guided samples).

Then ``scoresde bench --problems learned:<out>/runs/<name>`` runs every method and peer on these models.
Threads: the script keeps torch's default (2 on the 2-core machines it targets).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import _mnist  # benchmarks/_mnist.py, beside this script
import torch
from _toy import tv_floor

import scoresde as sd
from scoresde import metrics
from scoresde.bench import LearnedProblem
from scoresde.plot import save_image_grid, save_points
from scoresde.train import TrainConfig, draw_labels, load_score, make_score, train
from scoresde.train.pretrained import label_counts
from scoresde.train.recipes import recipe
from scoresde.util import atomic_write_text

# The recipes are scoresde.train.recipes' table, the one `scoresde train --data ...` uses by default; the reasons
# and the equal-time variants behind each are in docs/guides/training.md. The digits U-Net is at base width 64 with
# EDM's noise levels moved up (log(sigma / alpha) ~ N(-0.4, 1.4^2)): equal-time proxies, FD / floor as the mean of 3
# sampling seeds: width 32, EDM's levels, 20,000 steps 1.96; width 32, N(-0.4, 1.4^2), 10,000 steps 1.91; width 64,
# N(-0.4, 1.4^2), 5,400 steps 1.74; conditioning the unconditional model on 20 k-means clusters of the pixels,
# sampled with clusters drawn from their training frequencies (Bao et al. 2022), 1.79 -> 1.64. Two digits models: an
# unconditional one for the unconditional figure (sampled through the null label, a class-conditional model trained
# with p_uncond = 0.1 gave FD 3.36x its floor where its class-conditional samples gave 1.62x), and a
# class-conditional one for guidance, scored with labels cycling through the classes. The 2-D recipe: v prediction
# (with eps prediction the MLP flung DDIM samples out to |x| = 125), batch 1,024 at lr 2e-3, 256 Fourier
# frequencies, bfloat16 autocast, 6,000 steps: a histogram TV of 1.53x its floor without the final denoising step,
# where 10,000 steps of batch 256 with 64 frequencies stopped at 1.70x.
FULL = {
    "2d": recipe("checkerboard").settings,
    "digits-uncond": recipe("digits").settings,
    "digits": recipe("digits", class_conditional=True).settings,
    "mnist": recipe("mnist").settings,
}
RECIPE_OF = {
    "2d": recipe("checkerboard"),
    "digits-uncond": recipe("digits"),
    "digits": recipe("digits", True),
    "mnist": recipe("mnist"),
}
QUICK_STEPS = {"2d": 300, "digits-uncond": 150, "digits": 150, "mnist": 20}
SEEDS = (0, 1, 2)  # sampling seeds of every digits figure
# Guidance only at noise levels lo < sigma / alpha <= hi (Kynkaenniemi et al. 2024). Their interval for EDM2,
# (0.28, 5.42], cost the class-conditional digits model FD and bought it no accuracy above sigma / alpha = 2
# (w = 1 in (2, 5.42] alone: FD 1.88x its floor on sampling seed 0, no guidance 1.51x, accuracy 0.994 and 0.993).
# The interval kept is theirs with its top moved down to 2: screened on the training-seed-0 model (sampling seed 0:
# (0.28, 2], (0.1, 2], (0.28, 1], (0.1, 1], (1, 5.42], (2, 5.42]), chosen on seeds 0-2 as the one with the most
# accuracy to spare of those above 0.99 ((0.28, 2], (0.1, 2], (0.28, 1]), and held out on a second training seed
# (`benchmarks/guidance_interval.py`; the table in docs/guides/conditioning.md).
EDM2_INTERVAL = (0.28, 5.42)
GUIDANCE_INTERVAL = (0.28, 2.0)


def recipe_dtype(name: str, saved: Path | None = None) -> str:
    """The dtype ``name`` trains in: a run already in ``saved`` keeps its own (so it resumes on any machine); a
    new run takes the recipe's (bfloat16 where the CPU has bfloat16 kernels, float32 where it has not: bfloat16 runs
    about 20x slower there, :meth:`scoresde.train.recipes.Recipe.config`)."""
    if saved is not None and (saved / "config.json").is_file():
        return TrainConfig.from_saved(saved / "config.json").dtype
    return RECIPE_OF[name].config().dtype


def _train(name: str, out: Path, quick: bool) -> tuple[dict, dict]:
    kw = dict(FULL[name])
    if quick:
        kw["steps"] = QUICK_STEPS[name]
    kw["dtype"] = recipe_dtype(name, out / "runs" / name)
    cfg = TrainConfig(**kw, ckpt_every=500, log_every=50, out=str(out / "runs" / name))
    done = Path(cfg.out, "ckpt.json").exists()
    t0 = time.perf_counter()
    res = train(cfg, resume=done, progress=sys.stderr.isatty())
    info = {
        "data": cfg.data,
        "steps": res.step,
        "steps_this_run": res.steps_run,
        "batch_size": cfg.batch_size,
        "dtype": cfg.dtype,
        "parameters": res.num_parameters,
        "train_seconds": round(res.seconds, 1),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "examples_per_s": round(res.examples_per_s, 1),
        "peak_memory_mib": None if res.peak_memory_mib is None else round(res.peak_memory_mib),
        "final_loss_mean_50": sum(res.losses[-50:]) / len(res.losses[-50:]),
        "threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    timing = Path(cfg.out, "train_timing.json")  # the run that trained it; a rerun that only resumes keeps it
    if res.steps_run > 0:
        atomic_write_text(timing, json.dumps(info, indent=1))
    elif timing.exists():
        info = {**json.loads(timing.read_text()), "steps_this_run": 0}
    return info, cfg.to_dict()


def _two_d(out: Path, quick: bool) -> dict:
    """Histogram TV (100,000 samples, 48 x 48 bins over [-2.6, 2.6]^2) against fresh exact data, next to its
    floor; the global SWD on 20,000 of them next to its floor (the figure used before the TV).

    The samples end with one Tweedie denoising step (``denoise=True``: ``x <- E[x0 | x_tmin]``, one model call,
    counted in the NFE; the reference sampler's ``noise_removal``), since they are compared with clean data:
    stopping at ``t_min = 1e-3`` leaves noise of std 0.0105, which alone takes exact data from 0.039 to 0.050
    (1.24x the floor). The same run without the step is reported beside them.
    """
    info, _ = _train("2d", out, quick)
    prob = LearnedProblem(str(out / "runs" / "2d"))
    score = prob.score(prob.sde)
    n = 10_000 if quick else 100_000
    n_swd = min(n, 20_000)
    ref = sd.data.toy_2d(prob.data, n, seed=40_001)
    rows = {}
    method = "dpm++2m"
    for steps, denoise in ((9, True), (49, True), (50, False)):
        if quick and steps != 49:
            continue
        s = sd.sample(score, prob.sde, (n, 2), method=method, steps=steps, seed=0, denoise=denoise)
        t_end = 0.0 if denoise else float(s.times[-1])
        q = prob.quality(s.x[:n_swd], prob.sde, t_end, seed=7)
        name = f"{method}-{s.nfe}" + ("" if denoise else ", no denoising step")
        rows[name] = {"tv": metrics.histogram_tv(s.x, ref), "swd": q["swd"], "nfe": s.nfe, "t_end": t_end}
        if steps == 49:
            save_points(
                s.x[:20_000],
                out / "2d_samples.png",
                reference=ref[:20_000],
                title=f"{prob.data}: {method}, {s.nfe} NFE",
            )
    tv_mean, tv_std = tv_floor(prob.data, n, 3 if quick else 5)
    # the problem's own floors are at n_swd points (its tv too); the TV floor here is at n. The SWD floor of the
    # denoised rows is between clean sets, that of the row without the step between sets noised to t_min
    swd_floors = {t: prob.floors(prob.sde, t, n_swd, 5) for t in {r["t_end"] for r in rows.values()}}
    floors = {**swd_floors[0.0], "tv_floor": tv_mean, "tv_floor_std": tv_std}
    for r in rows.values():
        r["tv_over_floor"] = r["tv"] / tv_mean
        r["swd_over_floor"] = r["swd"] / swd_floors[r["t_end"]]["swd_floor"]
    return {"train": info, "n": n, "n_swd": n_swd, "floors": floors, "samples": rows}


def _digits(out: Path, quick: bool) -> dict:
    """Unconditional FD at 10 / 25 / 50 NFE (the unconditional model: with clusters, each sample's cluster drawn
    from the training frequencies with the sampling seed, and its null label at the largest NFE beside them);
    guided FD and class accuracy at 50 NFE with w = 0, 1, 3, and w = 1 and 3 with the guidance limited to
    ``GUIDANCE_INTERVAL`` (w = 1 also to ``EDM2_INTERVAL``; the class-conditional model, labels cycling through the
    classes), and that model's null-label FD for comparison. FD against the test split, floor: the train split
    against it, both at n = 1,437. Every figure is the mean over ``SEEDS`` sampling seeds, with their standard
    deviation: one draw of 1,437 samples moves the FD by about 0.1 of its floor (more for a cluster model)."""
    from scoresde.models.classifier import digit_accuracy, digit_classifier

    info, _ = _train("digits-uncond", out, quick)
    info_cond, _ = _train("digits", out, quick)
    n = 1437  # the train split's size: the FD floor is test vs train
    method = "dpm++2m"
    seeds = SEEDS if not quick else SEEDS[:1]
    clf = digit_classifier()
    prob = LearnedProblem(str(out / "runs" / "digits-uncond"))
    floors = prob.floors(prob.sde, prob.sde.t_min, n, 3)

    def measure(problem, score, sde, steps, y=None, grid=None):
        """``score``: a score, or ``seed -> score`` (the cluster model, whose labels are drawn with the seed)."""
        fds, accs = [], []
        for seed in seeds:
            sc = score if isinstance(score, sd.Score) else score(seed)
            s = sd.sample(sc, sde, (n, 1, 8, 8), method=method, steps=steps, seed=seed, denoise=False)
            fds.append(problem.quality(s.x, sde, float(s.times[-1]), seed=7)["fd"])
            if y is not None:
                accs.append(digit_accuracy(s.x, y, clf))
            if grid is not None and seed == seeds[0]:
                order = torch.arange(100) if y is None else torch.argsort(y[:100], stable=True)
                save_image_grid(s.x[:100][order], out / grid, nrow=10)
        fd = torch.tensor(fds, dtype=torch.float64) / floors["fd_floor"]
        row = {
            "fd": sum(fds) / len(fds),
            "fd_over_floor": float(fd.mean()),
            "fd_over_floor_std": float(fd.std()) if len(fds) > 1 else 0.0,
            "fd_over_floor_seeds": [round(float(v), 4) for v in fd],
            "nfe": s.nfe,
        }
        return row | ({"accuracy": sum(accs) / len(accs)} if accs else {})

    rows = {}
    counts = label_counts(out / "runs" / "digits-uncond") if prob.config.clusters else None

    def uncond(seed):  # the data's law: each sample's cluster drawn from the training frequencies with the seed
        return make_score(prob.model, prob.sde, prob.config.prediction, y=draw_labels(counts, n, seed))

    for steps in (10, 25, 50) if not quick else (10,):
        grid = "digits_uncond_samples.png" if steps == (10 if quick else 50) else None
        rows[f"{method}-{steps}"] = measure(
            prob, uncond if prob.config.clusters else prob.score(prob.sde), prob.sde, steps, grid=grid
        )
    if prob.config.clusters:  # the same network through its null label: what the clusters add
        rows[f"{method}-{steps}, null label"] = measure(prob, prob.score(prob.sde), prob.sde, steps)
    run = out / "runs" / "digits"
    cond = LearnedProblem(str(run))
    steps = 10 if quick else 50
    guided = {"null label": measure(cond, cond.score(cond.sde), cond.sde, steps)}
    y = torch.arange(n) % 10
    settings = [(0.0, None), (1.0, None), (1.0, EDM2_INTERVAL), (1.0, GUIDANCE_INTERVAL)]
    for w, interval in settings + [(3.0, None), (3.0, GUIDANCE_INTERVAL)]:
        score, sde, _, _ = load_score(run, y=y, guidance=w, guidance_interval=interval)
        name = f"w={w:g}" + ("" if interval is None else f", sigma/alpha in ({interval[0]:g}, {interval[1]:g}]")
        grid = "digits_guided_samples.png" if (w, interval) == (1.0, GUIDANCE_INTERVAL) else None
        guided[name] = measure(cond, score, sde, steps, y=y, grid=grid)
    return {
        "train": info,
        "train_cond": info_cond,
        "n": n,
        "method": method,
        "seeds": list(seeds),
        "floors": floors,
        "samples": rows,
        "guided": guided,
    }


def _mnist_run(out: Path, quick: bool, shipped_only: bool = False) -> dict:
    """recipe("mnist") trained here and the shipped model, scored the same way (benchmarks/_mnist.py): FD / floor
    at n = 2,000 (unconditional with ``dpm++2m`` at 10, 20, 50 NFE, ``ddpm`` and ``dpm++2m-sde`` at 50; guided at
    50) and how close the new run came to the shipped one. ``shipped_only``: the shipped model alone, nothing
    trained (its training record is its checkpoint's)."""
    from scoresde.checkpoint import load_checkpoint
    from scoresde.train.shipped import shipped_checkpoint

    n, seeds, steps = (200, (0,), (5,)) if quick else (2000, (0,), (10, 20, 50))
    where = shipped_checkpoint("mnist")
    shipped = _mnist.evaluate(where, n, seeds, steps, GUIDANCE_INTERVAL, out, "mnist_shipped")
    if shipped_only:  # what its checkpoint says of its training; the time is in docs/guides/training.md
        ckpt = load_checkpoint(where)
        losses = ckpt.extra["losses"]
        info = {
            "data": "mnist",
            "shipped": str(where),
            "steps": ckpt.step,
            "batch_size": ckpt.config["batch_size"],
            "dtype": ckpt.config["dtype"],
            "parameters": sum(v.numel() for v in ckpt.model.values()),
            "final_loss_mean_50": sum(losses[-50:]) / len(losses[-50:]),
        }
        return {"train": info, **shipped}
    info, _ = _train("mnist", out, quick)
    new = _mnist.evaluate(out / "runs" / "mnist", n, seeds, steps, GUIDANCE_INTERVAL, out, "mnist")
    return {"train": info, **new, "shipped": shipped, "closeness": _mnist.closeness(new, shipped)}


def _ratio(q: dict, k: str) -> str:
    """``q``'s metric ``k`` over its floor, with the spread over sampling seeds where there is one."""
    std = q.get(f"{k}_over_floor_std")
    return f"{q[f'{k}_over_floor']:.2f}" + ("" if std is None else f" +- {std:.2f}")


def _markdown(res: dict) -> str:
    lines = ["# Learned scores\n"]
    for name, r in res.items():
        lines.append(f"## {name} ({r['train']['data']})\n")
        for label, key in (("unconditional model", "train"), ("class-conditional model", "train_cond")):
            if key not in r:
                continue
            t = r[key]
            if "shipped" in t:
                lines.append(
                    f"the shipped model ({t['shipped']}): {t['steps']} steps x batch {t['batch_size']}, "
                    f"{t['parameters']:,} parameters, {t['dtype']}, final loss {t['final_loss_mean_50']:.4f} (its "
                    "training time: docs/guides/training.md)\n"
                )
                continue
            lines.append(
                f"{label if 'train_cond' in r else 'training'}: {t['steps']} steps x batch {t['batch_size']}, "
                f"{t['parameters']:,} parameters, {t.get('dtype', 'bfloat16')}, {t['examples_per_s']} examples/s on "
                f"{t['threads']} threads, "
                f"{t['train_seconds']} s, peak memory {t['peak_memory_mib']} MiB, final loss "
                f"{t['final_loss_mean_50']:.4f}; load average while training {t.get('load_average', 'not recorded')} "
                f"on {os.cpu_count()} cores\n"
            )
        f = r["floors"]
        keys = ("fd",) if name in ("digits", "mnist") else ("tv", "swd")
        for key in keys:
            size = r.get("n_swd", r["n"]) if key == "swd" else r["n"]
            lines.append(f"{key} floor (n = {size}): {f[f'{key}_floor']:.4g} +- {f[f'{key}_floor_std']:.2g}\n")
        if "seeds" in r:
            lines.append(f"each figure: mean +- std over sampling seeds {r['seeds']}\n")
        head = " | ".join(f"{k} | / floor" for k in keys)
        lines += [f"| run | NFE | {head} |", "|---|---:|" + "---:|---:|" * len(keys)]
        for run, q in r["samples"].items():
            vals = " | ".join(f"{q[k]:.4g} | {_ratio(q, k)}" for k in keys)
            lines.append(f"| {run} | {q['nfe']} | {vals} |")
        if "guided" in r:
            lines += ["", "class-conditional model, labels cycling through the classes:", ""]
            lines += ["| guidance | NFE | class accuracy | fd | / floor |", "|---|---:|---:|---:|---:|"]
            for k, v in r["guided"].items():
                acc = f"{v['accuracy']:.3f}" if "accuracy" in v else "-"
                fd = f"{v['fd']:.4g} | {_ratio(v, 'fd')}" if "fd" in v else "- | -"
                lines.append(f"| {k} | {v['nfe']} | {acc} | {fd} |")
        if "closeness" in r:
            lines += ["", "this run against the shipped model, scored the same way (FD / floor; class accuracy):", ""]
            lines += ["| run | this run | shipped |", "|---|---:|---:|"]
            for k, v in r["closeness"].items():
                acc = f"; {v['accuracy']:.3f}" if "accuracy" in v else ""
                ref = f"; {v['shipped_accuracy']:.3f}" if "accuracy" in v else ""
                lines.append(f"| {k} | {v['fd_over_floor']:.2f}{acc} | {v['shipped']:.2f}{ref} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", choices=("2d", "digits", "mnist"))
    p.add_argument("--shipped", action="store_true", help="mnist: score the shipped model alone, train nothing")
    p.add_argument("--out")
    args = p.parse_args(argv)
    out = Path(args.out or ("results/learned_quick" if args.quick else "results/learned"))
    out.mkdir(parents=True, exist_ok=True)
    new = {}
    if args.only in (None, "2d"):
        new["2d"] = _two_d(out, args.quick)
    if args.only in (None, "digits"):
        new["digits"] = _digits(out, args.quick)
    if args.only in (None, "mnist"):
        new["mnist"] = _mnist_run(out, args.quick, args.shipped)
    previous = out / "learned.json"  # read at the end: `--only 2d` and `--only digits` may run side by side
    res = {k: v for k, v in json.loads(previous.read_text()).items() if k in FULL} if previous.exists() else {}
    res = {**res, **new}
    res_all = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **res}
    atomic_write_text(out / "learned.json", json.dumps(res_all, indent=1))
    md = _markdown(res)
    atomic_write_text(out / "learned.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
