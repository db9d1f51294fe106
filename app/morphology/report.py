"""The spine classifier's evaluation report: per-class metrics, confusion matrix and folds."""

from __future__ import annotations

import numpy as np
from PyQt6.QtCore import Qt
from PyQt6.QtGui import QBrush, QColor, QGuiApplication
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from engine.mesh.spines import Evaluation
from engine.storage import atomic_save_json


def _number(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def _item(text: str, sort_value: float | None = None) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
    if sort_value is not None:  # numbers sort as numbers, not as text
        item.setData(Qt.ItemDataRole.EditRole, float(sort_value) if np.isfinite(sort_value) else -1.0)
        item.setData(Qt.ItemDataRole.DisplayRole, text)
    return item


def _table(headers: list[str], rows: list[list[QTableWidgetItem]]) -> QTableWidget:
    table = QTableWidget(len(rows), len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.verticalHeader().setVisible(False)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    for r, row in enumerate(rows):
        for c, item in enumerate(row):
            table.setItem(r, c, item)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
    return table


def _fit_rows(table: QTableWidget) -> QTableWidget:
    """Fix a short table's height to its rows, so the dialog's spare room goes to the folds."""
    table.resizeRowsToContents()
    height = table.horizontalHeader().sizeHint().height() + 2 * table.frameWidth()
    height += sum(table.rowHeight(r) for r in range(table.rowCount()))
    table.setFixedHeight(height)
    table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    return table


class EvaluationDialog(QDialog):
    """Non-modal report of a leave-one-mesh-out (or halves) evaluation.

    The confusion matrix shows counts, shaded by the share of each true class (row) so the
    diagonal reads as recall; folds are sortable to find the meshes the model gets wrong.
    """

    def __init__(self, evaluation: Evaluation, description: str, parent=None):
        super().__init__(parent)
        self.evaluation = evaluation
        what = "leave-one-mesh-out" if evaluation.split == "leave-one-out" else "halves split (one labelled mesh)"
        self.setWindowTitle(f"Spine classifier — {what}")
        self.resize(720, 640)
        layout = QVBoxLayout(self)
        summary = (f"<b>{what}</b>, {len(evaluation.folds)} fold(s); metrics pooled over folds.<br>"
                   f"Accuracy {_number(evaluation.accuracy)} · weighted F1 {_number(evaluation.weighted_f1)}")
        if "spine" in evaluation.class_names and len(evaluation.folds) > 1:
            summary += f" · mean spine F1 over folds {_number(evaluation.mean_fold_f1())}"
        header = QLabel(summary + f"<br><small>{description}</small>")
        header.setWordWrap(True)
        layout.addWidget(header)

        names = list(evaluation.class_names)
        self.metrics = _table(["class", "precision", "recall", "F1", "support"], [
            [_item(n), _item(_number(p)), _item(_number(r)), _item(_number(f)), _item(f"{s:,}")]
            for n, p, r, f, s in zip(names, evaluation.precision, evaluation.recall, evaluation.f1, evaluation.support)])
        layout.addWidget(QLabel("Per class"))
        layout.addWidget(_fit_rows(self.metrics))

        self.confusion = self._confusion_table(evaluation.confusion, names)
        layout.addWidget(QLabel("Confusion matrix (rows: true class, columns: predicted; shade = share of the row)"))
        layout.addWidget(_fit_rows(self.confusion))

        fold_rows = []
        for fold in evaluation.folds:
            f1 = [fold.f1(i) for i in range(len(names))]
            fold_rows.append([_item(fold.name), _item(f"{fold.n_train:,}", fold.n_train), _item(f"{fold.n_test:,}", fold.n_test)]
                             + [_item(_number(v), v) for v in f1])
        self.folds = _table(["held out", "train vertices", "test vertices"] + [f"{n} F1" for n in names], fold_rows)
        self.folds.setSortingEnabled(True)
        self.folds.sortItems(0, Qt.SortOrder.AscendingOrder)
        layout.addWidget(QLabel("Folds (click a header to sort)"))
        layout.addWidget(self.folds, stretch=1)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        copy = QPushButton("Copy as Markdown")
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(evaluation.table(folds=True)))
        save = QPushButton("Save JSON…")
        save.clicked.connect(self._save_json)
        buttons.addButton(copy, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(save, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.close)
        layout.addWidget(buttons)

    @staticmethod
    def _confusion_table(confusion: np.ndarray, names: list[str]) -> QTableWidget:
        rows = confusion.sum(axis=1, keepdims=True)
        share = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
        table = _table(["true \\ predicted"] + names, [
            [_item(name)] + [_item(f"{int(v):,}  ({100 * s:.0f} %)") for v, s in zip(row, shares)]
            for name, row, shares in zip(names, confusion, share)])
        for r in range(len(names)):
            for c in range(len(names)):
                strength = int(40 + 180 * share[r, c])
                color = QColor(60, 140, 90, strength) if r == c else QColor(210, 70, 50, strength)
                table.item(r, c + 1).setBackground(QBrush(color))
        return table

    def _save_json(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save evaluation", "spine_evaluation.json", "JSON (*.json)")
        if path:
            atomic_save_json(path, self.evaluation.to_dict())
