"""Training a score network: denoising loss, AdamW, EMA of the weights, checkpoints and exact resumption.

One step (:func:`train`)::

    idx   = the next batch_size indices of a permutation of the data (a new permutation each epoch, drawn
            from the data generator; an incomplete last batch is dropped)
    y     = labels; each replaced by the null class with probability p_uncond (classifier-free guidance,
            Ho & Salimans 2022), drawn from the noise generator
    loss  = denoising_loss(model, sde, x0, y, prediction, t_sampler, weighting)      (scoresde.loss)
    grads clipped to a global norm of grad_clip (0: off); lr_k = lr min(1, (k + 1) / warmup)
    AdamW step (Loshchilov & Hutter 2019), then the EMA  theta_ema <- d_n theta_ema + (1 - d_n) theta,
    n = k + 1 the number of updates so far, with
        ema_schedule "fixed": d_n = ema_decay
        ema_schedule "power": d_n = min(ema_decay, (1 - 1/n)^(ema_power + 1))   (Karras et al. 2024, EDM2,
            power-function EMA), which without the cap averages the iterates with weights
            (n^(p+1) - (n-1)^(p+1)) / N^(p+1), close to proportional to n^p.

Every random draw comes from a generator whose state is checkpointed: ``data`` (permutations), ``noise`` (t,
eps and label dropout, on the training device) and the global RNG inside :func:`torch.random.fork_rng`
(weight initialisation from ``seed`` and dropout layers), so the caller's global RNG is left as it was. A
checkpoint (:mod:`scoresde.checkpoint`) holds the weights, the EMA, the optimiser state, these states, the
current permutation and its position, and the loss history; resuming from it continues bit for bit on the CPU
(same losses, weights, EMA and optimiser state as an uninterrupted run with the same config).

The configuration (:class:`TrainConfig`) comes from keywords, a JSON or TOML file, or the command line
(``scoresde train``), and is saved as ``<out>/config.json``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from . import data as data_mod
from .checkpoint import CheckpointError, has_checkpoint, load_checkpoint, save_checkpoint
from .loss import DEFAULT_T_EPS, PREDICTIONS, T_SAMPLERS, WEIGHTINGS, denoising_loss
from .models import build_model, count_parameters
from .param import DataScore, EpsilonScore, Score, VScore
from .sde import SDE, VESDE, VPSDE, SubVPSDE
from .util import atomic_write_text

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "build_sde",
    "ConditionalModel",
    "make_score",
    "load_score",
    "ema_decay_at",
    "RESUMABLE_CHANGES",
]

SDES = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE}
SCORES = {"eps": EpsilonScore, "x0": DataScore, "v": VScore}
# Fields that may differ between a checkpoint's config and the config that resumes it.
RESUMABLE_CHANGES = ("steps", "ckpt_every", "log_every", "out", "device")


def build_sde(config: dict) -> SDE:
    """An SDE from ``{"name": "vp" | "subvp" | "ve", **constructor kwargs}``, e.g. ``{"name": "vp"}``."""
    if not isinstance(config, dict) or config.get("name") not in SDES:
        raise ValueError(f"sde config must be a dict with 'name' in {tuple(SDES)}, got {config!r}")
    kw = {k: v for k, v in config.items() if k != "name"}
    try:
        return SDES[config["name"]](**kw)
    except TypeError as err:
        raise ValueError(f"bad arguments for sde {config['name']!r}: {err}") from err


def ema_decay_at(n: int, schedule: str, ema_decay: float, ema_power: float) -> float:
    """The EMA decay ``d_n`` of the ``n``-th update (``n >= 1``), module docstring."""
    if schedule == "fixed":
        return ema_decay
    return min(ema_decay, (1.0 - 1.0 / n) ** (ema_power + 1.0))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class TrainConfig:
    """Everything that defines a training run; see the module docstring for what each part does.

    Attributes:
        data: a dataset of :data:`scoresde.data.DATASETS` ("moons", ..., "digits").
        n_train: number of points drawn for a toy set (digits: the fixed train split).
        data_seed: seed of the data draw / split.
        model: ``{"arch": "mlp" | "unet", **kwargs}``; empty: MLP for toy sets, U-Net for digits. ``dim`` /
            ``in_channels`` and ``num_classes`` are filled in from the data.
        class_conditional: train with labels (digits) and label dropout ``p_uncond``.
        prediction: what the network predicts: "eps", "x0" or "v".
        sde: ``{"name": "vp" | "subvp" | "ve", **kwargs}``; default the linear VP SDE (beta 0.1 to 20).
        t_sampler, t_eps, weighting: see :mod:`scoresde.loss`.
        steps, batch_size, lr, weight_decay, warmup, grad_clip: the optimisation (AdamW).
        ema_schedule, ema_decay, ema_power: the EMA of the weights (module docstring).
        seed: seeds the weights, the data order and all noise.
        ckpt_every, log_every: checkpoint and progress-bar cadence in steps (a checkpoint is also written at
            the end).
        out: output directory (checkpoint and ``config.json``).
        device: "cpu", "cuda", "cuda:1", ...
    """

    data: str = "moons"
    n_train: int = 10_000
    data_seed: int = 0
    model: dict = field(default_factory=dict)
    class_conditional: bool = False
    prediction: str = "eps"
    sde: dict = field(default_factory=lambda: {"name": "vp"})
    t_sampler: str = "uniform"
    t_eps: float = DEFAULT_T_EPS
    weighting: str = "unit"
    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: int = 100
    grad_clip: float = 1.0
    ema_schedule: str = "power"
    ema_decay: float = 0.9999
    ema_power: float = 6.94
    p_uncond: float = 0.1
    seed: int = 0
    ckpt_every: int = 500
    log_every: int = 20
    out: str = "runs/default"
    device: str = "cpu"

    def __post_init__(self):
        def bad(name, want):
            raise ValueError(f"TrainConfig.{name} must be {want}, got {getattr(self, name)!r}")

        if self.data not in data_mod.DATASETS:
            bad("data", f"one of {data_mod.DATASETS}")
        for name, lo in (
            ("n_train", 1),
            ("data_seed", 0),
            ("steps", 0),
            ("batch_size", 1),
            ("warmup", 0),
            ("seed", 0),
            ("ckpt_every", 1),
            ("log_every", 1),
        ):
            if not _is_int(getattr(self, name)) or getattr(self, name) < lo:
                bad(name, f"an int >= {lo}")
        for name, ok, want in (
            ("lr", lambda v: v > 0, "a number > 0"),
            ("weight_decay", lambda v: v >= 0, "a number >= 0"),
            ("grad_clip", lambda v: v >= 0, "a number >= 0 (0: no clipping)"),
            ("ema_decay", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
            ("ema_power", lambda v: v >= 0, "a number >= 0"),
            ("p_uncond", lambda v: 0 <= v < 1, "a number in [0, 1)"),
            ("t_eps", lambda v: 0 < v < 1, "a number in (0, 1)"),
        ):
            v = getattr(self, name)
            if not _is_num(v) or not ok(v):
                bad(name, want)
        for name, choices in (
            ("prediction", PREDICTIONS),
            ("t_sampler", T_SAMPLERS),
            ("weighting", WEIGHTINGS),
            ("ema_schedule", ("power", "fixed")),
        ):
            if getattr(self, name) not in choices:
                bad(name, f"one of {choices}")
        if not isinstance(self.class_conditional, bool):
            bad("class_conditional", "true or false")
        if self.class_conditional and data_mod.dataset_info(self.data)["num_classes"] is None:
            bad("class_conditional", f"false for {self.data!r}, which has no labels")
        if not isinstance(self.model, dict) or (self.model and self.model.get("arch") not in ("mlp", "unet")):
            bad("model", "a dict with 'arch' in ('mlp', 'unet') (or empty for the data's default)")
        if not isinstance(self.sde, dict) or self.sde.get("name") not in SDES:
            bad("sde", f"a dict with 'name' in {tuple(SDES)}")
        for name in ("out", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                bad(name, "a non-empty string")

    # --- conversions -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from a dict; unknown keys raise ``ValueError`` naming them and the known ones."""
        if not isinstance(d, dict):
            raise ValueError(f"a training config must be a mapping, got {type(d).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; known keys: {', '.join(known)}")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Read a ``.json`` or ``.toml`` file (TOML needs Python >= 3.11's ``tomllib``)."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {path} does not exist")
        suffix = path.suffix.lower()
        if suffix == ".json":
            try:
                d = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"config file {path} is not valid JSON: {err}") from err
        elif suffix == ".toml":
            try:
                import tomllib
            except ImportError as err:  # Python 3.10
                raise ValueError(f"reading {path} needs Python >= 3.11 (tomllib); use a .json config") from err
            try:
                d = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as err:
                raise ValueError(f"config file {path} is not valid TOML: {err}") from err
        else:
            raise ValueError(f"config file {path}: expected a .json or .toml file")
        return cls.from_dict(d)

    def save(self, path: str | Path) -> None:
        """Write the config as JSON (atomically)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def replace(self, **changes) -> TrainConfig:
        return self.from_dict({**self.to_dict(), **changes})

    def model_config(self) -> dict:
        """The full model config: the data's default architecture, with its shape and classes filled in."""
        info = data_mod.dataset_info(self.data)
        shape = info["shape"]
        cfg = dict(self.model) or {"arch": "unet" if len(shape) == 3 else "mlp"}
        if cfg["arch"] == "mlp":
            cfg.setdefault("dim", math.prod(shape))
        elif len(shape) != 3:
            raise ValueError(f"TrainConfig: the U-Net needs image data (C, H, W); {self.data!r} has shape {shape}")
        else:
            cfg.setdefault("in_channels", shape[0])
        cfg["num_classes"] = info["num_classes"] if self.class_conditional else None
        return cfg


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``losses`` is the whole loss history (including steps before a resume); ``examples_per_s`` counts the
    steps of this call only (checkpoint writes excluded); ``peak_memory_mib`` is the process's peak resident
    set (``ru_maxrss``, CPU; it includes everything the process did before) or CUDA's
    ``max_memory_allocated`` during this call.
    """

    losses: list[float]
    step: int
    steps_run: int
    seconds: float
    examples_per_s: float
    peak_memory_mib: float | None
    memory_kind: str
    out: Path
    model: nn.Module
    ema: nn.Module
    num_parameters: int


class _Batches:
    """Epochs of random permutations, cut into batches; an incomplete last batch is dropped."""

    def __init__(self, n: int, batch_size: int):
        if batch_size > n:
            raise ValueError(f"batch_size {batch_size} exceeds the {n} training examples")
        self.n, self.batch_size = n, batch_size
        self.perm = torch.empty(0, dtype=torch.long)
        self.pos = 0

    def next(self, generator: torch.Generator) -> Tensor:
        if self.pos + self.batch_size > self.perm.numel():
            self.perm = torch.randperm(self.n, generator=generator)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx


def _peak_memory(device: torch.device) -> tuple[float | None, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda-max-allocated"
    try:
        import resource
        import sys
    except ImportError:  # Windows
        return None, "unavailable"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "cpu-maxrss"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_resumable(saved: dict, cfg: TrainConfig, where: Path) -> None:
    # compare in JSON form: a tuple in a config built in Python equals the list read back from config.json
    saved, now = json.loads(json.dumps(saved)), json.loads(json.dumps(cfg.to_dict()))
    diff = sorted(k for k in set(saved) | set(now) if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k))
    if diff:
        detail = "; ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}" for k in diff)
        raise CheckpointError(f"cannot resume from {where}: the config differs in {detail}")


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train (or, with ``resume``, continue training) as described in the module docstring.

    Writes ``<out>/config.json`` and a checkpoint every ``ckpt_every`` steps and at the end. Without
    ``resume`` the output directory must not hold a checkpoint already; with it, it must, and its config
    may differ from ``config`` only in :data:`RESUMABLE_CHANGES`.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"train needs a TrainConfig, got {type(config).__name__}")
    cfg = config
    out = Path(cfg.out)
    device = torch.device(cfg.device)
    ckpt = None
    if resume:
        ckpt = load_checkpoint(out)
        _check_resumable(ckpt.config, cfg, out)
    elif has_checkpoint(out):
        raise ValueError(f"{out} already holds a checkpoint: resume it (resume=True / --resume) or choose another out")
    sde = build_sde(cfg.sde)
    x_all, y_all = data_mod.get_dataset(cfg.data, "train", n=cfg.n_train, seed=cfg.data_seed)
    x_all = x_all.to(device)
    y_all = y_all.to(device) if (cfg.class_conditional and y_all is not None) else None
    batches = _Batches(x_all.shape[0], cfg.batch_size)
    model_cfg = cfg.model_config()
    num_classes = model_cfg["num_classes"]

    fork_devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(cfg.seed)
        model = build_model(model_cfg).to(device)
        ema = copy.deepcopy(model).requires_grad_(False)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        g_data = torch.Generator().manual_seed(cfg.seed)
        g_noise = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        losses: list[float] = []
        start = 0
        if ckpt is not None:
            ckpt.restore(model, ema, optimizer)
            start = ckpt.step
            losses = [float(v) for v in ckpt.extra.get("losses", [])]
            if len(losses) != start:
                raise CheckpointError(f"{ckpt.path}: {len(losses)} recorded losses for {start} steps")
            try:
                g_data.set_state(ckpt.rng_state["data"])
                g_noise.set_state(ckpt.rng_state["noise"])
                torch.set_rng_state(ckpt.rng_state["global"])
                if device.type == "cuda":
                    torch.cuda.set_rng_state(ckpt.rng_state["global_cuda"], device)
                batches.perm = ckpt.extra["perm"].long()
                batches.pos = int(ckpt.extra["pos"])
            except (KeyError, RuntimeError) as err:
                raise CheckpointError(f"{ckpt.path}: missing or invalid generator/loader state ({err})") from err
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.json")

        def save(step: int) -> None:
            rng = {"data": g_data.get_state(), "noise": g_noise.get_state(), "global": torch.get_rng_state()}
            if device.type == "cuda":
                rng["global_cuda"] = torch.cuda.get_rng_state(device)
            save_checkpoint(
                out,
                model=model,
                ema=ema,
                optimizer=optimizer,
                step=step,
                rng_state=rng,
                config=cfg.to_dict(),
                extra={"losses": losses, "perm": batches.perm, "pos": batches.pos},
            )

        bar = None
        if progress and start < cfg.steps:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=start, desc=f"train {cfg.data}", unit="step", dynamic_ncols=True)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        ema_params = list(ema.parameters())
        seconds = 0.0
        _sync(device)
        tic = time.perf_counter()
        for step in range(start, cfg.steps):
            idx = batches.next(g_data).to(device)
            x0 = x_all[idx]
            y = None
            if num_classes is not None:
                y = y_all[idx]
                if cfg.p_uncond > 0:
                    drop = torch.rand(y.shape, generator=g_noise, device=device) < cfg.p_uncond
                    y = torch.where(drop, torch.full_like(y, num_classes), y)
            loss = denoising_loss(
                model,
                sde,
                x0,
                prediction=cfg.prediction,
                y=y,
                generator=g_noise,
                t_sampler=cfg.t_sampler,
                t_eps=cfg.t_eps,
                weighting=cfg.weighting,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup > 0 else cfg.lr
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            d = ema_decay_at(step + 1, cfg.ema_schedule, cfg.ema_decay, cfg.ema_power)
            with torch.no_grad():
                for pe, p in zip(ema_params, model.parameters(), strict=True):
                    pe.lerp_(p, 1.0 - d)
                for be, b in zip(ema.buffers(), model.buffers(), strict=True):
                    be.copy_(b)
            losses.append(float(loss.detach()))
            done = step + 1
            if bar is not None:
                bar.update(1)
                if done % cfg.log_every == 0 or done == cfg.steps:
                    recent = losses[-cfg.log_every :]
                    bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", lr=f"{lr:.2e}")
            if done % cfg.ckpt_every == 0 or done == cfg.steps:
                _sync(device)
                seconds += time.perf_counter() - tic
                save(done)
                tic = time.perf_counter()
        _sync(device)
        seconds += time.perf_counter() - tic
        if bar is not None:
            bar.close()
    model.eval()
    ema.eval()
    steps_run = max(0, cfg.steps - start)
    peak, kind = _peak_memory(device)
    return TrainResult(
        losses=losses,
        step=max(start, cfg.steps),
        steps_run=steps_run,
        seconds=seconds,
        examples_per_s=steps_run * cfg.batch_size / seconds if seconds > 0 else float("nan"),
        peak_memory_mib=peak,
        memory_kind=kind,
        out=out,
        model=model,
        ema=ema,
        num_parameters=count_parameters(model),
    )


# --- using a trained model ----------------------------------------------------------------------------------
class ConditionalModel:
    """``model(x, t)`` for a class-conditional network: fixed labels and optional classifier-free guidance.

    ``out = (1 + w) m(x, t, y) - w m(x, t, null)`` (Ho & Salimans 2022, eq. 6), in one network call on a
    doubled batch when ``w != 0``. Combining outputs is the same as combining eps predictions for every
    parameterisation here, because eps is affine in the output with coefficients that depend only on
    ``(x, alpha, sigma)``: ``eps = a out + b x`` with ``(1 + w) - w = 1``. ``y=None`` (or the null class) is the
    unconditional model.

    Args:
        model: ``model(x, t, y)`` with labels in ``[0, num_classes]`` (``num_classes`` = null class).
        y: an int (every sample) or a ``(batch,)`` long tensor; ``None`` for the null class.
        guidance: ``w >= 0``.
    """

    def __init__(self, model, num_classes: int, y: int | Tensor | None = None, guidance: float = 0.0):
        if not _is_int(num_classes) or num_classes < 1:
            raise ValueError(f"ConditionalModel: num_classes must be a positive int, got {num_classes!r}")
        if not _is_num(guidance) or guidance < 0:
            raise ValueError(f"ConditionalModel: guidance must be a number >= 0, got {guidance!r}")
        if y is not None and not isinstance(y, Tensor) and not (_is_int(y) and 0 <= y <= num_classes):
            raise ValueError(f"ConditionalModel: y must be None, an int in [0, {num_classes}] or a tensor, got {y!r}")
        self.model, self.num_classes, self.y, self.guidance = model, num_classes, y, float(guidance)

    def labels(self, batch: int, device) -> Tensor:
        if self.y is None:
            return torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        if isinstance(self.y, Tensor):
            if self.y.shape != (batch,):
                raise ValueError(f"ConditionalModel: labels of shape {tuple(self.y.shape)}, batch is {batch}")
            return self.y.to(device=device, dtype=torch.long)
        return torch.full((batch,), int(self.y), dtype=torch.long, device=device)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        y = self.labels(x.shape[0], x.device)
        if self.guidance == 0.0:
            return self.model(x, t, y)
        null = torch.full_like(y, self.num_classes)
        cond, uncond = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null])).chunk(2)
        return cond + self.guidance * (cond - uncond)


def make_score(
    model: nn.Module, sde: SDE, prediction: str, y: int | Tensor | None = None, guidance: float = 0.0
) -> Score:
    """The score object of a trained network: :class:`EpsilonScore`, :class:`DataScore` or :class:`VScore` by
    ``prediction``, around a :class:`ConditionalModel` when the network is class-conditional."""
    if prediction not in SCORES:
        raise ValueError(f"prediction must be one of {tuple(SCORES)}, got {prediction!r}")
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        if y is not None or guidance:
            raise ValueError("labels or guidance given for an unconditional model")
        return SCORES[prediction](model, sde)
    return SCORES[prediction](ConditionalModel(model, num_classes, y, guidance), sde)


def load_score(
    directory: str | Path,
    ema: bool = True,
    *,
    y: int | Tensor | None = None,
    guidance: float = 0.0,
    device: str | torch.device = "cpu",
) -> tuple[Score, SDE, TrainConfig, nn.Module]:
    """Load a trained model from its checkpoint directory: ``(score, sde, config, model)``.

    ``ema`` picks the EMA weights (else the raw ones); the model is in eval mode on ``device`` with frozen
    parameters; ``y`` and ``guidance`` go to :class:`ConditionalModel` for a class-conditional model.
    """
    ckpt = load_checkpoint(directory)
    try:
        cfg = TrainConfig.from_dict(ckpt.config)
    except ValueError as err:
        raise CheckpointError(f"{directory}: the stored training config is invalid: {err}") from err
    if ckpt.model_config is None:
        raise CheckpointError(f"{directory}: the checkpoint holds no model config")
    model = build_model(ckpt.model_config)
    if ema and ckpt.ema is None:
        raise CheckpointError(f"{directory}: the checkpoint holds no EMA weights (use ema=False)")
    try:
        model.load_state_dict(ckpt.ema if ema else ckpt.model, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{directory}: weights do not fit the model: {err}") from err
    model = model.to(device).eval().requires_grad_(False)
    sde = build_sde(cfg.sde)
    return make_score(model, sde, cfg.prediction, y, guidance), sde, cfg, model
