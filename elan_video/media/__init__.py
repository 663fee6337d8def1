"""Reading and writing pictures: still images, animations, HEIF and video (PyAV). Frames cross this layer as
H x W x C numpy arrays (uint8, or uint16 over the full 0..65535 range).

Imports nothing from the model, job, training or bench layers.
"""
