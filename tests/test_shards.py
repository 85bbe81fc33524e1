"""Resumable sharded sampling (``scoresde sample --shard-size``): a run killed part-way and started again gives the
samples of an uninterrupted run bit for bit; torchrun's ranks share the unfinished shards; a restart with other
inputs is refused; the samples do not depend on the shard size, the batch size or the number of processes."""

import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import scoresde as sd
from scoresde.cli import main
from scoresde.shards import ShardMismatchError, load_shards, open_sharded, share


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shards(folder):
    return sorted(p.name for p in folder.glob("shard-*.safetensors"))


def test_share_gives_every_shard_to_one_rank():
    for pending in ([], [3], list(range(10)), [0, 4, 5, 9, 11]):
        for size in (1, 2, 3, 7):
            parts = [share(pending, r, size) for r in range(size)]
            assert sorted(i for p in parts for i in p) == pending


def test_killed_run_resumes_to_the_same_samples(moons_ckpt, tmp_path):
    """SIGKILL after three shards are written, run the same command again: it skips those, writes the rest, and the
    union equals an uninterrupted run and a plain (unsharded) run bit for bit."""
    args = ["sample", "--checkpoint", str(moons_ckpt), "--num-samples", "1200", "--steps", "30", "--method", "ddpm"]
    args += ["--seed", "7", "--shard-size", "100"]
    cmd = [sys.executable, "-m", "scoresde", *args, "--out", str(tmp_path / "killed")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=_env())
    written = 0
    for line in proc.stdout:
        written += line.startswith("shard ")
        if written == 3:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    before = _shards(tmp_path / "killed")
    assert 3 <= len(before) < 12, before  # killed part-way: some shards exist, not all
    stamps = {n: (tmp_path / "killed" / n).stat().st_mtime_ns for n in before}

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{len(before)} of them already there" in done.stdout
    assert done.stdout.count("shard ") == 12 - len(before)
    assert all((tmp_path / "killed" / n).stat().st_mtime_ns == stamps[n] for n in before)  # not redrawn
    assert not list((tmp_path / "killed").glob(".*.tmp"))

    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    resumed, whole = load_shards(tmp_path / "killed")["x"], load_shards(tmp_path / "whole")["x"]
    assert resumed.shape == (1200, 2) and torch.equal(resumed, whole)
    plain = ["sample", "--checkpoint", str(moons_ckpt), "--num-samples", "1200", "--steps", "30", "--method", "ddpm"]
    assert main([*plain, "--seed", "7", "--out", str(tmp_path / "plain"), "--save", ".safetensors"]) == 0
    assert torch.equal(load_file(str(tmp_path / "plain.safetensors"))["x"], whole)


def test_torchrun_ranks_share_the_shards(moons_ckpt, tmp_path):
    """Two processes (torchrun, gloo) finish a folder from which three shards were removed, writing exactly those,
    and draw a fresh folder with another batch size: both equal one process's run bit for bit."""
    args = ["sample", "--checkpoint", str(moons_ckpt), "--num-samples", "37", "--steps", "4", "--method", "ddpm"]
    args += ["--seed", "5", "--shard-size", "5"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    one = load_shards(tmp_path / "one")
    shutil.copytree(tmp_path / "one", tmp_path / "resumed")
    for i in (1, 2, 6):
        (tmp_path / "resumed" / f"shard-{i:06d}.safetensors").unlink()
    kept = {n: (tmp_path / "resumed" / n).stat().st_mtime_ns for n in _shards(tmp_path / "resumed")}
    run = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    for out, extra in (("resumed", []), ("fresh", ["--batch-size", "2"])):
        cmd = [*run, "--master_port", str(_free_port()), "-m", "scoresde", *args, *extra, "--out", str(tmp_path / out)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env())
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("samples in 8 shards") == 1 and "on 2 processes" in done.stdout
        lines = [ln for ln in done.stdout.splitlines() if "shard " in ln and "->" in ln and "samples in" not in ln]
        assert len(lines) == (3 if out == "resumed" else 8), done.stdout  # each missing shard drawn once
        assert {ln.split()[0] + ln.split()[1] for ln in lines} == {"[rank0]", "[rank1]"}
        got = load_shards(tmp_path / out)
        assert torch.equal(got["x"], one["x"])
    assert all((tmp_path / "resumed" / n).stat().st_mtime_ns == t for n, t in kept.items())


def test_other_inputs_are_refused(moons_ckpt, tmp_path, capsys):
    args = ["sample", "--checkpoint", str(moons_ckpt), "--num-samples", "12", "--steps", "3", "--shard-size", "5"]
    args += ["--out", str(tmp_path / "s")]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args[:-2], "--seed", "1", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "other inputs" in err and "seed: 0 there, 1 now" in err
    assert main([*args, "--dtype", "float64"]) == 2
    assert "dtype" in capsys.readouterr().err
    assert main([*args, "--save", ".npz"]) == 2
    (tmp_path / "s" / "shard-000002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 3 shards are missing"):
        load_shards(tmp_path / "s")
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "shard-000000.safetensors").write_bytes(b"")
    with pytest.raises(ShardMismatchError, match="no manifest"):
        open_sharded(tmp_path / "bare", {}, 10, 5)


def test_sample_shards_from_python(tmp_path):
    """``sample_shards`` on an exact score (named by ``identity``) equals one ``sd.sample`` call."""
    ring, vp = sd.get_problem("ring"), sd.VPSDE()
    kw = dict(method="dpm++2m-sde", steps=5)
    with pytest.raises(ValueError, match="identity"):
        sd.sample_shards(ring.score(vp), vp, (2,), out=tmp_path / "r", num_samples=9, shard_size=4, seed=2, **kw)
    run = sd.sample_shards(
        ring.score(vp),
        vp,
        (2,),
        out=tmp_path / "r",
        num_samples=9,
        shard_size=4,
        seed=2,
        identity="ring",
        batch_size=3,
        **kw,
    )
    assert run.num_shards == 3
    ref = sd.sample(ring.score(vp), vp, (9, 2), seed=2, **kw).x
    assert torch.equal(sd.load_shards(tmp_path / "r")["x"], ref)


def test_class_labels_and_batch_size(tmp_path, capsys, digits_ckpt):
    """``--label all`` in shards: sample ``i`` gets label ``i % 10`` whatever shard it is in, and the samples are the
    plain run's (to the U-Net's batch-size rounding, 1e-9); another ``--batch-size`` on the same folder is refused."""
    from safetensors.torch import load_file

    ckpt = digits_ckpt  # a class-conditional tiny U-Net
    args = ["sample", "--checkpoint", str(ckpt), "--num-samples", "13", "--steps", "3", "--label", "all"]
    args += ["--guidance", "1.5"]
    sharded = [*args, "--shard-size", "5", "--batch-size", "3", "--out", str(tmp_path / "s")]
    assert main(sharded) == 0
    assert main([*args, "--out", str(tmp_path / "plain"), "--save", ".safetensors", "--no-progress"]) == 0
    got, want = load_shards(tmp_path / "s"), load_file(str(tmp_path / "plain.safetensors"))
    assert torch.equal(got["y"], torch.arange(13) % 10) and torch.equal(got["y"], want["y"])
    assert torch.allclose(got["x"], want["x"], rtol=0, atol=1e-6)
    capsys.readouterr()
    assert main([*sharded[:-4], "--batch-size", "5", "--out", str(tmp_path / "s")]) == 2
    assert "batch_size: 3 there, 5 now" in capsys.readouterr().err
