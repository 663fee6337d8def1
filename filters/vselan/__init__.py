"""VapourSynth filter for ELAN super-resolution: ``from vselan import elan``.

Importing this package imports VapourSynth and numpy only: no core is created and no model or torch is loaded
until :func:`elan` is called.
"""

from __future__ import annotations

from .filter import CONVERT_HINT, default_precision, elan

__all__ = ["CONVERT_HINT", "default_precision", "elan"]
