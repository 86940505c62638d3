"""What a run records: device activity spans and per-token rows."""
