"""`python -m bench NAME [args]`: run one benchmark, or `all` of them in turn.

    python -m bench peers [--help]     iPACS beside Orthanc (bench/peers/)
    python -m bench search [--help]    search at 100k and 1M patients (bench/search.py)
    python -m bench ingest-memory [--help]
                                       peak memory while one 1 GB study is ingested (bench/ingest_memory.py)
    python -m bench all                every benchmark with its defaults (`make bench`)

Each writes its own section of docs/performance.md.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def _peers(argv: list[str]) -> None:
    from bench.peers.run import main

    main(argv)


def _search(argv: list[str]) -> None:
    from bench import search

    sys.argv = ["python -m bench search", *argv]
    search.main()


def _ingest_memory(argv: list[str]) -> None:
    from bench.ingest_memory import main

    main(argv)


BENCHMARKS: dict[str, Callable[[list[str]], None]] = {
    "peers": _peers,
    "search": _search,
    "ingest-memory": _ingest_memory,
}


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help") or args[0] not in (*BENCHMARKS, "all"):
        print(__doc__)
        raise SystemExit(0 if args and args[0] in ("-h", "--help") else 2)
    name, rest = args[0], args[1:]
    if name == "all":
        for benchmark in BENCHMARKS.values():
            benchmark([])
    else:
        BENCHMARKS[name](rest)


if __name__ == "__main__":
    main()
