"""Morphology workspace: neuron surface meshes (loading, summaries, procedural demo data).

``engine.mesh.io`` reads meshes (PLY, OBJ, OFF, STL, glTF/GLB through trimesh; MeshParty
HDF5 through h5py) into a plain :class:`~engine.mesh.io.Mesh`; ``engine.mesh.synth`` builds
a spiny dendrite with known spine labels for the demo and for tests.
"""
