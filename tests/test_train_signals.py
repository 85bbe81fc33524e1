"""Long runs: SIGINT / SIGTERM during ``scoresde train`` write a checkpoint and stop cleanly, ``--resume`` then
ends bit for bit where an uninterrupted run ends, a second signal exits at once, and every checkpoint writes
the loss curve and samples as PNGs without changing the run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train import TINY_MLP, TINY_UNET, assert_same_run

from scoresde import checkpoint as ck
from scoresde.train import TrainConfig, train

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

STEPS = 1500


def write_config(path: Path, out: Path, **kw) -> Path:
    cfg = dict(data="moons", n_train=1024, model=TINY_MLP, batch_size=64, lr=3e-3, warmup=10, steps=STEPS)
    cfg.update(ckpt_every=50, plots=False, out=str(out), **kw)
    path.write_text(json.dumps(cfg))
    return path


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "scoresde", "train", "--no-progress", *args]


def env():
    # one thread in both processes: the same float arithmetic whatever the machine
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_checkpoints_and_resume_matches_an_uninterrupted_run(tmp_path, sig):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        cli("--config", str(write_config(tmp_path / "a.json", run))),
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(run / "ckpt.json", proc)  # the first periodic checkpoint (step 50): the loop is running
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, (out, err)
    assert f"stopped by {signal.Signals(sig).name}" in err and "Traceback" not in err, err
    stopped = ck.load_checkpoint(run)
    assert 50 <= stopped.step < STEPS, stopped.step  # stopped early, with a checkpoint of where it was
    assert len(stopped.extra["losses"]) == stopped.step

    res = subprocess.run(cli("--out", str(run), "--resume"), env=env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    ref = tmp_path / "ref"
    res = subprocess.run(
        cli("--config", str(write_config(tmp_path / "b.json", ref))), env=env(), capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    resumed, uninterrupted = ck.load_checkpoint(run), ck.load_checkpoint(ref)
    assert resumed.step == STEPS
    assert_same_run(resumed, uninterrupted)


SLOW_SAVE = """
import sys, time
from pathlib import Path
import scoresde.train.loop as loop
from scoresde.train import TrainConfig, train

def slow(st, cfg, sde, data, out):
    Path(sys.argv[2]).touch()
    time.sleep(60)

loop._checkpoint = slow
train(TrainConfig.from_file(sys.argv[1]), progress=False, handle_signals=True)
"""


def test_second_signal_exits_at_once(tmp_path):
    """A first SIGTERM while a checkpoint is being written waits for it; a second one ends the process now."""
    marker = tmp_path / "saving"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_SAVE, str(write_config(tmp_path / "a.json", tmp_path / "run")), str(marker)],
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(marker, proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert proc.poll() is None  # the first signal does not cut a checkpoint short
    tic = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 128 + signal.SIGTERM and time.monotonic() - tic < 10
    assert "second signal (SIGTERM)" in err


def test_in_process_signal_returns_interrupted(tmp_path):
    """train(handle_signals=True) in the main thread returns with ``interrupted`` set and restores the handlers."""
    import threading

    before = signal.getsignal(signal.SIGINT)
    cfg = TrainConfig.from_file(write_config(tmp_path / "a.json", tmp_path / "run"))
    done = threading.Event()

    def interrupt_once_running():  # after the first checkpoint: the handler is installed, the loop runs
        while not (Path(cfg.out) / "ckpt.json").exists():
            if done.wait(0.01):
                return
        os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=interrupt_once_running)
    watcher.start()
    try:
        res = train(cfg, progress=False, handle_signals=True)
    finally:
        done.set()
        watcher.join()
    assert res.interrupted == signal.SIGINT and 0 < res.step < STEPS and res.steps_run == res.step
    assert ck.load_checkpoint(cfg.out).step == res.step
    assert signal.getsignal(signal.SIGINT) is before


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


@pytest.mark.parametrize("data", ["moons", "digits"])
def test_checkpoints_write_pngs_and_leave_the_run_unchanged(tmp_path, data):
    kw = dict(data=data, batch_size=32, steps=6, ckpt_every=3, warmup=2)
    if data == "digits":
        kw.update(model=TINY_UNET, class_conditional=True)
    else:
        kw.update(model=TINY_MLP, n_train=256)
    with_plots = train(TrainConfig(out=str(tmp_path / "a"), plots=True, **kw), progress=False)
    for name in ("loss.png", "samples.png"):
        assert is_png(tmp_path / "a" / name), name
    assert not list((tmp_path / "a").glob("*.tmp*"))
    without = train(TrainConfig(out=str(tmp_path / "b"), plots=False, **kw), progress=False)
    assert not (tmp_path / "b" / "loss.png").exists()
    assert with_plots.losses == without.losses
    assert_same_run(ck.load_checkpoint(tmp_path / "a"), ck.load_checkpoint(tmp_path / "b"))
    for p, q in zip(with_plots.ema.parameters(), without.ema.parameters(), strict=True):
        assert torch.equal(p, q)
