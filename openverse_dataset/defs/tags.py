"""Tags that carry facts between sensors and assets."""

# Raw materializations carry the catalog watermark the extract read as their data version (an indexed tag).
WATERMARK_TAG = "dagster/data_version"
REFRESH_TAKEDOWNS_TAG = "openverse/refresh_takedowns"  # on runs: clean snapshots the takedown tables first
# Slice runs: the catalog change (the provider's watermark token) a round of slice runs answers, on the slice
# runs and on the provider run that assembles them; and which provider a slice run belongs to.
CATALOG_CHANGE_TAG = "openverse/catalog_change"
SLICE_OF_TAG = "openverse/slice_of"
