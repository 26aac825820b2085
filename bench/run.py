"""`zhserve bench NAME ...`: the benchmarks under bench/."""

from __future__ import annotations

BENCHES = {"extract": "bench.extract", "qa": "bench.qa", "segment": "bench.segment", "explain": "bench.explain",
           "math": "bench.math", "overload": "bench.overload", "memory": "bench.memory",
           "peers": "bench.peers", "v2": "bench.v2", "reload": "bench.reload", "variants": "bench.variants"}


def main(argv: list[str]) -> None:
    import importlib

    if not argv or argv[0] not in BENCHES:
        raise SystemExit(f"usage: zhserve bench {{{','.join(BENCHES)}}} [options]; --help after the name for more")
    importlib.import_module(BENCHES[argv[0]]).main(argv[1:])
