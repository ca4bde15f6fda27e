"""The ``invprob`` command line (also ``python -m invprob``).

One module per subcommand (``demo``, ``bench``, ``priors``, ``solve``, ``uq-ct``, ``train``), each
with ``add_parser(sub)`` and ``run(args)``. Errors are printed as one line (``invprob: error:
...``) with a non-zero exit code; ``--debug`` (before or after the subcommand) shows the traceback
instead. ``--threads N`` (before or after the subcommand) sets torch's intra-op thread count; by
default torch uses one thread per physical core.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from . import bench, demo, methods, priors, solve, train, uq_ct

EXIT_ERROR = 1
SUBCOMMANDS = (demo, bench, methods, priors, solve, uq_ct, train)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``invprob`` command."""
    parser = argparse.ArgumentParser(prog="invprob", description="Imaging inverse problems with generative priors.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    parser.add_argument("--threads", type=_thread_count, default=None, metavar="N", help=THREADS_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    for subparser in sub.choices.values():  # `invprob bench --debug ...` works too
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                               help="show tracebacks instead of one-line errors")
        subparser.add_argument("--threads", type=_thread_count, default=argparse.SUPPRESS, metavar="N", help=THREADS_HELP)
    return parser


THREADS_HELP = "torch threads (default: torch's, one per physical core)"


def _thread_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], None] = args.handler
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        handler(args)
    except KeyboardInterrupt:
        print("invprob: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one clear line for users; --debug for developers
        if args.debug:
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"invprob: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
