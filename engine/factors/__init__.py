"""Microarchitecture workspace: large 2-D images and label maps (loading, demo data).

``engine.factors.io`` loads grayscale images (PNG, JPEG, TIFF, ``.npy``) and integer label
maps; ``engine.factors.synth`` builds a texture mosaic with an exact region map.
"""
