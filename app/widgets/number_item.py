"""A table cell that sorts by its number; a missing value (NaN) sorts last in either order."""

from __future__ import annotations

import math

from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QTableWidgetItem


class NumberItem(QTableWidgetItem):
    """Shows ``text``, sorts by ``value``. A NaN (a metric that cannot be computed: too few spikes)
    goes to the bottom whether the column sorts up or down, so the numbers stay at the top."""

    def __init__(self, value: float, text: str):
        super().__init__(text)
        self.value = float(value)
        self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def __lt__(self, other):
        if not isinstance(other, NumberItem):
            return super().__lt__(other)
        mine, theirs = math.isnan(self.value), math.isnan(other.value)
        if not (mine or theirs):
            return self.value < other.value
        table = self.tableWidget()
        descending = table is not None and table.horizontalHeader().sortIndicatorOrder() == Qt.SortOrder.DescendingOrder
        # Qt puts the larger items last when sorting up and the smaller ones last when sorting down
        return (mine and not theirs) if descending else (theirs and not mine)
