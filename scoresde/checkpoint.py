"""Training checkpoints: tensors in safetensors, everything else in a JSON sidecar, both written atomically.

A checkpoint directory holds::

    ckpt.json                             the sidecar: the commit record of the checkpoint
    ckpt-<step>-<sha256[:12]>.safetensors every tensor: model weights ("model.<name>"), EMA weights
                                          ("ema.<name>"), optimiser tensors ("optim.state.<i>.<key>",
                                          "optim.group.<i>.<key>"), generator states ("rng.<name>", uint8)
                                          and tensors of ``extra`` ("extra.<name>")

The sidecar records the format and its version, the step, the data file's name, byte size and SHA-256, the
optimiser's non-tensor state and param groups, the training and model configs, the JSON part of ``extra``
(e.g. the loss history), and the SHA-256 of its own canonical content.

Writing (:func:`save_checkpoint`) goes: data file (temp file, fsync, ``os.replace``), then the sidecar the same
way, then the data files of older checkpoints (and temp files of crashed saves) are removed. The sidecar's
replacement is the commit: a crash at any point leaves ``ckpt.json`` naming a complete data file, the previous
one until the new sidecar is in place. The data file's name carries its hash, so saving the same state twice
rewrites identical bytes.

Reading (:func:`load_checkpoint`) checks, in order, and raises :class:`CheckpointError` (a ``ValueError``)
with a message naming the problem: a missing directory, sidecar or data file; a sidecar that is not valid
JSON or whose own hash does not match; another format or version; a data file of the wrong size
(truncated) or hash (corrupt); weights whose names or shapes differ from the architecture in the model
config (or from a model passed in).

This module sits at the bottom of the import floors: it imports torch, safetensors and, lazily, the model
registry (to check weights against a config).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from .util import atomic_write_bytes, atomic_write_text

__all__ = ["CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint", "has_checkpoint", "SIDECAR"]

FORMAT = "scoresde-checkpoint"
VERSION = 1
SIDECAR = "ckpt.json"
_DATA_GLOB = "ckpt-*.safetensors"
_TEMP_GLOB = ".ckpt-*.tmp"  # scoresde.util.atomic_write_bytes names its temp files ".<name>.<random>.tmp"


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupt, of another format version, or of another architecture."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns; state dicts are ready for ``load_state_dict``."""

    step: int
    model: dict[str, Tensor]
    ema: dict[str, Tensor] | None
    optimizer: dict | None
    rng_state: dict[str, Tensor]
    config: dict
    extra: dict
    model_config: dict | None
    path: Path
    sidecar: dict = field(repr=False, default_factory=dict)

    def restore(
        self, model: nn.Module, ema: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None
    ) -> None:
        """Load the weights (strictly), the EMA weights and the optimiser state into existing objects."""
        pairs = [("model", model, self.model)]
        if ema is not None:
            if self.ema is None:
                raise CheckpointError(f"{self.path}: holds no EMA weights to restore")
            pairs.append(("ema", ema, self.ema))
        for name, module, state in pairs:
            try:
                module.load_state_dict(state, strict=True)
            except RuntimeError as err:
                raise CheckpointError(f"{self.path}: {name} weights do not fit the model: {err}") from err
        if optimizer is not None:
            if self.optimizer is None:
                raise CheckpointError(f"{self.path}: holds no optimiser state to restore")
            try:
                optimizer.load_state_dict(self.optimizer)
            except (ValueError, KeyError, RuntimeError) as err:
                raise CheckpointError(f"{self.path}: optimiser state does not fit the optimiser: {err}") from err


# --- JSON encoding of the optimiser's non-tensor state ------------------------------------------------------
def _to_json(v: Any, where: str) -> Any:
    """JSON form of a (nested) Python value; tuples become ``{"__tuple__": [...]}`` so they come back as tuples."""
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            return {"__float__": repr(v)}
        return v
    if isinstance(v, tuple):
        return {"__tuple__": [_to_json(u, where) for u in v]}
    if isinstance(v, list):
        return [_to_json(u, where) for u in v]
    if isinstance(v, dict):
        if not all(isinstance(k, str) for k in v):
            raise ValueError(f"{where}: dict keys must be strings for JSON, got {list(v)!r}")
        return {k: _to_json(u, where) for k, u in v.items()}
    raise ValueError(f"{where}: cannot store a value of type {type(v).__name__} in the JSON sidecar")


def _from_json(v: Any) -> Any:
    if isinstance(v, list):
        return [_from_json(u) for u in v]
    if isinstance(v, dict):
        if set(v) == {"__tuple__"}:
            return tuple(_from_json(u) for u in v["__tuple__"])
        if set(v) == {"__float__"}:
            return float(v["__float__"])
        return {k: _from_json(u) for k, u in v.items()}
    return v


def _state_dict(obj: nn.Module | dict | None, what: str) -> dict[str, Tensor] | None:
    if obj is None:
        return None
    sd = obj.state_dict() if isinstance(obj, nn.Module) else obj
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ValueError(f"save_checkpoint: {what} must be an nn.Module or a dict of tensors")
    return sd


def _canonical(payload: dict) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


# --- saving ---------------------------------------------------------------------------------------------------
def save_checkpoint(
    directory: str | Path,
    *,
    model: nn.Module | dict[str, Tensor],
    ema: nn.Module | dict[str, Tensor] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    step: int,
    rng_state: dict[str, Tensor] | None = None,
    config: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint into ``directory`` atomically (module docstring); returns the data file's path.

    Args:
        model, ema: modules (or state dicts); a module's ``config`` attribute is kept as the model config.
        optimizer: its ``state_dict()``: tensors go to the data file, the rest to the sidecar.
        step: the number of completed training steps.
        rng_state: generator states by name (``torch.Generator.get_state()``, uint8 tensors).
        config: the training configuration (JSON-serialisable).
        extra: anything else: tensors go to the data file, other values (JSON-serialisable) to the sidecar.
    """
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"save_checkpoint: step must be a non-negative int, got {step!r}")
    directory = Path(directory)
    tensors: dict[str, Tensor] = {}
    for prefix, sd in (("model", _state_dict(model, "model")), ("ema", _state_dict(ema, "ema"))):
        for k, v in (sd or {}).items():
            tensors[f"{prefix}.{k}"] = v
    optim_meta = None
    if optimizer is not None:
        osd = optimizer.state_dict()
        state_meta: dict[str, dict] = {}
        for pid, st in osd["state"].items():
            state_meta[str(pid)] = {}
            for k, v in st.items():
                if isinstance(v, Tensor):
                    tensors[f"optim.state.{pid}.{k}"] = v
                else:
                    state_meta[str(pid)][k] = _to_json(v, f"optimizer state {pid}.{k}")
        groups = []
        for i, grp in enumerate(osd["param_groups"]):
            g = {}
            for k, v in grp.items():
                if isinstance(v, Tensor):
                    tensors[f"optim.group.{i}.{k}"] = v
                else:
                    g[k] = _to_json(v, f"optimizer param group {i}.{k}")
            groups.append(g)
        optim_meta = {"state": state_meta, "param_groups": groups}
    for k, v in (rng_state or {}).items():
        if not isinstance(v, Tensor) or v.dtype != torch.uint8:
            raise ValueError(f"save_checkpoint: rng_state[{k!r}] must be a uint8 tensor (Generator.get_state())")
        tensors[f"rng.{k}"] = v
    extra_json = {}
    for k, v in (extra or {}).items():
        if isinstance(v, Tensor):
            tensors[f"extra.{k}"] = v
        else:
            extra_json[k] = _to_json(v, f"extra[{k!r}]")
    # safetensors wants contiguous CPU tensors that share no memory
    data = st_save({k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()})
    sha = hashlib.sha256(data).hexdigest()
    name = f"ckpt-{step:09d}-{sha[:12]}.safetensors"
    model_config = getattr(model, "config", None) if isinstance(model, nn.Module) else None
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "step": step,
        "file": name,
        "bytes": len(data),
        "sha256": sha,
        "model_config": _to_json(model_config, "model.config"),
        "has_ema": ema is not None,
        "optimizer": optim_meta,
        "rng": sorted(rng_state or {}),
        "config": _to_json(config or {}, "config"),
        "extra": extra_json,
        "torch": torch.__version__,
    }
    payload["sidecar_sha256"] = hashlib.sha256(_canonical(payload)).hexdigest()
    atomic_write_bytes(directory / name, data)
    atomic_write_text(directory / SIDECAR, json.dumps(payload, indent=1) + "\n")  # the commit
    for old in [*directory.glob(_DATA_GLOB), *directory.glob(_TEMP_GLOB)]:
        if old.name != name:  # older checkpoints, and temp files of saves that crashed
            old.unlink(missing_ok=True)
    return directory / name


# --- loading --------------------------------------------------------------------------------------------------
def has_checkpoint(directory: str | Path) -> bool:
    """Whether ``directory`` holds a checkpoint sidecar (it may still fail :func:`load_checkpoint`'s checks)."""
    return (Path(directory) / SIDECAR).is_file()


def _read_sidecar(directory: Path) -> dict:
    side = directory / SIDECAR
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoint: directory {directory} does not exist")
    if not side.is_file():
        raise CheckpointError(f"no checkpoint in {directory}: the sidecar {SIDECAR} is missing")
    try:
        payload = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"corrupt checkpoint sidecar {side}: not valid JSON ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{side} is not a scoresde checkpoint (format {FORMAT!r} expected)")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{side}: checkpoint format version {payload.get('version')!r}, this scoresde reads version {VERSION}"
        )
    claimed = payload.pop("sidecar_sha256", None)
    if claimed != hashlib.sha256(_canonical(payload)).hexdigest():
        raise CheckpointError(f"corrupt checkpoint sidecar {side}: its content does not match its recorded hash")
    for key in ("step", "file", "bytes", "sha256"):
        if key not in payload:
            raise CheckpointError(f"{side}: required field {key!r} is missing")
    return payload


def _check_shapes(what: str, got: dict[str, Tensor], want: dict[str, Tensor], path: Path) -> None:
    missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    wrong = [
        f"{k}: {tuple(got[k].shape)} vs {tuple(want[k].shape)}"
        for k in want
        if k in got and got[k].shape != want[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            parts.append(f"shape mismatch (checkpoint vs model) {wrong[:5]}")
        raise CheckpointError(f"{path}: {what} weights do not match the architecture: {'; '.join(parts)}")


def load_checkpoint(directory: str | Path, *, model: nn.Module | None = None) -> Checkpoint:
    """Read and verify the checkpoint in ``directory`` (module docstring).

    The weights are checked against ``model`` if given, else against a network built (on the meta device,
    without allocating) from the model config stored in the checkpoint, when there is one. Tensors come
    back on the CPU (``load_state_dict`` copies them to the model's device).
    """
    directory = Path(directory)
    payload = _read_sidecar(directory)
    path = directory / str(payload["file"])
    if not path.is_file():
        raise CheckpointError(f"checkpoint data file {path} named by {directory / SIDECAR} is missing")
    data = path.read_bytes()
    if len(data) != payload["bytes"]:
        raise CheckpointError(
            f"truncated or damaged checkpoint {path}: {len(data)} bytes, the sidecar records {payload['bytes']}"
        )
    if hashlib.sha256(data).hexdigest() != payload["sha256"]:
        raise CheckpointError(f"corrupt checkpoint {path}: its SHA-256 does not match the one in the sidecar")
    try:
        tensors = st_load(data)
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"corrupt checkpoint {path}: not a readable safetensors file ({err})") from err
    groups: dict[str, dict[str, Tensor]] = {"model": {}, "ema": {}, "optim": {}, "rng": {}, "extra": {}}
    for k, v in tensors.items():
        prefix, _, rest = k.partition(".")
        if prefix not in groups:
            raise CheckpointError(f"{path}: unexpected tensor {k!r}")
        groups[prefix][rest] = v
    model_config = _from_json(payload.get("model_config"))
    if model is not None:
        reference = model.state_dict()
    elif model_config is not None:
        from .models import build_model

        try:
            with torch.device("meta"):
                reference = build_model(model_config).state_dict()
        except ValueError as err:
            raise CheckpointError(f"{path}: its model config cannot be built: {err}") from err
    else:
        reference = None
    if reference is not None:
        _check_shapes("model", groups["model"], reference, path)
        if payload.get("has_ema"):
            _check_shapes("EMA", groups["ema"], reference, path)
    optimizer = None
    meta = payload.get("optimizer")
    if meta is not None:
        state: dict[int, dict] = {int(pid): dict(_from_json(m)) for pid, m in meta["state"].items()}
        param_groups = [dict(_from_json(g)) for g in meta["param_groups"]]
        for k, v in groups["optim"].items():
            kind, idx, key = k.split(".", 2)
            if kind == "state":
                state.setdefault(int(idx), {})[key] = v
            elif kind == "group":
                param_groups[int(idx)][key] = v
            else:
                raise CheckpointError(f"{path}: unexpected optimiser tensor {k!r}")
        optimizer = {"state": state, "param_groups": param_groups}
    extra = dict(_from_json(payload.get("extra") or {}))
    extra.update(groups["extra"])
    return Checkpoint(
        step=int(payload["step"]),
        model=groups["model"],
        ema=groups["ema"] if payload.get("has_ema") else None,
        optimizer=optimizer,
        rng_state=groups["rng"],
        config=_from_json(payload.get("config") or {}),
        extra=extra,
        model_config=model_config,
        path=path,
        sidecar=payload,
    )
