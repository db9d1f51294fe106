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
import os
import sys
import traceback
from importlib.metadata import entry_points
from typing import Callable, Iterator, Sequence

from engine import __version__
from engine.device import DEVICE_ENV
from engine.errors import InputError
from engine.progress import Cancelled, Progress

ENTRY_POINT_GROUP = "neurowb.commands"

Register = Callable[["argparse._SubParsersAction"], None]


def _global_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The parser of the options that come before the command (no command modules imported)."""
    parser = argparse.ArgumentParser(
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
    if "--version" in argv:
        # Answered (and exits) before any command module is imported: they pull in numpy & co.
        _global_parser(add_help=False).parse_known_args(argv)
    parser = build_parser(registrations)
    args = parser.parse_args(argv)
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
