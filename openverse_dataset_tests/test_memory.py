"""Memory knobs: the allocator settings the package applies at import, and the extract's batch copy."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa

from openverse_dataset.catalog.extract import _own

# Allocates ~256 MiB in Arrow's pool in 512 KiB arrays (a batch's column buffers), frees them, and reports
# resident memory before and 0.3 s after: with jemalloc's default decay (1 s dirty + 1 s muzzy) the freed pages
# stay; with the package's (30 ms dirty, no muzzy) they are gone.
PROBE = """
import json, os, sys, time
import openverse_dataset
import pyarrow as pa

def rss():
    return int([l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1]) // 1024

base = rss()
arrays = [pa.array(range(65_536), pa.int64()) for _ in range(500)]
held = rss()
del arrays
time.sleep(0.3)
env = os.environ.get
print(json.dumps({"base": base, "held": held, "after": rss(), "pool": pa.default_memory_pool().backend_name,
                  "arrow_conf": env("JE_ARROW_MALLOC_CONF"), "polars_conf": env("_RJEM_MALLOC_CONF")}))
"""


def _probe(env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_arrow_memory_leaves_the_process_within_a_decay_of_30_ms():
    env = {k: v for k, v in os.environ.items() if k not in ("JE_ARROW_MALLOC_CONF", "_RJEM_MALLOC_CONF")}
    env.pop("ARROW_DEFAULT_MEMORY_POOL", None)
    got = _probe(env)
    assert got["pool"] == "jemalloc"
    assert got["arrow_conf"] == got["polars_conf"] == "dirty_decay_ms:30,muzzy_decay_ms:0"
    assert got["held"] - got["base"] > 200, got  # the probe really held its arrays
    assert got["after"] - got["base"] < 80, got  # ... and they are gone from RSS without waiting for the default decay


def test_an_explicit_allocator_setting_wins():
    env = dict(os.environ, JE_ARROW_MALLOC_CONF="dirty_decay_ms:1000,muzzy_decay_ms:1000")
    got = _probe(env)
    assert got["arrow_conf"] == "dirty_decay_ms:1000,muzzy_decay_ms:1000"
    assert got["after"] - got["base"] > 110, got  # the decay keeps the freed pages: the knob is what frees them


def test_owned_batch_is_an_equal_copy_sharing_no_buffer():
    batch = pa.record_batch(
        {
            "identifier": pa.array([f"id-{i}" for i in range(1000)]),
            "width": pa.array([i if i % 3 else None for i in range(1000)], pa.int32()),
            "tags": pa.array([[{"name": "cat"}]] * 1000),
        }
    ).slice(10, 500)
    owned = _own(batch)
    assert owned.equals(batch) and owned.schema == batch.schema
    addresses = {b.address for col in batch.columns for b in col.buffers() if b is not None}
    assert not addresses & {b.address for col in owned.columns for b in col.buffers() if b is not None}


# A process that loads the code location (what Dagster's run workers, the daemon and the code server do), then
# makes 2M reference cycles that become garbage at once: the process grows ~370 MiB with the collector off.
GC_PROBE = """
import gc, json
import openverse_dataset.definitions

def rss():
    return int([l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1]) // 1024

base = rss()
for _ in range(2_000_000):
    a, b = [], []
    a.append(b)
    b.append(a)
print(json.dumps({"threshold": gc.get_threshold(), "grew_mib": rss() - base}))
"""


def test_a_process_that_loads_the_code_location_collects_less_often_and_still_frees_cycles():
    """The package raises CPython's collection thresholds wherever it is imported (a 2M refresh spent 1.3-1.5 s
    in ~1,000 collections at the default); cyclic garbage is still collected, only in bigger batches."""
    from openverse_dataset import GC_THRESHOLD

    out = subprocess.run([sys.executable, "-c", GC_PROBE], capture_output=True, text=True, check=True)
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert tuple(probe["threshold"]) == GC_THRESHOLD != (700, 10, 10)
    assert probe["grew_mib"] < 150, probe  # collected along the way (9 MiB measured; 368 with the collector off)
