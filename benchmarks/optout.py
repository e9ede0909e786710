"""Opt-out matching cost: the `opted_out` rule over 1M synthetic rows with a 100,000-entry list, against none.

    .venv/bin/python benchmarks/optout.py [--rows 1000000] [--entries 100000]

Prints seconds per 1M rows for the whole row expression with the list, without it, and the ratio (the machine
is shared: only the ratio within one run means anything).
"""

from __future__ import annotations

import argparse
import random
import string
import time

import polars as pl

from openverse_dataset.transform import optout


def _rs(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=n))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--entries", type=int, default=100_000)
    args = ap.parse_args()
    rng = random.Random(7)
    third = args.entries // 3
    lines = [f"creator https://www.flickr.com/photos/{_rs(rng, 10)}@N0{rng.randint(0, 9)}" for _ in range(third)]
    lines += [f"prefix https://{_rs(rng, 8)}.org/{_rs(rng, rng.randint(3, 30))}/" for _ in range(third)]
    lines += [f"domain {_rs(rng, 10)}.{rng.choice(['com', 'org', 'net'])}" for _ in range(args.entries - 2 * third)]
    t = time.perf_counter()
    opt = optout.parse("\n".join(lines), "bench", "0")
    parse_s = time.perf_counter() - t
    users = [line.split()[1] for line in lines[:third]]
    n = 20_000
    base = pl.DataFrame(
        {
            "creator_url": [rng.choice(users) if i % 50 == 0 else f"https://www.flickr.com/photos/{_rs(rng, 10)}"
                            for i in range(n)],
            "foreign_landing_url": [f"https://www.flickr.com/photos/{_rs(rng, 10)}/{_rs(rng, 11)}" for _ in range(n)],
            "url": [f"https://live.staticflickr.com/{_rs(rng, 4)}/{_rs(rng, 20)}.jpg" for _ in range(n)],
        }
    )  # fmt: skip
    frame = pl.concat([base] * (args.rows // n)).rechunk()
    timings = {}
    for name, o in (("with list", opt), ("without list", optout.NO_OPT_OUTS)):
        t = time.perf_counter()
        hits = optout.match_frame(frame, o).select(pl.col("opted_out").sum()).collect().item()
        timings[name] = (time.perf_counter() - t) * 1e6 / frame.height
        print(f"{name}: {timings[name]:.2f} s per 1M rows ({hits:,} matches of {frame.height:,})")
    calib = time.perf_counter()
    frame.select(pl.col("foreign_landing_url").str.to_lowercase().str.len_bytes().sum())
    calib = (time.perf_counter() - calib) * 1e6 / frame.height
    print(f"parse {args.entries:,} entries: {parse_s:.2f} s; for scale, lower-casing one URL column: "
          f"{calib:.2f} s per 1M rows (matching = {timings['with list'] / calib:.1f}x that)")  # fmt: skip


if __name__ == "__main__":
    main()
