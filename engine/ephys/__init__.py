"""Ephys workspace: extracellular recordings (raw binary loading, procedural demo data).

``engine.ephys.io`` memory-maps flat binary recordings (samples × channels) described by a
JSON sidecar; ``engine.ephys.synth`` simulates a probe recording with ground-truth spikes.
"""
