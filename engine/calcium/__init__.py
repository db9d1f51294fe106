"""Calcium workspace: imaging movies (lazy loading, summary images, procedural demo data).

``engine.calcium.io`` opens TIFF stacks, ``.npy`` arrays and HDF5 datasets as a lazily read
:class:`~engine.calcium.io.Movie`; ``engine.calcium.synth`` simulates a movie with
ground-truth footprints, calcium traces and spikes.
"""
