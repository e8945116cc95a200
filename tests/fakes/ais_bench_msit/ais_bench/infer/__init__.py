"""Fake of ``ais_bench.infer`` (msit generation; see the package docstring)."""
