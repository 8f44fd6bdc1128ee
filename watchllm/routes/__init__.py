"""Thin HTTP handlers; the work happens in the feature packages."""
