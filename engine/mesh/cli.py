"""`neurowb hks` and `neurowb spines ...` (registered through the neurowb.commands entry point)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the morphology commands (filled in by the HKS and spine-classifier modules)."""
