"""Todo web service."""
