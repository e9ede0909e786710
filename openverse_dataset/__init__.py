"""openverse-dataset: Openverse's catalog as license-filtered datasets on the Hugging Face Hub."""

import os

# Allocators are configured when their library first loads, so they are set here, before any module imports
# pyarrow or polars. Explicit values in the environment win.
# Why jemalloc for Arrow: pyarrow's default mimalloc keeps freed segments resident; the clean step of a 1.4M-row
# partition peaked at ~520 MiB with it and ~450 MiB with jemalloc, at the same speed.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
# Freed pages go back to the OS at once instead of after Arrow's and polars' jemalloc decay (1 s dirty, then 1 s
# "muzzy" with MADV_FREE, still counted in RSS). An extract frees a 100k-row group (~90 MiB) every second or so
# and the clean's polars plan a chunk's worth every few tens of ms, so the decay kept one to two of them
# resident on top of the live ones: measured on a 200k-row partition, extract peak 458 -> 389 MiB at the same
# speed, clean 472 -> 428 MiB (docs/scale.md, "Memory").
os.environ.setdefault("JE_ARROW_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")
