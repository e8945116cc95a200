"""Fake of ``ais_bench.infer`` (tools generation; see the package docstring)."""
