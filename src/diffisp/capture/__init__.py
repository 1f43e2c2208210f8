"""The capture layer: how a camera records a clean scene (below the ISP, above the maths).

* :mod:`~diffisp.capture.low_light` - uniform low light: every image darkened alike, Gaussian
  or Poisson-Gaussian noise (the reference's model);
* :mod:`~diffisp.capture.mixed` - per-image conditions: brightness, ISO-like gain and noise,
  colour cast, blur;
* :mod:`~diffisp.capture.unprocess` - RAW captures from sRGB images (Brooks et al. 2019), with
  the real cameras' colour matrices of :mod:`~diffisp.capture.camera_matrices`;
* :mod:`~diffisp.capture.raw_capture` - :class:`RawCapture`, the Bayer mosaic and metadata a
  RAW ISP takes in (simulated or read from a file).

May import :mod:`diffisp.ops`, :mod:`diffisp.util` and :mod:`diffisp.errors`; nothing above.
"""
