"""gradserve's benchmarks: `python -m bench` (or `make bench`) prints one table of ratios.

This package must not import numpy at import time: `bench.__main__` clears the OpenBLAS
overrides from the environment first, and they only take effect before numpy loads.
"""
