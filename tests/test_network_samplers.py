"""benchmarks/network_samplers.py (issue 34's network-score comparison) runs under the bench's protocol, writes its
rows keyed by run and seed, and resumes them."""

import json

import pytest


def test_rows_are_written_keyed_and_kept(moons_ckpt, tmp_path, benchmark_script, capsys):
    network_samplers = benchmark_script("network_samplers")
    runs = "ddim:4,unipc:4:eta=1,unipc:4:eta=1:grid=uniform"
    args = ["--checkpoint", str(moons_ckpt), "--n", "300", "--runs", runs, "--seeds", "0-1", "--out", str(tmp_path)]
    assert network_samplers.main(args) == 0
    path = tmp_path / "network_samplers.json"
    rows = json.loads(path.read_text())
    runs = [r for k, r in rows.items() if not k.endswith("|floor")]
    assert len(runs) == 6 and sorted({r["seed"] for r in runs}) == [0, 1]
    assert all(r["nfe"] == 4 and r["metric"] == "tv" and r["ratio"] > 0 for r in runs)
    assert {json.dumps(r["options"], sort_keys=True) for r in runs} == {
        "{}",
        '{"eta": 1}',
        '{"eta": 1, "grid": "uniform"}',
    }
    by = {(r["method"], json.dumps(r["options"]), r["seed"]): r["value"] for r in runs}
    assert by[("unipc", '{"eta": 1}', 0)] != by[("unipc", '{"eta": 1}', 1)]  # the seed draws the noise
    first = capsys.readouterr().out
    assert "unipc:4:eta=1" in first and "tv / floor" in first
    before = path.read_text()
    assert network_samplers.main(args) == 0 and path.read_text() == before  # nothing redone
    assert capsys.readouterr().out == first  # the same summary from the kept rows


def test_a_bad_run_is_refused(benchmark_script):
    network_samplers = benchmark_script("network_samplers")
    with pytest.raises(ValueError, match="method:NFE"):
        network_samplers.parse_run("unipc")
    assert network_samplers.parse_run("unipc:20:eta=0.5") == ("unipc", 20, {"eta": 0.5})
    assert network_samplers.int_ranges("0-2,5") == [0, 1, 2, 5]  # --seeds
