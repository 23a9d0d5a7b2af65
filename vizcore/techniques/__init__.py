"""Visualization techniques, one module per family (see each module's docstring)."""
