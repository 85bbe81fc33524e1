"""Training under torch.distributed (``torchrun -m scoresde train``, DDP over gloo on the CPU): the loss trajectory of
2 processes equals one process's at the same global batch to float rounding; rank 0 alone writes; a signal to one
rank stops both after the same step with one checkpoint; ``--resume`` under torchrun continues it. Two processes on
a 2-core machine: a check of correctness and overhead, not of speed."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_shards import _env, _free_port
from test_train import TINY_MLP
from test_train_signals import wait_for

from scoresde import checkpoint as ck
from scoresde.process_group import tear_down
from scoresde.train import TrainConfig, train

# constant lr: the test stops a run of 100,000 steps and resumes it with --steps N, which with a cosine schedule would
# change the learning rate of the remaining steps against a one-process run of N steps from the start
CONFIG = dict(
    data="moons", n_train=512, model=TINY_MLP, batch_size=32, lr=3e-3, warmup=5, lr_schedule="constant", plots=False
)
TOL = 1e-5  # the losses are ~1; 1 vs 2 processes differ by ~1e-7 after hundreds of steps (rounding only)


def assert_close_runs(one: ck.Checkpoint, two: ck.Checkpoint) -> None:
    """Same step, losses within TOL at every step, weights and EMA within float rounding."""
    assert one.step == two.step and len(one.extra["losses"]) == len(two.extra["losses"]) == one.step
    diff = max(abs(a - b) for a, b in zip(one.extra["losses"], two.extra["losses"], strict=True))
    assert diff < TOL, diff
    for key in ("model", "ema"):
        sa, sb = getattr(one, key), getattr(two, key)
        assert sa.keys() == sb.keys()
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], rtol=1e-4, atol=1e-5, msg=f"{key} {k}")


def _files(folder: Path) -> list[str]:
    """The names in ``folder``, the checkpoint's content hash left out (the weights differ in the last bits)."""
    return sorted(re.sub(r"-[0-9a-f]{12}\.safetensors$", ".safetensors", p.name) for p in folder.iterdir())


def _torchrun(*args: str) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())]
    return [*cmd, "-m", "scoresde", "train", "--no-progress", *args]


def _rank_pid(launcher: int, rank: int) -> int:
    """The pid of the worker of ``rank`` among the launcher's children (Linux: read from /proc)."""
    for proc in Path("/proc").iterdir():
        try:
            ppid = int(proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == launcher and f"RANK={rank}".encode() in proc.joinpath("environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except (OSError, ValueError, IndexError):  # not a process, or it ended meanwhile
            continue
    raise AssertionError(f"no worker of rank {rank} under pid {launcher}")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers' pids in /proc (Linux)")
def test_torchrun_stops_together_resumes_and_matches_one_process(tmp_path):
    """SIGTERM to rank 1 alone: both ranks stop after the same step (rank 0 learns it from the per-step exchange;
    otherwise it would wait in the next collective), rank 0 writes one checkpoint and says so once; ``--resume`` under
    torchrun takes it 10 steps further; the losses and weights equal a one-process run of as many steps."""
    run, config = tmp_path / "two", tmp_path / "cfg.json"
    config.write_text(json.dumps({**CONFIG, "steps": 100_000, "ckpt_every": 20, "out": str(run)}))
    proc = subprocess.Popen(
        _torchrun("--config", str(config)), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(run / "ckpt.json", proc)  # the first periodic checkpoint: both ranks are in the loop
        subprocess.run(["kill", "-TERM", str(_rank_pid(proc.pid, 1))], check=True)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stopped = ck.load_checkpoint(run)
    assert 20 <= stopped.step < 100_000
    assert err.count(f"stopped by SIGTERM at step {stopped.step} of 100000") == 1, err[-3000:]  # rank 0 speaks
    assert proc.returncode != 0  # the workers exit with 128 + 15, and torchrun reports it
    assert not list(run.glob(".*.tmp"))

    steps = stopped.step + 10
    done = subprocess.run(
        _torchrun("--out", str(run), "--resume", "--steps", str(steps)),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(f"step {steps}: ") == 1 and "over 10 steps" in done.stdout

    train(TrainConfig(**CONFIG, steps=steps, ckpt_every=1000, out=str(tmp_path / "one")), progress=False)
    assert_close_runs(ck.load_checkpoint(tmp_path / "one"), ck.load_checkpoint(run))
    assert _files(run) == _files(tmp_path / "one")


def _worker(rank: int, port: int, folder: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        out = Path(folder) / f"rank{rank}"  # rank 1 is given a folder of its own: it must not write there
        with pytest.raises(ValueError, match="divisible by the 2 processes"):
            train(TrainConfig(**{**CONFIG, "batch_size": 33}, steps=2, out=str(out)), progress=False)
        res = train(TrainConfig(**CONFIG, steps=12, ckpt_every=5, out=str(out)), progress=False)
        assert res.step == 12 and len(res.losses) == 12 and res.interrupted is None
        assert not torch.cuda.is_initialized()  # gloo on the CPU never touches CUDA
        if rank == 0:
            torch.save(res.losses, Path(folder) / "losses.pt")
        else:
            assert not out.exists()
    except BaseException:
        torch.distributed.destroy_process_group()  # the other rank may never reach the teardown's barrier
        raise
    tear_down()  # a bare destroy_process_group let rank 0 exit first, and gloo aborted rank 1 (SIGABRT), 1 run in 10


def test_python_api_in_a_process_group(tmp_path):
    """``sd.train`` in an initialised process group (spawned, gloo): DDP with the losses of one process, only rank 0
    writes, and a global batch that does not divide by the world size is refused on every rank."""
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    one = train(TrainConfig(**CONFIG, steps=12, ckpt_every=5, out=str(tmp_path / "one")), progress=False)
    two = torch.load(tmp_path / "losses.pt")
    assert max(abs(a - b) for a, b in zip(one.losses, two, strict=True)) < TOL
    assert _files(tmp_path / "rank0") == _files(tmp_path / "one")
