"""/v2 inference through tritonclient[http]: binary tensors (the client's default) against JSON tensors.

One `zhserve serve` process on the shipped models; one client, one request at a time, the same inputs in
both modes (token ids for the mlm encoder; its output is the hidden state of every token, 256 floats each, so
the response dominates). Prints each mode's median latency and the JSON/binary ratio per size.

    zhserve bench v2 [--sizes 1x16 8x64 32x128] [--requests 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from bench.extract import ROOT, free_port, start, stop


def timed(client, inputs, outputs, n: int) -> float:
    """Median seconds of `n` infers (after one untimed)."""
    client.infer("mlm", inputs, outputs=outputs)
    times = []
    for _ in range(n):
        began = time.perf_counter()
        client.infer("mlm", inputs, outputs=outputs)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main(argv: list[str]) -> None:
    import tritonclient.http as triton

    parser = argparse.ArgumentParser(prog="zhserve bench v2", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["1x16", "8x64", "32x128"], help="BATCHxTOKENS")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per mode and size")
    args = parser.parse_args(argv)
    port = free_port()
    proc = start([sys.executable, "-m", "app", "serve", "--models", str(ROOT / "models"), "--port", str(port)],
                 {"ZHSERVE_MAX_BODY_BYTES": str(64 << 20)}, port)
    try:
        client = triton.InferenceServerClient(f"127.0.0.1:{port}", connection_timeout=120, network_timeout=120)
        print(f"{'size':>8} {'binary ms':>10} {'json ms':>10} {'json/binary':>12}")
        for size in args.sizes:
            batch, tokens = map(int, size.split("x"))
            ids = np.random.default_rng(0).integers(5, 8000, (batch, tokens), dtype=np.int64)
            medians = {}
            for binary in (True, False):
                inputs = [triton.InferInput("token_ids", list(ids.shape), "INT64")
                          .set_data_from_numpy(ids, binary_data=binary)]
                outputs = [triton.InferRequestedOutput("hidden", binary_data=binary)]
                medians[binary] = timed(client, inputs, outputs, args.requests)
            print(f"{size:>8} {medians[True] * 1000:>10.1f} {medians[False] * 1000:>10.1f} "
                  f"{medians[False] / medians[True]:>11.2f}x")
    finally:
        stop(proc)


if __name__ == "__main__":
    main(sys.argv[1:])
