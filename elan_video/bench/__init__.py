"""Throughput benchmarks: frames through the network (:mod:`.frame`) and videos through the whole pipeline
(:mod:`.video`).
"""
