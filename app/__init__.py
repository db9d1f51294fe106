"""NeuroWorkbench desktop application (PyQt6). Never computes science: it runs engine functions in jobs."""
