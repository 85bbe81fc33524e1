"""``python -m scoresde.models``: parameter counts and CPU training throughput of the default networks, and the
digit classifier's accuracy, training time and Frechet-distance floor."""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from . import MLP, UNet, count_parameters, digit_classifier, digit_fd_floor


def throughput(model: torch.nn.Module, x: torch.Tensor, reps: int, repeats: int = 3) -> float:
    """Examples per second of one forward and backward pass (mean-square loss), the best of ``repeats``."""
    t = torch.rand(x.shape[0], generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        model(x, t).square().mean().backward()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(reps):
            model(x, t).square().mean().backward()
        best = max(best, reps * x.shape[0] / (time.perf_counter() - start))
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scoresde.models", description=__doc__)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: $OMP_NUM_THREADS if set, else torch's own choice)",
    )
    parser.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    parser.add_argument("--fresh-classifier", action="store_true", help="train the classifier in a temporary cache")
    args = parser.parse_args(argv)
    threads = args.threads if args.threads is not None else int(os.environ.get("OMP_NUM_THREADS", 0) or 0)
    if threads < 0:
        parser.error(f"--threads must be >= 1, got {threads}")
    if threads:
        torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    for name, model, x, reps in (
        ("MLP()", MLP(), torch.randn(args.batch, 2, generator=g), 30),
        ("UNet()", UNet(), torch.randn(args.batch, 1, 8, 8, generator=g), 5),
    ):
        rate = throughput(model, x, reps)
        print(
            f"{name:8s} {count_parameters(model):>10,d} parameters  {rate:>9,.0f} examples/s forward+backward "
            f"(batch {args.batch}, {args.threads} threads)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        clf = digit_classifier(tmp if args.fresh_classifier else None)
        floor = digit_fd_floor(clf)
    print(f"digit classifier: test accuracy {clf.test_accuracy:.4f}, trained in {clf.train_seconds:.1f} s (1 thread)")
    print(f"digit FD floor: test vs train {floor['test_vs_train']:.3f}, train halves {floor['train_halves']:.3f}")


if __name__ == "__main__":
    main()
