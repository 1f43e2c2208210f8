"""diffisp: a differentiable camera ISP, learned end to end for a downstream vision model.

The package is layered; each layer imports only the layers listed before it (tested by
``tests/test_layers.py``):

=================  ==========================================================================
``errors``, util   error types; validation, atomic file writes, statistics, timing
``ops``            pure maths: batched NHWC JAX functions, no state
``capture``        capture simulation: low light, mixed conditions, RAW unprocessing,
                   the RawCapture type
``isp``            bounded learnable stages, the one stage chain (global and adaptive ISP),
                   classical baselines, datarax operator views
``data``           data sets (CIFAR-10, built-in, folders, COCO/VOC, RAW files)
``models``         task models and their task interface (loss, predict, metrics)
``training``       configuration, the training state, the compiled step, phases, checkpoints
``experiments``    the evaluation protocol, multi-seed studies, benchmarks
``report``         figures and the HTML report
``cli``            the ``diffisp`` command
=================  ==========================================================================

``data`` and ``models`` sit side by side: neither imports the other.
"""

__version__ = "0.1.0"
