"""vseg: video semantic segmentation with temporal models (STT, MRCFA).

The command-line tool `vseg` is a thin shell over this package; scripts can import
`vsegcli.api` (load a checkpoint, segment frames or whole videos) directly.
"""
from __future__ import annotations

__version__ = "0.1.0"

from vsegcli._omp import prefer_short_spin

# Before anything imports torch: idle OpenMP workers spin briefly, then sleep (vsegcli/runtime/threads.py).
prefer_short_spin()

from vsegcli.errors import VsegError

__all__ = ["VsegError", "__version__"]
