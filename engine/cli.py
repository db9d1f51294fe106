"""The ``neurowb`` command line.

Built-in: ``neurowb --version``. Everything else is registered by the packages that own it,
through the ``neurowb.commands`` entry-point group (see pyproject.toml): each entry points to
a ``register(subparsers)`` function that adds its sub-commands and sets ``run=callable`` as
the parser default. The app registers ``gui`` and ``demo`` that way, so this module never
imports Qt; each workspace registers its own (``neurowb mesh ...``, ``neurowb sort ...``).
A command whose work goes through :func:`engine.parallel.parallel_map` sets ``batches=True``
as a parser default: ``--scheduler ADDRESS`` then connects before it runs (an unreachable
address is an InputError at once); other commands say that they run here.
Every ``register`` is called for any command line (even ``neurowb hks --help``), so it imports
nothing heavy (torch, Dask, scikit-learn, scipy): the command's ``run`` imports what it needs.
``--version`` is answered before any of them is loaded.

Errors print one clear line and exit non-zero (2 for bad input, 1 otherwise, 130 when
interrupted); ``--debug`` prints the traceback too. Long commands wrap their engine call in
:func:`progress_bar`, a tqdm bar fed by the same Progress object the app uses.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import traceback
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, Iterator, Sequence

from engine import __version__
from engine.device import DEVICE_ENV
from engine.errors import InputError
from engine.progress import Cancelled, Progress

ENTRY_POINT_GROUP = "neurowb.commands"

Register = Callable[["argparse._SubParsersAction"], None]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, like every other error of the CLI (sub-commands
    are built with the same class)."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(2)


def number(kind: type = float, low: float | None = None, high: float | None = None, *, above: bool = False,
           nonzero: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` for a finite number of ``kind`` in [low, high] ((low, high] with ``above``):
    NaN, inf, out-of-range and (with ``nonzero``) 0 are refused with one line before any work starts."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, got '{text}'") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
        if low is not None and (value <= low if above else value < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if above else '≥'} {low:g}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be ≤ {high:g}, got {text}")
        if nonzero and value == 0:
            raise argparse.ArgumentTypeError("must not be 0")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive_int = number(int, 1)
nonnegative_int = number(int, 0)
positive_float = number(float, 0, above=True)
nonnegative_float = number(float, 0)
finite_float = number(float)


def check_output(path: str | os.PathLike, folder: bool = False, suffixes: tuple[str, ...] = ()) -> Path:
    """Refuse, before any work, an output that could not be written afterwards: a folder where a file goes
    (or a file where a folder goes), a wrong extension, or a parent that is a file or is not writable."""
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise InputError(f"The output '{path}' must end in {' or '.join(suffixes)}.")
    if folder and path.exists() and not path.is_dir():
        raise InputError(f"The output folder '{path}' is an existing file: give a folder name, or remove the file.")
    if not folder and path.is_dir():
        raise InputError(f"The output '{path}' is an existing folder: give a file name.")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise InputError(f"Cannot write '{path}': '{parent}' is a file, not a folder.")
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"Cannot write '{path}': the folder '{parent}' is not writable. Choose another place.")
    return path


def _global_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The parser of the options that come before the command (no command modules imported)."""
    parser = _Parser(
        prog="neurowb",
        description="NeuroWorkbench: neuron morphology, spike sorting, calcium imaging and microarchitecture.",
        add_help=add_help,
    )
    parser.add_argument("--version", action="version", version=f"NeuroWorkbench {__version__}")
    parser.add_argument("--debug", action="store_true", help="print tracebacks and debug logging (Dask's too)")
    parser.add_argument("--device", metavar="DEVICE", help="compute device: auto (default), cpu, cuda, cuda:N, mps")
    parser.add_argument(
        "--scheduler", metavar="ADDRESS",
        help="where batches run: auto (default: threads here, a local process cluster for big jobs), threads, "
        "local (Dask worker processes), serial, or a Dask scheduler tcp://host:8786 (workers need the data "
        "on a shared filesystem)",
    )
    return parser


def build_parser(registrations: Sequence[Register] | None = None) -> argparse.ArgumentParser:
    """The full parser; ``registrations`` defaults to every installed ``neurowb.commands`` entry point."""
    parser = _global_parser()
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for register in registrations if registrations is not None else _installed_registrations():
        register(subparsers)
    return parser


def _installed_registrations() -> list[Register]:
    registrations = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        try:
            registrations.append(ep.load())
        except Exception as exc:  # one broken plugin must not take the whole CLI down
            logging.getLogger(__name__).warning("could not load commands %r (%s): %s", ep.name, ep.value, exc)
    return registrations


@contextlib.contextmanager
def progress_bar(description: str, disable: bool | None = None) -> Iterator[Progress]:
    """A Progress that drives a tqdm bar on stderr (hidden when stderr is not a terminal, unless disable=False)."""
    from tqdm import tqdm

    bar_format = "{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}"
    bar = tqdm(total=1000, desc=description, bar_format=bar_format, disable=disable)

    def update(fraction: float, message: str) -> None:
        bar.n = int(round(fraction * 1000))
        if message:
            bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    progress = Progress(update, min_interval=0.1)
    try:
        yield progress
    finally:
        bar.close()


def main(argv: Sequence[str] | None = None, registrations: Sequence[Register] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if "--version" in argv:
            # Answered (and exits) before any command module is imported: they pull in numpy & co.
            _global_parser(add_help=False).parse_known_args(argv)
        parser = build_parser(registrations)
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed as one line
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Both are read by engine.device / engine.parallel, here and in any worker processes.
    if args.device:
        os.environ[DEVICE_ENV] = args.device
    if args.scheduler:
        from engine.parallel import SCHEDULER_ENV

        os.environ[SCHEDULER_ENV] = args.scheduler
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return 0
    try:
        if args.scheduler:
            from engine.parallel import connect, is_address

            if getattr(args, "batches", False):
                connect(args.scheduler)  # an unreachable address fails now, not after the first steps
            elif is_address(args.scheduler):
                print("note: this command runs on this machine; only the batch commands (hks, spines, cnmf, deconvolve) "
                      "send work to a Dask scheduler", file=sys.stderr)
        result = run(args)
        return int(result or 0)
    except InputError as exc:
        _fail(args, f"error: {exc.message}" + (f" ({exc.details})" if exc.details and args.debug else ""))
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("cancelled", file=sys.stderr)
        return 130
    except Exception as exc:
        _fail(args, f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return 1


def _fail(args: argparse.Namespace, line: str) -> None:
    if args.debug:
        traceback.print_exc()
    print(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
