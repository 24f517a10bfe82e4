"""Great Expectations validation of the canonical tables."""
