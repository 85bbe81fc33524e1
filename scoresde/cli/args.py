"""The command line's parser and argument types: errors in one line (which flag, what it accepts), exit status 2.

Light on purpose: building the parsers imports no torch, and neither does parsing, except to check that a
``--device`` other than ``cpu`` exists here, which waits until every other flag has parsed (a typo elsewhere is
reported in a fraction of a second, not after torch's import).
"""

from __future__ import annotations

import argparse
import re


class Parser(argparse.ArgumentParser):
    """A subcommand's parser whose errors are one line: which flag, what it accepts, where help is.

    The top-level parser keeps argparse's usage message (an unknown or missing subcommand).
    """

    def error(self, message: str):
        if " " not in self.prog:
            super().error(message)
        m = re.fullmatch(r"argument (\S+): invalid choice: (.+) \(choose from (.+)\)", message)
        if m:
            message = f"{m[1]} must be one of {m[3].replace(chr(39), '')}, got {m[2]}"
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        for action in self._actions:  # the checks that need torch, once the flags that do not have passed theirs
            value = getattr(namespace, action.dest, None)
            if isinstance(value, _UncheckedDevice):
                try:
                    setattr(namespace, action.dest, _check_device(value))
                except argparse.ArgumentTypeError as err:
                    self.error(str(argparse.ArgumentError(action, str(err))))
        return namespace, extras


class DefaultsFormatter(argparse.HelpFormatter):
    """``--help`` with every option's default: appended as ``(default: X)`` where the help does not already say it,
    and left out where there is none (``None``, a flag that is off, an empty list)."""

    def add_argument(self, action):
        default = action.default
        unset = default is None or default is False or default is argparse.SUPPRESS or default == []
        has_default = not unset and bool(action.option_strings)
        if has_default and not isinstance(action, argparse._VersionAction):
            text = action.help or ""
            if "default" not in text:
                action.help = f"{text} (default: %(default)s)".strip()
        super().add_argument(action)


def csv(kind):
    def parse(text: str) -> tuple:
        return tuple(kind(v) for v in text.split(",") if v)

    parse.__name__ = f"comma-separated {kind.__name__}"  # argparse's message: "invalid comma-separated int value"
    return parse


def int_ranges(text: str) -> list[int]:
    """Comma-separated ints and inclusive ranges, in order: ``"0-2,5"`` -> ``[0, 1, 2, 5]`` (e.g. seeds)."""
    out: list[int] = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out


def problem_list(text: str) -> tuple:
    """``--problems``: comma-separated names; a ``gmm-family:d=D,k=K,seed=S`` name keeps its own commas."""
    from ..bench.config import split_problems

    return split_problems(text)


class _UncheckedDevice(str):
    """A ``--device`` value of a device's form, not yet checked against torch (:meth:`Parser.parse_known_args`)."""


def device(text: str) -> str:
    """``--device``: a torch device that exists here, else one line saying what does (argparse exits 2).

    ``cpu`` needs no check; another name is checked after the other flags, since the check imports torch."""
    if text == "cpu":
        return text
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(:[0-9]+)?", text):  # not TYPE or TYPE:INDEX: no torch needed
        raise argparse.ArgumentTypeError(
            f"not a device: {text!r}; a device is TYPE or TYPE:INDEX, as cpu, cuda, cuda:0, mps"
        )
    return _UncheckedDevice(text)


def _check_device(text: str) -> str:
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a device: {text!r}; accepted: {_devices()}") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise argparse.ArgumentTypeError(f"{text!r} is not available here; accepted: {_devices()}")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise argparse.ArgumentTypeError(f"{text!r} is not available here; accepted: {_devices()}")
    return str(text)


def _devices() -> str:
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    elif torch.version.cuda is None:
        names.append("(no cuda: this torch is built without CUDA)")
    else:
        names.append("(no cuda: no GPU visible)")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        names.append("mps")
    return ", ".join(names)


def int_at_least(low: int):
    """An argparse type: an integer ``>= low``, or one line saying what was expected."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value

    return parse


positive, at_least_2, seed = int_at_least(1), int_at_least(2), int_at_least(0)


def suffix(text: str) -> str:
    """``--save``: ``safetensors`` or ``.safetensors`` (and ``npz``)."""
    suffix = "." + text.lstrip(".")
    if suffix not in (".safetensors", ".npz"):
        raise argparse.ArgumentTypeError(f"invalid choice {text!r}; accepted: safetensors, npz")
    return suffix


def interval(text: str) -> tuple[float, float]:
    """``--guidance-interval LO,HI``."""
    from ..train.pretrained import check_interval

    try:
        return check_interval(text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{err} (write LO,HI)") from None


def option(text: str) -> tuple[str, object]:
    """``--option key=value``: the value as an int, a float, a bool or the string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"options are key=value, got {text!r}")
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, {"true": True, "false": False}.get(value.lower(), value)
