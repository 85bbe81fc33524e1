"""Atomic writes: the file's mode follows the umask like a plain open() would, not mkstemp's 0600."""

import os
import stat

import pytest

from scoresde.util import atomic_write_bytes, atomic_write_text


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_bytes(tmp_path / "sub" / "b.bin", b"y")
        with open(tmp_path / "plain", "w") as f:
            f.write("z")
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    for name in ("a.txt", "sub/b.bin", "plain"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name
    assert (tmp_path / "a.txt").read_text() == "x" and (tmp_path / "sub" / "b.bin").read_bytes() == b"y"


def test_replacing_a_file_keeps_the_content_atomic_and_readable(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.txt", "old")
        atomic_write_text(tmp_path / "r.txt", "new")
    finally:
        os.umask(old)
    assert (tmp_path / "r.txt").read_text() == "new"
    assert stat.S_IMODE((tmp_path / "r.txt").stat().st_mode) == 0o644
    assert not list(tmp_path.glob(".*tmp"))


def test_the_write_probe_leaves_no_folder_it_had_to_create(tmp_path):
    """Issue 32: a refused `scoresde train --resume` left an empty folder behind (the probe created it)."""
    from scoresde.util import unwritable

    assert unwritable(tmp_path / "a" / "b") is None
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    assert unwritable(tmp_path / "kept") is None and (tmp_path / "kept").is_dir()


def test_a_refused_resume_creates_nothing(tmp_path, capsys):
    from scoresde.cli import main

    assert main(["train", "--data", "moons", "--out", str(tmp_path / "run"), "--resume", "--no-progress"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
