"""benchmarks/network_samplers.py (issue 34's network-score comparison) runs, writes its rows and resumes them."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_rows_are_written_keyed_and_kept(moons_ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import network_samplers

    args = ["--checkpoint", str(moons_ckpt), "--n", "300", "--runs", "ddim:4,dpm++2m-sde:4", "--out", str(tmp_path)]
    assert network_samplers.main(args) == 0
    rows = json.loads((tmp_path / "network_samplers.json").read_text())
    assert sorted(r["method"] for r in rows.values()) == ["ddim", "dpm++2m-sde"]
    assert all(r["nfe"] == 4 and r["ratio"] > 0 and r["floor"] > 0 for r in rows.values())  # 3 steps + denoise
    capsys.readouterr()
    assert network_samplers.main(args) == 0 and capsys.readouterr().out == ""  # nothing redone
    assert sys.modules["network_samplers"] is network_samplers
