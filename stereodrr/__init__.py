"""stereodrr: stereo X-ray simulation and calibration.

Stages (data flows left to right): ``geometry`` -> ``volume`` / ``phantoms`` -> ``render`` ->
``calib`` -> ``register`` -> ``dataset``; ``plot`` and ``cli`` sit on top.
"""

__version__ = "0.1.0"
