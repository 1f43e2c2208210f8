"""Experiments: the evaluation protocol (baselines, phases, sweeps), runs, studies, benchmarks.

May import :mod:`diffisp.training` and everything below it; never :mod:`diffisp.report` or the
CLI (runs write results files; the report layer turns them into figures and pages).
"""
