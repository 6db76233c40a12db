"""The upgrade engine: pure domain code (no Flask)."""
