"""Ephys workspace: extracellular recordings, spike sorting by deconvolution, QC, Phy export.

``io``          memory-mapped flat binary recordings (samples × channels) and their JSON sidecar
``probe``       probe geometry: probeinterface JSON, Kilosort channel maps (.json/.mat), linear default
``preprocess``  band-pass, common median reference, ZCA whitening — chunked with exact borders
``clustering``  template initialization: threshold crossings → PCA features → clusters → merges
``sorter``      the deconvolution model X = Σ a_k ⊛ W_k + noise (coordinate ascent, torch conv1d)
``phy``         Phy-compatible output folder (read/write, curation files)
``qc``          per-unit quality metrics (firing rate, SNR, ISI violations, presence, ...)
``groundtruth`` accuracy against ground truth (SpikeInterface's definitions)
``synth``       a simulated probe recording with ground-truth spikes
``cli``         ``neurowb sort``, ``neurowb qc``, ``neurowb simulate-ephys``
"""
