"""Fake of ``ais_bench.infer`` (see the package docstring)."""
