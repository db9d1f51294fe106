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
``motion``
    Rigid / piecewise-rigid subpixel registration (phase correlation, torch FFT, chunked).
``pipeline``
    ``run_cnmf``: registration → centers → fast NMF per patch → merge → deconvolution → evaluation;
    curation edits (add / merge / remove components).
``export``
    Suite2p-compatible folder, ``footprints.npz`` and ``traces.npz``.
``cli``
    ``neurowb cnmf``, ``neurowb deconvolve``, ``neurowb simulate-calcium``.
``synth``
    Simulated movies and traces with ground truth (``recording``: the pipeline benchmark's movie).
"""
