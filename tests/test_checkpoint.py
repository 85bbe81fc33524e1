"""Checkpoints: exact round trip, every kind of damage gives a CheckpointError that says what, and a crash
while saving leaves the previous checkpoint loadable."""

import copy
import hashlib
import json

import pytest
import torch
from tiny import TINY_UNET

from scoresde import checkpoint as ck
from scoresde.models import MLP, UNet


def make_state(seed=0, width=16):
    torch.manual_seed(seed)
    model = MLP(dim=2, width=width, num_blocks=2)
    ema = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    for _ in range(3):
        x = torch.randn(8, 2)
        model(x, torch.rand(8)).sub(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(p, 0.1)
    g = torch.Generator().manual_seed(123)
    torch.rand(5, generator=g)
    return model, ema, opt, g


def save(d, step=3, **kw):
    model, ema, opt, g = kw.pop("state", None) or make_state()
    return ck.save_checkpoint(
        d,
        model=model,
        ema=ema,
        optimizer=opt,
        step=step,
        rng_state={"data": g.get_state()},
        config={"lr": 1e-3, "nested": {"a": [1, 2]}},
        extra={"losses": [0.5, 0.25, 0.125], "perm": torch.arange(7), "pos": 4},
    )


def assert_states_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_round_trip_is_exact(tmp_path):
    model, ema, opt, g = make_state()
    save(tmp_path, state=(model, ema, opt, g))
    c = ck.load_checkpoint(tmp_path)
    assert c.step == 3 and c.config == {"lr": 1e-3, "nested": {"a": [1, 2]}}
    assert c.extra["losses"] == [0.5, 0.25, 0.125] and c.extra["pos"] == 4
    assert torch.equal(c.extra["perm"], torch.arange(7))
    assert c.model_config == model.config
    m2, e2 = MLP(dim=2, width=16, num_blocks=2), MLP(dim=2, width=16, num_blocks=2)
    o2 = torch.optim.AdamW(m2.parameters(), lr=5.0)
    c.restore(m2, e2, o2)
    assert_states_equal(m2.state_dict(), model.state_dict())
    assert_states_equal(e2.state_dict(), ema.state_dict())
    s1, s2 = opt.state_dict(), o2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    assert s1["state"].keys() == s2["state"].keys()
    for i in s1["state"]:
        assert_states_equal(s1["state"][i], s2["state"][i])
    g2 = torch.Generator().set_state(c.rng_state["data"])
    assert torch.equal(torch.rand(10, generator=g), torch.rand(10, generator=g2))
    # one more identical step from both: the restored optimiser continues exactly
    for m, o in ((model, opt), (m2, o2)):
        torch.manual_seed(9)
        x = torch.randn(8, 2)
        m(x, torch.rand(8)).sub(x).square().mean().backward()
        o.step()
    assert_states_equal(m2.state_dict(), model.state_dict())


def test_unet_round_trip_and_only_one_data_file(tmp_path):
    torch.manual_seed(0)
    net = UNet(**{k: v for k, v in TINY_UNET.items() if k != "arch"}, num_heads=2, num_classes=10)
    for step in (10, 20, 20):
        ck.save_checkpoint(tmp_path, model=net, step=step)
    assert len(list(tmp_path.glob("ckpt-*.safetensors"))) == 1
    c = ck.load_checkpoint(tmp_path)
    assert c.step == 20 and c.ema is None and c.optimizer is None
    assert_states_equal(c.model, net.state_dict())


def sidecar(d):
    return json.loads((d / ck.SIDECAR).read_text())


def rewrite_sidecar(d, payload):
    """Write a sidecar with a consistent self-hash, as a tool editing it on purpose would."""
    payload = dict(payload)
    payload.pop("sidecar_sha256", None)
    payload["sidecar_sha256"] = hashlib.sha256(ck._canonical(payload)).hexdigest()
    (d / ck.SIDECAR).write_text(json.dumps(payload))


def test_damage_gives_clear_errors(tmp_path):
    def fresh(name):
        d = tmp_path / name
        return d, save(d)

    d, data = fresh("flip")
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(ck.CheckpointError, match="corrupt checkpoint .*SHA-256"):
        ck.load_checkpoint(d)

    d, data = fresh("truncate")
    data.write_bytes(data.read_bytes()[:-100])
    with pytest.raises(ck.CheckpointError, match="truncated"):
        ck.load_checkpoint(d)

    d, data = fresh("no-sidecar")
    (d / ck.SIDECAR).unlink()
    with pytest.raises(ck.CheckpointError, match="sidecar ckpt.json is missing"):
        ck.load_checkpoint(d)

    d, data = fresh("no-data")
    data.unlink()
    with pytest.raises(ck.CheckpointError, match="data file .* is missing"):
        ck.load_checkpoint(d)

    with pytest.raises(ck.CheckpointError, match="does not exist"):
        ck.load_checkpoint(tmp_path / "nowhere")

    d, data = fresh("bad-json")
    (d / ck.SIDECAR).write_text((d / ck.SIDECAR).read_text()[:-20])
    with pytest.raises(ck.CheckpointError, match="not valid JSON"):
        ck.load_checkpoint(d)

    d, data = fresh("edited-step")
    p = sidecar(d)
    p["step"] = 1000
    (d / ck.SIDECAR).write_text(json.dumps(p))
    with pytest.raises(ck.CheckpointError, match="does not match its recorded hash"):
        ck.load_checkpoint(d)

    d, data = fresh("version")
    p = sidecar(d)
    p["version"] = ck.VERSION + 1
    rewrite_sidecar(d, p)
    with pytest.raises(ck.CheckpointError, match="version 2, this scoresde reads version 1"):
        ck.load_checkpoint(d)

    d, data = fresh("foreign")
    (d / ck.SIDECAR).write_text(json.dumps({"hello": 1}))
    with pytest.raises(ck.CheckpointError, match="not a scoresde checkpoint"):
        ck.load_checkpoint(d)

    # another architecture: a model passed in, and a config that no longer fits the stored weights
    d, data = fresh("arch")
    with pytest.raises(ck.CheckpointError, match="do not match the architecture.*shape mismatch"):
        ck.load_checkpoint(d, model=MLP(dim=2, width=32, num_blocks=2))
    with pytest.raises(ck.CheckpointError, match="do not match the architecture.*missing"):
        ck.load_checkpoint(d, model=MLP(dim=2, width=16, num_blocks=3))
    p = sidecar(d)
    p["model_config"]["num_blocks"] = 1
    rewrite_sidecar(d, p)
    with pytest.raises(ck.CheckpointError, match="do not match the architecture.*unexpected"):
        ck.load_checkpoint(d)
    c = ck.load_checkpoint(d, model=MLP(dim=2, width=16, num_blocks=2))  # the weights themselves are intact
    with pytest.raises(ck.CheckpointError, match="do not fit the model"):
        c.restore(MLP(dim=2, width=16, num_blocks=1))
    assert issubclass(ck.CheckpointError, ValueError)


class Crash(RuntimeError):
    pass


@pytest.mark.parametrize("where", ["data", "sidecar"])
def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch, where):
    first = make_state(0)
    save(tmp_path, step=3, state=first)
    before = ck.load_checkpoint(tmp_path)

    if where == "data":
        # the data file's temp file is half written when the process dies
        def crash_bytes(path, data):
            (path.parent / f".{path.name}.partial.tmp").write_bytes(data[: len(data) // 2])
            raise Crash

        monkeypatch.setattr(ck, "atomic_write_bytes", crash_bytes)
    else:
        # the new data file is complete but the process dies before the sidecar is replaced
        def crash_text(path, text):
            raise Crash

        monkeypatch.setattr(ck, "atomic_write_text", crash_text)
    with pytest.raises(Crash):
        save(tmp_path, step=6, state=make_state(1))
    after = ck.load_checkpoint(tmp_path)
    assert after.step == 3
    assert_states_equal(after.model, before.model)
    monkeypatch.undo()
    save(tmp_path, step=9, state=make_state(2))  # the next save succeeds and clears the leftovers
    assert ck.load_checkpoint(tmp_path).step == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ck.SIDECAR, ck.load_checkpoint(tmp_path).path.name])


def test_bad_save_arguments(tmp_path):
    model, ema, opt, g = make_state()
    with pytest.raises(ValueError, match="step must be"):
        ck.save_checkpoint(tmp_path, model=model, step=-1)
    with pytest.raises(ValueError, match="uint8"):
        ck.save_checkpoint(tmp_path, model=model, step=1, rng_state={"g": torch.zeros(3)})
    with pytest.raises(ValueError, match="cannot store a value of type"):
        ck.save_checkpoint(tmp_path, model=model, step=1, extra={"f": object()})
    assert not ck.has_checkpoint(tmp_path)
