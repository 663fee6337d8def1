"""VapourSynth filter for ELAN super-resolution: ``from vselan import elan``."""
