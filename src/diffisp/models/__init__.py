"""Task models: the networks an ISP is trained for, and how each is scored.

May import :mod:`diffisp.ops`, :mod:`diffisp.util` and :mod:`diffisp.errors`; never the ISP,
data, training or anything above (a task model knows nothing of what feeds it).
"""
