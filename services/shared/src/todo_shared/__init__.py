"""Todo shared service."""
