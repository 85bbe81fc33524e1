"""``scoresde methods``: the sampling methods with what they declare, and the installed peers."""

from __future__ import annotations

import sys

from .plugins import add_plugin_argument, load_plugins

NAME = "methods"
HELP = "list the sampling methods and what they declare"


def add_arguments(parser) -> None:
    add_plugin_argument(parser)


def run(args) -> int:
    try:
        load_plugins(args.plugin)
    except ValueError as err:
        print(f"scoresde methods: error: {err}", file=sys.stderr)
        return 2
    from ..solvers import available_methods, method_info

    for name in available_methods():
        info = method_info(name)
        cost = "adaptive" if info["adaptive"] else f"{info['nfe_per_step']} NFE/step"
        print(f"{name:<20} {info['kind']}  order {info['order']:<4} {cost:<12} {info['description']}")
    from .. import peers
    from ..bench.report import unavailable_peers

    names = peers.available_peers()
    print(f"\npeers (scoresde bench --peers): {', '.join(names) or 'none installed (pip install scoresde[peers])'}")
    for name, why in unavailable_peers().items():
        print(f"  peer library {name}: {why}")
    return 0
