"""Benchmarks of pgpitr against pgBackRest (and barman-cloud) and against the machine's limits.

``python -m bench [--scale N] [--runs N] [--quick]`` (``make bench BENCH_ARGS=...``) builds a
pgbench database, measures full backups, WAL archiving and restores to a time with pgpitr's engine
and with its peers, alternating runs, and writes a table to the terminal and a JSON file under
``bench/results/``.  Nothing here is part of the test suite; nothing is asserted: the targets of
DESIGN.md are compared and reported.
"""
