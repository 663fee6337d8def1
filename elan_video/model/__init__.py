"""The network and how it runs: the ELAN architecture (no I/O), checkpoint loading, BatchNorm folding, compiled
backends, memory planning and the :class:`~elan_video.model.upscaler.Upscaler` that turns pixels into pixels.

Imports nothing from the media, job, training or bench layers.
"""
