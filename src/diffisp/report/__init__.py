"""Report: figures and the self-contained HTML page of a run or a study.

May import every layer below the CLI.
"""
