"""The ``softhist`` command (also ``python -m softhist``).

    softhist demo [--out DIR] [--steps N] [--image PATH] [--target PATH]
    softhist bench [--quick] [--device cpu|cuda] [--csv PATH] [--plot PATH]

Bad arguments end with one line on stderr and exit status 2, never a traceback.
The demo's libraries (matplotlib, tqdm) are imported only when the demo runs,
so ``--help`` and ``bench`` need nothing but torch.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path
from typing import NoReturn, Optional, Sequence

import softhist
from softhist import bench

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line: ``softhist demo: error: ... (see 'softhist demo --help')``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


MAX_STEPS = 1_000_000  # about three hours of the demo on a 2-core CPU
MAX_THREADS = 1024


def _positive_int(text: str, most: int = MAX_STEPS) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    if value > most:
        raise argparse.ArgumentTypeError(f"must be at most {most:,}, got {text}")
    return value


def _existing_ancestor(path: Path) -> Path:
    """The deepest part of ``path`` (made absolute) that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_out(parser: argparse.ArgumentParser, text: str) -> None:
    """Reject an --out folder that could not be created or written, without creating it yet."""
    out = Path(text)
    if out.exists():
        if not out.is_dir():
            parser.error(f"--out {text}: exists and is not a directory")
        if not os.access(out, os.W_OK | os.X_OK):
            parser.error(f"--out {text}: the directory is not writable")
        return
    ancestor = _existing_ancestor(out)
    if not ancestor.is_dir():
        parser.error(f"--out {text}: cannot create it, {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        parser.error(f"--out {text}: cannot create it, {ancestor} is not writable")


def _image_file(text: str) -> str:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"not a file: {text}")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The ``softhist`` parser with its ``demo`` and ``bench`` subcommands."""
    parser = _Parser(prog="softhist", description="Differentiable histograms for PyTorch: the demo and the benchmark.")
    parser.add_argument("--version", action="version", version=f"softhist {softhist.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{demo,bench}", required=True)

    demo = commands.add_parser(
        "demo", help="match a photograph's tones to a target histogram by gradient descent",
        description="Learn a monotone tone curve that gives a photograph the target's histogram, by gradient descent "
        "through softhist's soft histogram; cross-check it against exact histogram matching (CDF inversion) and "
        "write DIR/demo.png. The default photograph ships with matplotlib; the default target is flat "
        "(histogram equalization). Needs matplotlib and tqdm: pip install 'softhist[demo]'.",
    )
    demo.add_argument("--out", default="demo-output", metavar="DIR", help="folder for demo.png (default: demo-output)")
    demo.add_argument("--steps", type=_positive_int, default=300, metavar="N", help=f"optimizer steps, 1 to {MAX_STEPS:,} (default: 300)")
    demo.add_argument("--image", type=_image_file, metavar="PATH", help="photograph to adjust (default: matplotlib's grace_hopper.jpg)")
    demo.add_argument("--target", type=_image_file, metavar="PATH", help="photograph whose histogram to match (default: a flat histogram)")
    demo.set_defaults(handler=_demo, subparser=demo)

    bench_parser = commands.add_parser(
        "bench", help="time softhist against torch.histc and the dense baselines",
        description="Time softhist next to torch.histc and the soft histograms in the wild (the forum's sigmoid "
        "formula, eager and compiled; kornia and MONAI where installed), side by side in one process. Prints a "
        "Markdown table of forward and forward+backward times as ratios to the hard baseline, and peak memory.",
    )
    bench.add_arguments(bench_parser)
    bench_parser.set_defaults(handler=_bench, subparser=bench_parser)
    return parser


def _demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    missing = [name for name in ("matplotlib", "tqdm") if importlib.util.find_spec(name) is None]
    if missing:
        parser.error(f"the demo needs {' and '.join(missing)}: pip install 'softhist[demo]'")
    _check_out(parser, args.out)
    start = time.perf_counter()
    from softhist import demo  # numpy, matplotlib and tqdm: only now

    try:
        result = demo.run(args.steps, args.image, args.target)
    except demo.ImageError as error:
        parser.error(str(error))
    # The folder is created only now, with inputs read and the curve fitted: a bad --image or an
    # interrupted fit leaves nothing behind.
    out = Path(args.out)
    created = None if out.exists() else _existing_ancestor(out)
    figure = out / "demo.png"
    try:
        out.mkdir(parents=True, exist_ok=True)
        width, height = demo.plot(result, str(figure))
    except OSError as error:
        if created is not None:  # remove the folders this run made
            top = Path(os.path.abspath(out))
            while top.parent != created:
                top = top.parent
            shutil.rmtree(top, ignore_errors=True)
        parser.error(f"cannot write {figure} ({error.strerror or error})")
    print(f"wrote {figure} ({width}×{height} pixels) in {time.perf_counter() - start:.1f} s")
    return 0


def _bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.threads is not None and args.threads > MAX_THREADS:
        parser.error(f"argument --threads: must be at most {MAX_THREADS}, got {args.threads}")
    for flag in ("csv", "plot"):  # a folder would fail only after minutes of timing
        path = getattr(args, flag)
        if path is not None and Path(path).is_dir():
            parser.error(f"--{flag} {path}: is a directory, expected a file name")
    bench.check_arguments(parser, args)
    bench.run(args)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``softhist`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args, args.subparser)
    except KeyboardInterrupt:
        print(f"softhist {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
