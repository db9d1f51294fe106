"""One action registry per workspace: F1 lists the current workspace's keys beside the window's own,
and a registered key runs its action (a disabled action's key does nothing)."""

import pytest
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QPushButton

from app.actions import ActionRegistry
from engine.calcium.synth import write_recording
from engine.factors.synth import write_demo_mosaic

from gui_helpers import open_in

EXPECTED = {
    "ephys": ["G\tMerge", "K\tSplit", "Alt+G\tLabel good", "Alt+M\tLabel mua", "Alt+N\tLabel noise",
              "Space\tNext similar unit", "Shift+Space\tPrevious similar unit"],
    "calcium": ["A\tAccept", "R\tReject", "M\tMerge", "+\tAdd ROI", "N\tNext uncertain ROI", "Space\tPlay", "Del or Backspace\tDelete"],
    "morphology": ["T\tTrain", "N\tNext uncertain region", "1\tShaft brush", "2\tSpine brush", "3\tSoma brush",
                   "V\tView", "E\tErase", "[\tSmaller brush", "]\tLarger brush", "Esc\tBack to view"],
    "factors": ["P\tPolygon", "B\tBrush", "E\tEraser", "V\tPan", "Backspace\tDrop last vertex", "Return or double-click\tClose polygon"],
}


def press_f1(window, qtbot):
    qtbot.keyClick(window, Qt.Key.Key_F1)
    dialog = window.shortcuts_dialog
    assert dialog.isVisible()
    text = dialog.text()
    dialog.close()
    return text


def listed(row, text):
    return any(line == row or line.startswith(row + "\t") for line in text.splitlines())


@pytest.mark.parametrize("key", list(EXPECTED))
def test_f1_lists_the_current_workspace_keys_and_the_window_keys(window, qtbot, key):
    window.show_workspace(key)
    text = press_f1(window, qtbot)
    for row in EXPECTED[key]:
        assert listed(row, text), f"{row!r} missing from F1 in {key}:\n{text}"
    for other, rows in EXPECTED.items():  # another workspace's keys are not listed
        for row in rows:
            assert other == key or row in EXPECTED[key] or not listed(row, text), (row, other)
    assert listed("Ctrl+O\tOpen", text) and listed("F1\tKeyboard shortcuts", text)
    lines = text.splitlines()
    assert lines[0].startswith(window.current_workspace.registry.title) and "Window" in lines  # the workspace's keys first


def test_registered_keys_run_their_action_in_each_workspace(window, qtbot, tmp_path):
    morphology = window.workspaces[[w.key for w in window.workspaces].index("morphology")]
    window.show_workspace("morphology")
    brush = morphology.brush.value()
    qtbot.keyClick(morphology, Qt.Key.Key_BracketRight)
    assert morphology.brush.value() == pytest.approx(brush * 1.25)

    path, _truth = write_recording(tmp_path / "rec", n_frames=60, height=32, width=32, n_cells=3, seed=1)
    calcium = open_in(window, qtbot, path)
    assert calcium.key == "calcium"
    qtbot.keyClick(calcium, Qt.Key.Key_Space)
    assert calcium.play_button.isChecked()
    qtbot.keyClick(calcium, Qt.Key.Key_Space)
    assert not calcium.play_button.isChecked()

    window.show_workspace("ephys")
    ephys = window.current_workspace
    steps = []
    ephys.step_time = steps.append  # the shortcut looks the method up when pressed
    qtbot.keyClick(ephys, Qt.Key.Key_Right)
    assert steps == [0.5]
    assert not ephys.merge_button.isEnabled() and "(G)" in ephys.merge_button.toolTip()
    qtbot.keyClick(ephys, Qt.Key.Key_G)  # nothing to merge: the key says why instead of doing nothing silently
    assert window.statusBar().currentMessage().startswith("Merge is not available now: Select two or more units")

    factors = open_in(window, qtbot, write_demo_mosaic(tmp_path / "mosaic.png", size=128, n_cells=4, seed=1))
    assert factors.key == "factors"
    qtbot.keyClick(factors, Qt.Key.Key_B)
    assert factors.tool_buttons["brush"].isChecked()
    qtbot.keyClick(factors, Qt.Key.Key_P)
    assert factors.tool_buttons["polygon"].isChecked()

    # Ctrl+Z / Ctrl+Shift+Z walk one history across regions (not the selected region's last shape)
    first = factors.add_region()
    factors._polygon_drawn([(5, 5), (40, 5), (40, 40)])
    one_polygon = factors.regions.rasterize()
    factors.add_region()
    factors._polygon_drawn([(60, 60), (100, 60), (100, 100)])
    factors._select_region(first)
    drawn = factors.regions.rasterize()
    qtbot.keyClick(factors, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert "Undid the polygon" in window.statusBar().currentMessage(), window.statusBar().currentMessage()
    assert (factors.regions.rasterize() == one_polygon).all()
    qtbot.keyClick(factors, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert (factors.regions.rasterize() == drawn).all()


@pytest.mark.parametrize("key", list(EXPECTED))
def test_every_workspace_has_undo_and_redo_keys(window, qtbot, key):
    window.show_workspace(key)
    text = press_f1(window, qtbot)
    assert listed("Ctrl+Z\tUndo", text) and any(line.startswith("Ctrl+Shift+Z") and "\tRedo" in line
                                                 for line in text.splitlines()), text


def test_a_disabled_action_ignores_its_key_and_its_button_follows(qtbot):
    from PyQt6.QtWidgets import QWidget

    owner = QWidget()
    qtbot.addWidget(owner)
    state = {"ready": False, "runs": 0}
    registry = ActionRegistry(owner, "Test")
    registry.add("Run", lambda: state.__setitem__("runs", state["runs"] + 1), "X", enabled=lambda: state["ready"])
    button = registry.bind("Run", QPushButton("Run"))
    assert not button.isEnabled() and "X" in button.toolTip()
    registry.trigger("Run")
    assert state["runs"] == 0
    state["ready"] = True
    registry.refresh()
    assert button.isEnabled()
    button.click()
    assert state["runs"] == 1
    with pytest.raises(ValueError):
        registry.add("Run", lambda: None, "Y")
