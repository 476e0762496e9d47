"""The ``cepaper`` command: run the paper's notebooks, build the book, design ensembles.

Each subcommand is one ``_add_<name>(sub)`` function that declares its arguments and sets
``func``; ``COMMANDS`` lists them. Errors in the arguments exit with status 2 and a message that
names the argument and what is allowed.
"""

import argparse
import json
import sys


class UsageError(ValueError):
    """Bad command-line input: printed as ``cepaper: error: ...`` with exit status 2."""


def emit(args, payload, text):
    """Print ``payload`` as JSON with ``--json``, else the human-readable ``text``."""
    print(json.dumps(payload, indent=1) if getattr(args, "json", False) else text)


def _add_run(sub):
    p = sub.add_parser("run", help="execute section notebooks with papermill (cached)")
    p.add_argument("sections", nargs="*", metavar="SECTION", help="sections to run (default: all in the book)")
    p.add_argument("--profile", default="quick", help="parameter profile: a file profiles/<name>.yaml")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="override one notebook parameter (YAML value)")
    p.add_argument("--force", action="store_true", help="execute even when the cache is up to date")
    p.add_argument("--json", action="store_true", help="print the run records as JSON")

    def run(args):
        from cepaper import pipeline
        records = pipeline.run(args.sections, args.profile, pipeline.parse_overrides(args.parameter),
                               force=args.force)
        emit(args, records, pipeline.format_records(records))
    p.set_defaults(func=run)


def _add_book(sub):
    p = sub.add_parser("book", help="run the notebooks of a profile, then build the HTML book")
    p.add_argument("--profile", default="quick", help="parameter profile: a file profiles/<name>.yaml")
    p.add_argument("--force", action="store_true", help="re-execute every notebook")

    def book(args):
        from cepaper import pipeline
        index = pipeline.book(args.profile, force=args.force)
        print(f"The book is at {index}")
    p.set_defaults(func=book)


COMMANDS = [_add_run, _add_book]


def build_parser():
    parser = argparse.ArgumentParser(prog="cepaper", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (UsageError, ValueError, FileNotFoundError) as e:
        parser.exit(2, f"cepaper {args.command}: error: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
