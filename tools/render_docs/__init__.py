"""The docs tool: renders the measured tables of ``README.md`` and ``docs/*.md`` from the
committed result files under ``benchmarks/results/``, and checks that every page equals its
rendering.

Every measured table, with its notes and a ``Source:`` line, sits between two markers
(:mod:`tools.render_docs.pages`). :mod:`~tools.render_docs.blocks` maps each block id to its
result files and its renderer: :mod:`~tools.render_docs.accuracy` (the comparisons, with
:mod:`dscl_plugin.evaluation.comparison`'s tables and paired readings) or
:mod:`~tools.render_docs.performance` (speed, memory, set-up);
:mod:`~tools.render_docs.results` reads the files and their metadata (or a
``<name>.meta.json`` beside a file written before its script recorded them) into the
``Source:`` line: the file, the commit(s), the command, the machine and, where a time is
shown, the load. ± is the sample std (n − 1) over seeds; a paired difference inside its ±
is a tie (:func:`dscl_plugin.evaluation.comparison.paired_reading`).

    python -m tools.render_docs            # rewrite every block of every page
    python -m tools.render_docs --check    # exit 1 naming the blocks that differ

A block whose file ``benchmarks/remeasure.sh`` writes (``Block.made_by``) shows what to run
while that file is missing; every other block fails without its files.
"""
