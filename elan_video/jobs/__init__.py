"""Jobs that join the model and media layers: :func:`~elan_video.jobs.pipeline.upscale_video` (images, animations,
videos), the streaming engine that overlaps decode, inference and encode, the folder job, and long videos in
segments: planning and encoding (:mod:`.segments`), their files (:mod:`.segment_file`), the work folder that makes
a rerun resume (:mod:`.workdir`) and the stitch that joins them without re-encoding (:mod:`.stitch`).
"""
