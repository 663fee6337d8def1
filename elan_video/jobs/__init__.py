"""Jobs that join the model and media layers: :func:`~elan_video.jobs.pipeline.upscale_video` (images, animations,
videos), the streaming engine that overlaps decode, inference and encode, and the folder job.
"""
