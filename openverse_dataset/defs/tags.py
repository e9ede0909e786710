"""Tags that carry facts between sensors and assets."""

# Raw materializations carry the catalog watermark the extract read as their data version (an indexed tag).
WATERMARK_TAG = "dagster/data_version"
REFRESH_TAKEDOWNS_TAG = "openverse/refresh_takedowns"  # on runs: clean snapshots the takedown tables first
