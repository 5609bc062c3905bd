"""Todo api service."""
