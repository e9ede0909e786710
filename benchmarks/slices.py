"""Bounded partitions benchmark: flickr extracted whole vs in identifier-range slices, and the planning count.

    .venv/bin/python benchmarks/slices.py                    # 2,000,000 rows (flickr ~1.4M), bound 200,000
    .venv/bin/python benchmarks/slices.py --rows 200000 --bound 20000   # a quick smoke run

Creates a scratch catalog on 127.0.0.1:5432 (synth.py, Openverse's DDL plus prepare-catalog's indexes; dropped at
the end), then, in one temporary data directory each:
1. `count(*)` of flickr, the only query planning adds (a provider never extracted is counted once);
2. flickr's raw extract as one unit (the bound far above its rows);
3. flickr's raw extract in slices of at most `--bound` rows (each slice its own snapshot), then the clean of
   each slice and the assembly of the provider's folders;
4. a refresh of the sliced provider with nothing changed (each slice reads only its range's overlap window).
Prints seconds per step, slices, the largest slice and each slice's extract seconds (its snapshot's duration),
and writes `benchmarks/results/slices-<rows>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import synth  # noqa: E402  (benchmarks/synth.py: scratch databases)

ADMIN_URL = os.environ.get("OPENVERSE_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--bound", type=int, default=200_000)
    args = ap.parse_args()

    from openverse_dataset.catalog.prepare import prepare_catalog
    from openverse_dataset.catalog.refresh import refresh_raw
    from openverse_dataset.catalog.slices import count_rows, refresh_provider
    from openverse_dataset.layout import DataLayout
    from openverse_dataset.media import IMAGE
    from openverse_dataset.transform.partition import clean_provider

    name = f"bench_slices_{uuid.uuid4().hex[:8]}"
    url = synth.create_database(ADMIN_URL, name)
    out: dict = {"rows": args.rows, "bound": args.bound}
    try:
        synth.populate(url, 1, args.rows)
        prepare_catalog(url)
        t = time.perf_counter()
        flickr = count_rows(url, IMAGE, "flickr")
        out["count_seconds"], out["flickr_rows"] = round(time.perf_counter() - t, 3), flickr
        with tempfile.TemporaryDirectory() as tmp:
            for label, bound in (("whole", 10**12), ("sliced", args.bound)):
                layout = DataLayout(Path(tmp) / label)
                times: list[float] = []

                def timed(*a, _times=times, **kw):
                    s = time.perf_counter()
                    r = refresh_raw(*a, **kw)
                    _times.append(round(time.perf_counter() - s, 2))
                    return r

                one = partial(timed, url, IMAGE, "flickr", layout)
                t = time.perf_counter()
                raw = refresh_provider(url, IMAGE, "flickr", layout, bound=bound, refresh=one)
                extract_s = time.perf_counter() - t
                t = time.perf_counter()
                clean_provider(layout, IMAGE, "flickr")
                out[label] = {
                    "extract_seconds": round(extract_s, 2),
                    "clean_seconds": round(time.perf_counter() - t, 2),
                    "slices": raw.slices,
                    "largest_unit_rows": max(r.extract.rows for r in raw.results),
                    "unit_extract_seconds": times,
                }
                if label == "sliced":
                    t = time.perf_counter()
                    again = refresh_provider(
                        url,
                        IMAGE,
                        "flickr",
                        layout,
                        bound=bound,
                        refresh=partial(refresh_raw, url, IMAGE, "flickr", layout),
                    )
                    out[label]["refresh_unchanged_seconds"] = round(time.perf_counter() - t, 2)
                    out[label]["refresh_modes"] = sorted({r.mode for r in again.results})
                print(label, json.dumps(out[label]), flush=True)
    finally:
        synth.drop_database(ADMIN_URL, name)
    print(json.dumps(out, indent=1))
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / f"slices-{args.rows}.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
