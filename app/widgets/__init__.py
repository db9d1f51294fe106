"""Reusable views shared by the workspaces."""
