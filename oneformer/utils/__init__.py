"""Utilities: checkpoint loading with a clear report of what was (not) loaded."""
