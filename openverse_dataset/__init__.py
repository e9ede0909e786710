"""openverse-dataset: Openverse's catalog as license-filtered datasets on the Hugging Face Hub."""

import gc
import os

# Allocators are configured when their library first loads, so they are set here, before any module imports
# pyarrow or polars. Explicit values in the environment win.
# Why jemalloc for Arrow: pyarrow's default mimalloc keeps freed segments resident; the clean step of a 1.4M-row
# partition peaked at ~520 MiB with it and ~450 MiB with jemalloc, at the same speed.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
# Freed pages go back to the OS 30 ms after they are freed instead of after Arrow's and polars' jemalloc decay
# (1 s dirty, then 1 s "muzzy" with MADV_FREE, still counted in RSS). An extract frees a 100k-row group (~90 MiB)
# every second or so and the clean's polars plan a chunk's worth every few tens of ms, so the default decay kept
# one to two of them resident on top of the live ones (200k-row partition: extract peak 458 -> 389 MiB, clean
# 472 -> 428 MiB). No decay at all (0 ms, the setting until 2026-12-04) costs time: every free became an madvise
# and the next allocation a page fault; a 1.4M-row flickr clean took 37.9 s at 0 ms against 22.8 s at 30 ms for
# the same peak (571 vs 563 MiB), and a clean merge of four license folders 15.5 s against 7.5 s (+40 MiB).
# Measured in docs/scale.md, "Memory".
_DECAY = "dirty_decay_ms:30,muzzy_decay_ms:0"
os.environ.setdefault("JE_ARROW_MALLOC_CONF", _DECAY)
os.environ.setdefault("_RJEM_MALLOC_CONF", _DECAY)

# The cyclic garbage collector runs after 100k net container allocations instead of 700. A run process holds
# Dagster's object graph, and the steps allocate Python containers in bursts (Parquet footers decoded into lists,
# Arrow and polars wrappers, Dagster events), so at the default every few hundred allocations a collection walked
# the young objects and every so often all of them: 1.3-1.5 s of collections in a 2M-row catalog's refresh
# (~19 s), 0.26-0.32 s with these thresholds, the same peak RSS (458-462 MiB). Short-lived containers are freed by
# reference counting before a collection ever sees them; cycles are still collected, only later. Every process that
# imports the package gets it: the CLI, Dagster's run workers, the daemon and the code server.
GC_THRESHOLD = (100_000, 20, 10)
gc.set_threshold(*GC_THRESHOLD)
