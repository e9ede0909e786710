"""openverse-dataset: Openverse's catalog as license-filtered datasets on the Hugging Face Hub."""

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
