"""Per-document metrics, aggregation and statistics (pure numpy/scipy)."""
