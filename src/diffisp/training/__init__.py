"""Training: the run configuration, the training state, the compiled step, phases, checkpoints.

May import :mod:`diffisp.isp`, :mod:`diffisp.data`, :mod:`diffisp.models` and the layers below
them; never :mod:`diffisp.experiments`, :mod:`diffisp.report` or the CLI.
"""
