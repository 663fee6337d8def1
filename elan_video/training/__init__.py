"""Training and evaluation: MATLAB-exact bicubic and patch sampling, the trainer, the standard SR evaluation protocol
and its metrics.
"""
