"""diffisp: a differentiable camera ISP, learned end to end for a downstream vision model."""

__version__ = "0.1.0"
