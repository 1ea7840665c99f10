"""The command line: ``python -m hlcbus {now,decode,demo,bench}``.

Bad input exits with status 2 and one line on stderr, as argparse programs do.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from hlcbus import HLC, Timestamp, demo, quickbench


def _now(args: argparse.Namespace) -> int:
    ts = HLC(args.node).now()
    if args.format == "bytes":
        print(ts.to_bytes().hex())
    elif args.format == "packed":
        print(ts.packed)
    else:
        print(ts)
    return 0


def _decode(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    value: str = args.value.strip()
    try:
        if len(value) == 46:
            ts = Timestamp.parse(value)
        elif len(value) == 32:
            ts = Timestamp.from_bytes(bytes.fromhex(value))
        else:
            ts = Timestamp.from_packed(int(value, 0))
    except ValueError as exc:
        parser.error(f"cannot decode {value!r}: {exc}")
    print(f"text      {ts}")
    print(f"physical  {ts.physical} ms ({ts.to_datetime().isoformat()})")
    print(f"logical   {ts.logical}")
    print(f"node      {ts.node} ({ts.node:#018x})")
    print(f"packed    {ts.packed}")
    print(f"bytes     {ts.to_bytes().hex()}")
    return 0


def _build() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hlcbus", description="Hybrid Logical Clock tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    now = sub.add_parser("now", help="print a timestamp from a new clock")
    now.add_argument("--format", choices=("text", "bytes", "packed"), default="text")
    now.add_argument("--node", type=lambda s: int(s, 0), default=None,
                     help="node id (default: random)")
    decode = sub.add_parser("decode", help="print the fields of a timestamp")
    decode.add_argument("value", help="46-character text, 32 hex digits, or a packed integer")
    decode.set_defaults(subparser=decode)
    demo.parser(sub)
    bench = sub.add_parser("bench", help="a quick run of the bus benchmark (make bench: the "
                           "full one)")
    bench.add_argument("--events", type=int, default=200_000, help="events per round")
    bench.add_argument("--rounds", type=int, default=3, help="rounds; the best is shown")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; return the exit status."""
    parser = _build()
    args = parser.parse_args(argv)
    if args.command == "now":
        return _now(args)
    if args.command == "decode":
        return _decode(args, args.subparser)
    if args.command == "bench":
        quickbench.run(args.events, args.rounds)
        return 0
    return demo.run(args)


if __name__ == "__main__":
    sys.exit(main())
