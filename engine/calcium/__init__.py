"""Calcium workspace: imaging movies, summary images, demixing (fast NMF) and spike deconvolution.

``io``
    TIFF stacks, ``.npy`` arrays and HDF5 datasets as a lazily read :class:`~engine.calcium.io.Movie`;
    mean / max / std images.
``noise``
    Noise σ of traces from their high-frequency power spectrum (the one place it is estimated).
``summary``
    Per-pixel noise, local correlation and peak-to-noise images (``detection_images``); neuron centers.
``nmf``
    Fast localized NMF of a movie patch (shapes confined around centers, HALS, downsampling).
``deconvolution``
    AR(1) spike deconvolution under a noise constraint: exact fast solver and CVXPY reference.
``synth``
    Simulated movies and traces with ground truth.
"""
