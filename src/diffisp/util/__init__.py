"""Foundations every layer may use: input validation, atomic file writes, statistics, timing.

Imports nothing from diffisp but :mod:`diffisp.errors`.
"""
