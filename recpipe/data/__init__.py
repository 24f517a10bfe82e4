"""Raw data sources, the canonical schema and Parquet I/O."""
