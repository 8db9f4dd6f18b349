"""Measurements of the project (each a script: `python benchmarks/NAME.py --help`); a package so that
scripts/gpu/run.py can import the frontier's rows (benchmarks/frontier_rows.py)."""
