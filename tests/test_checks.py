"""The shared argument checks: what passes, what fails, and the wording of the message."""

import math

import pytest

from scoresde.checks import check_bool, check_choice, check_int, check_number, is_int, is_number


def test_numbers():
    assert check_number("pc", "snr", 1, gt=0) == 1.0 and isinstance(check_number("pc", "snr", 1, gt=0), float)
    assert check_number("", "p", 0.0, ge=0, lt=1) == 0.0
    assert check_number("", "S_tmax", math.inf, ge=0, finite=False) == math.inf
    cases = [
        (dict(v=0.0, gt=0), "pc: snr must be a number > 0, got 0.0"),
        (dict(v=-1, ge=0), "pc: snr must be a number >= 0, got -1"),
        (dict(v=math.nan, gt=0), "pc: snr must be a finite number > 0, got nan"),
        (dict(v=math.inf, ge=0), "pc: snr must be a finite number >= 0, got inf"),
        (dict(v=True, gt=0), "pc: snr must be a number > 0, got True"),
        (dict(v="1", gt=0), "pc: snr must be a number > 0, got '1'"),
        (dict(v=1.0, ge=0, lt=1), r"pc: snr must be a number in [0, 1), got 1.0"),
        (dict(v=0.0, gt=0, le=1), r"pc: snr must be a number in (0, 1], got 0.0"),
        (dict(v=2, le=1), "pc: snr must be a number <= 1, got 2"),
        (dict(v=-1.0, ge=0, hint="0: off"), "pc: snr must be a number >= 0 (0: off), got -1.0"),
    ]
    for kw, message in cases:
        v = kw.pop("v")
        with pytest.raises(ValueError) as err:
            check_number("pc", "snr", v, **kw)
        assert str(err.value) == message
    with pytest.raises(TypeError, match="one lower bound"):
        check_number("", "x", 1.0, gt=0, ge=0)


def test_ints_choices_and_bools():
    assert check_int("TrainConfig", "steps", 0, ge=0) == 0
    for v in (-1, 1.0, True, "3"):
        with pytest.raises(ValueError, match=r"^TrainConfig: steps must be an int >= 0, got "):
            check_int("TrainConfig", "steps", v, ge=0)
    with pytest.raises(ValueError, match=r"^bins must be an int in \[2, 9\] \(levels\), got 10$"):
        check_int("", "bins", 10, ge=2, le=9, hint="levels")
    assert check_choice("", "trace", "exact", ("exact", "hutchinson")) == "exact"
    with pytest.raises(ValueError, match=r"^trace must be one of 'exact', 'hutchinson'; got 'x'$"):
        check_choice("", "trace", "x", ("exact", "hutchinson"))
    assert check_bool("edm-heun", "last_euler", False) is False
    with pytest.raises(ValueError, match=r"^edm-heun: last_euler must be True or False, got 1$"):
        check_bool("edm-heun", "last_euler", 1)
    assert is_int(3) and not is_int(True) and not is_int(3.0)
    assert is_number(2.5) and not is_number(False) and not is_number(math.nan) and is_number(math.inf, finite=False)
