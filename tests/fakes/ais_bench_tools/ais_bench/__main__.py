"""``python3 -m ais_bench``: the package's __main__.py runs infer/__main__.py as the main program
(T ais_bench/__main__.py:1-3)."""
import os
import runpy

runpy.run_path(os.path.join(os.path.dirname(os.path.realpath(__file__)), "infer", "__main__.py"), run_name="__main__")
