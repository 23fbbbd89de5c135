"""``python -m bench [pipeline|aggregates|search|archive|footprint|backfill|e2e|all] [args]``.

Each benchmark is a module ``bench.<name>`` exposing ``main(argv)``; it is
imported only when asked for, so one benchmark's dependencies never slow down
or break another. ``all`` runs every benchmark module that exists, each with
its defaults. Without a name, ``pipeline`` runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

BENCHMARKS = ("pipeline", "aggregates", "search", "archive", "footprint", "backfill", "e2e")


def available() -> list[str]:
    """The benchmark modules present in this checkout, in :data:`BENCHMARKS` order."""
    return [name for name in BENCHMARKS if importlib.util.find_spec(f"bench.{name}") is not None]


def run(name: str, argv: list[str]) -> None:
    importlib.import_module(f"bench.{name}").main(argv)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    name = args.pop(0) if args and not args[0].startswith("-") else "pipeline"
    if name == "all":
        for each in available():
            print(f"== bench {each} ==", flush=True)
            run(each, [])
            print(flush=True)
        return 0
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}; choose from {', '.join((*BENCHMARKS, 'all'))}", file=sys.stderr)
        return 2
    if name not in available():
        print(f"benchmark {name!r} is not in this checkout (bench/{name}.py)", file=sys.stderr)
        return 2
    run(name, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
