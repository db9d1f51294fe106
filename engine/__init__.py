"""NeuroWorkbench engine: the science. Never imports Qt."""

__version__ = "0.1.0"
