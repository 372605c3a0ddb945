"""stereodrr: stereo X-ray simulation and calibration.

Stages (data flows left to right): ``geometry`` -> ``volume`` / ``phantoms`` -> ``render`` ->
``calib`` -> ``register`` -> ``dataset``; ``plot`` and ``cli`` sit on top.
"""

__version__ = "0.1.0"

import os as _os

# Idle OpenMP workers sleep instead of spinning (libgomp reads this when torch loads it, so it
# must come before any import of torch); unless the user chose a policy. Why and what it
# measured: stereodrr.render.threads.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
