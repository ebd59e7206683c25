"""Side-by-side benchmarks: each line a ratio against a reference measured in the same run.

Run from the repository root, e.g. ``.venv/bin/python -m bench.locate``; see README.md here.
"""
