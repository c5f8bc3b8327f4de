"""The benchmarks: scripts that measure the package and write ``benchmarks/results/``.

Each runs from the repository root as a module, e.g. ``python -m benchmarks.train_step
--quick``; the docs name each one's command and the result file it writes. Not part of the
installed package.
"""
