"""Test harness: real engines started on loopback for the project's tests."""
