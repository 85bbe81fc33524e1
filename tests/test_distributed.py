"""Sampling over processes: ``torchrun -m scoresde sample`` on CPU (gloo) gives the samples of one process, bit for
bit, and ``sd.sample_distributed`` does the same from Python. Two processes on a 2-core machine: a check of
correctness and overhead, not of speed."""

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

import scoresde as sd
from scoresde.cli import main
from scoresde.distributed import shard
from scoresde.process_group import tear_down


def test_shards_cover_the_samples_once():
    for n in (1, 2, 7, 50):
        for size in (1, 2, 3, 8):
            parts = [shard(n, r, size) for r in range(size)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))
            assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1
    with pytest.raises(ValueError, match="rank"):
        shard(4, 2, 2)


def test_torchrun_sample_equals_one_process(moons_ckpt, tmp_path):
    """``python -m torch.distributed.run --nproc_per_node 2 -m scoresde sample``: rank 0 gathers the two shards and
    alone writes and speaks; the samples equal a one-process run's bit for bit (each sample its own noise)."""
    args = ["sample", "--checkpoint", str(moons_ckpt), "--num-samples", "37", "--steps", "4", "--method", "ddpm"]
    args += ["--seed", "5"]  # torchrun takes --n as an ambiguous prefix of its own options: --num-samples
    assert main([*args, "--out", str(tmp_path / "one"), "--save", ".safetensors"]) == 0
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())]
    cmd += ["-m", "scoresde", *args, "--out", str(tmp_path / "two"), "--save", ".safetensors"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("samples with ddpm") == 1 and "on 2 processes" in done.stdout
    one, two = load_file(str(tmp_path / "one.safetensors"))["x"], load_file(str(tmp_path / "two.safetensors"))["x"]
    assert two.shape == (37, 2) and torch.equal(one, two)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.png", "one.safetensors", "two.png", "two.safetensors"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, size: int, port: int, path: str):
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size)
    try:
        gmm = sd.get_problem("gmm16")
        sde = sd.VPSDE()
        out = sd.sample_distributed(gmm.score(sde), sde, (11, gmm.dim), seed=3, method="dpm++2m-sde", steps=6)
        if rank == 0:
            torch.save(out.x, path)
        else:
            assert out is None
    except BaseException:
        torch.distributed.destroy_process_group()  # the others may never reach the teardown's barrier
        raise
    tear_down()  # no rank exits while another's group is alive (gloo aborts it): scoresde.process_group


def test_sample_distributed_equals_sample(tmp_path):
    """Three processes (spawned, gloo) on an exact score with a stochastic method: rank 0 gets what one
    ``sd.sample`` call gives, bit for bit, though the shards 3 / 4 / 4 are not multiples of anything."""
    path = str(tmp_path / "x.pt")
    mp.spawn(_worker, args=(3, _free_port(), path), nprocs=3, join=True)
    gmm = sd.get_problem("gmm16")
    sde = sd.VPSDE()
    ref = sd.sample(gmm.score(sde), sde, (11, gmm.dim), seed=3, method="dpm++2m-sde", steps=6)
    assert torch.equal(torch.load(path), ref.x)
    with pytest.raises(ValueError, match="generator"):
        sd.sample_distributed(gmm.score(sde), sde, (4, gmm.dim), seed=1, generator=torch.Generator())
