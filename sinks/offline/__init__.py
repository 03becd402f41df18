"""The Parquet offline store: rows, layout, exactly-once writer, catalog of live files, compaction."""
