"""`zhserve bench variants`: CPU latency of every stage's variants against its fp32 file, in the same run.

For each model with a "variants" section, each stage is run on batches of a few shapes (ids within their
bound, unit-scale floats), one onnxruntime thread, fp32 and each variant interleaved so that load on the
machine falls on all of them alike. Prints size and the speed-up over fp32 (fp32 time / variant time: above 1
is faster). `--candidates` also converts the variants model.json left out (into a temporary folder) so that
their speed can be checked again.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from training.common.export import latest_version
from training.common.variants import CONVERT, KINDS, SKIPPED_STAGES, example_batch, latencies, variant_file

MODELS = Path(__file__).resolve().parents[1] / "models"
SHAPES = ((1, 32), (16, 64), (32, 128))  # (rows, sequence length)


def stage_files(version: Path, config: dict, stage: str, candidates: bool, scratch: Path) -> dict[str, Path]:
    spec = config["stages"][stage]
    files = {"fp32": version / spec["file"]}
    for kind in KINDS:
        entry = config.get("variants", {}).get(kind, {})
        if stage in entry.get("files", {}):
            files[kind] = version / entry["files"][stage]
        elif candidates and entry:
            files[kind] = scratch / variant_file(spec["file"], kind)
            CONVERT[kind](version / spec["file"], files[kind])
    return files


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="zhserve bench variants", description=__doc__)
    p.add_argument("--models", default=str(MODELS))
    p.add_argument("--names", nargs="*", help="models to measure (default: every model with variants)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--candidates", action="store_true", help="also the variants left out (converted again)")
    a = p.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for config_path in sorted(Path(a.models).glob("*/model.json")):
            config = json.loads(config_path.read_text(encoding="utf-8"))
            name = config_path.parent.name
            if not config.get("variants") or (a.names and name not in a.names):
                continue
            version = latest_version(config_path.parent)
            for stage, spec in config["stages"].items():
                if stage in SKIPPED_STAGES:
                    continue
                files = stage_files(version, config, stage, a.candidates, Path(scratch))
                for rows, length in SHAPES:
                    feed = example_batch(spec, rows, min(length, spec.get("max_length", length)))
                    times = latencies(files, feed, a.repeats)
                    for kind, path in files.items():
                        results.append({"model": name, "stage": stage, "variant": kind, "rows": rows,
                                        "length": length, "ms": round(times[kind] * 1000, 3),
                                        "speedup": round(times["fp32"] / times[kind], 3),
                                        "mb": round(path.stat().st_size / 1e6, 2)})
                        r = results[-1]
                        print(f"{name:8s} {stage:8s} {kind:5s} {rows:3d}x{length:<4d} {r['ms']:9.2f} ms  "
                              f"x{r['speedup']:.2f} vs fp32  {r['mb']:6.2f} MB", flush=True)
    out = Path(__file__).resolve().parent / "results" / "variants.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
