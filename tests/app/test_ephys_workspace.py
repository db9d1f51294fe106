"""The ephys loop in the GUI: open a simulated recording → Sort (button, job) → select a unit in the
table → model and residual on the traces → merge two (G) → undo (Ctrl+Z) → split by a lasso (K) →
label (Alt+G) → filter the table → reopen the Phy folder and find the curation; screenshot not blank."""

import numpy as np
import pytest
from PyQt6.QtCore import QPoint, QTimer, Qt
from PyQt6.QtWidgets import QApplication

from app.jobs import JobState
from app.ephys.views import points_in_polygon
from app.screenshots import is_blank, save_screenshot
from engine.ephys.phy import read_cluster_groups
from engine.ephys.synth import write_demo_recording

from gui_helpers import answer_next_question, open_in, save_through_button, wait_for_job


@pytest.fixture
def recording(tmp_path):
    raw = tmp_path / "sim.raw"
    write_demo_recording(raw, duration=12.0, n_channels=12, n_units=5, seed=3)
    return raw


def click_row(qtbot, ws, cluster, modifier=Qt.KeyboardModifier.NoModifier):
    row = ws.units.row_of(cluster)
    rect = ws.table.visualItemRect(ws.table.item(row, 0))
    qtbot.mouseClick(ws.table.viewport(), Qt.MouseButton.LeftButton, modifier, rect.center())
    views_drawn(qtbot, ws)


def views_drawn(qtbot, ws):
    """The unit views follow a selection one event-loop turn after the table and traces."""
    qtbot.waitUntil(lambda: not ws.views_timer.isActive(), timeout=5000)


def click_check(qtbot, box):
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(8, box.height() // 2))  # on the indicator


def layer(ws, name, n_channels, x_grid=None):
    """A drawn layer per channel (a channel starts where time goes back); on ``x_grid`` by linear interpolation,
    which is exact where the panel dropped the inside of a flat run (the model's zeros between spikes)."""
    x, y = ws.traces.curves[name].getData()
    ends = np.flatnonzero(np.diff(x) < 0) + 1
    xs, ys = np.split(x, ends), np.split(y, ends)
    assert len(xs) == n_channels
    if x_grid is None:
        return np.array(xs), np.array(ys)
    return x_grid, np.array([np.interp(x_grid[i], xs[i], ys[i]) for i in range(n_channels)])


def test_sort_view_curate_and_reload(window, qtbot, recording, tmp_path, monkeypatch):
    ws = open_in(window, qtbot, recording)
    assert ws.key == "ephys" and ws.curation is None and ws.sort_button.isEnabled()
    assert "sim_phy/" in ws.output_label.text()
    assert not ws.show_model.isEnabled()  # no model before sorting

    # Sort through the button: a background job with per-stage progress
    messages = []
    with qtbot.waitSignal(window.jobs.job_added, timeout=5000) as blocker:
        qtbot.mouseClick(ws.sort_button, Qt.MouseButton.LeftButton)
    job = blocker.args[0]
    job.progressed.connect(lambda f, m: messages.append(m))
    assert ws.cancel_button.isEnabled() and not ws.sort_button.isEnabled()
    wait_for_job(qtbot, job, timeout=120000)
    assert job.state is JobState.FINISHED, job.error and job.error.details
    folder = tmp_path / "sim_phy"
    assert (folder / "params.py").is_file() and ws.curation is not None and ws.curation.folder == folder
    assert len(set(messages)) >= 3, messages  # the stages report
    c = ws.curation
    ids = [int(i) for i in c.cluster_ids]
    assert len(ids) >= 3 and ws.table.rowCount() == len(ids)
    assert ws.show_model.isEnabled() and not ws.cancel_button.isEnabled()

    # select the biggest unit by clicking its row: the views follow
    rows = {r["cluster_id"]: r for r in c.rows()}
    a = max(rows, key=lambda k: rows[k]["snr"])
    click_row(qtbot, ws, a)
    assert ws.selected == [a]
    assert a in ws.views.amplitude_points and len(ws.views.amplitude_points[a][0]) == rows[a]["n_spikes"]
    assert ws.views.drawn  # waveforms, footprint, correlograms drawn
    assert ws.similar.rowCount() == len(ids) - 1

    # Phy's wizard keys: Space pairs the unit with its most similar one, then the next; Shift+Space goes back
    similar = [cid for cid, _ in c.similar(a)]
    said = []  # one selection, held by the session: the table, the views and the panel follow its signal
    ws.session.selection_changed.connect(said.append)
    qtbot.keyClick(ws, Qt.Key.Key_Space)
    assert ws.selected == [a, similar[0]] and said == [[a, similar[0]]] and ws.session.selected == ws.selected
    assert set(ws.units.shown_selection()) == {a, similar[0]}  # the table shows a selection made elsewhere
    assert not hasattr(ws.units, "selected")
    qtbot.keyClick(ws, Qt.Key.Key_Space)
    assert ws.selected == [a, similar[1]] and ws.similar.selectedItems()[0].row() == 1
    qtbot.keyClick(ws, Qt.Key.Key_Space, Qt.KeyboardModifier.ShiftModifier)
    assert ws.selected == [a, similar[0]]
    click_row(qtbot, ws, a)

    # go to one of its spikes with a short window (no decimation), then toggle model and residual
    ws.window_seconds.setValue(0.02)
    ws.go_to(c.spike_times[c.spikes(a)[3]] / c.sample_rate)
    click_check(qtbot, ws.show_model)
    click_check(qtbot, ws.show_residual)
    assert ws.show_model.isChecked() and ws.show_residual.isChecked()
    assert ws.data_kind.currentText() == "Preprocessed"
    n_ch = ws.n_shown.value()
    for name in ("data", "model", "residual"):
        assert ws.traces.curves[name].isVisible() and len(ws.traces.curves[name].getData()[0]) > 0
    x, data = layer(ws, "data", n_ch)
    _, model = layer(ws, "model", n_ch, x)
    _, resid = layer(ws, "residual", n_ch)
    offsets = -np.arange(n_ch)[:, None] * ws.spacing.value()
    np.testing.assert_allclose(resid, data - model + offsets, atol=1e-2)  # residual = data − model
    peak = rows[a]["peak_channel"]
    assert np.ptp(model[peak]) > 0.5 * np.ptp(data[peak])  # the model holds the unit's spike
    assert (~ws.traces.curves["model"].opts["connect"]).sum() > n_ch  # its zeros between spikes are left blank
    assert len(ws.traces.markers.data) > 0  # spike markers
    click_check(qtbot, ws.show_residual)
    assert not ws.traces.curves["residual"].isVisible()

    # merge two units with G (Ctrl-click the second row), then undo with Ctrl+Z
    b = next(k for k in ids if k != a)
    click_row(qtbot, ws, b, Qt.KeyboardModifier.ControlModifier)
    assert ws.selected == [a, b]
    qtbot.keyClick(ws, Qt.Key.Key_G)
    new = max(ids) + 1
    assert ws.selected == [new] and set(ws.curation.cluster_ids) == set(ids) - {a, b} | {new}
    assert ws.table.rowCount() == len(ids) - 1
    assert ws.stage_label.text().startswith(f"{len(ids) - 1} units in ")  # the stage line counts as the table does
    assert set(np.load(folder / "spike_clusters.npy")) == set(ids) - {a, b} | {new}  # autosaved
    qtbot.keyClick(ws, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert set(ws.curation.cluster_ids) == set(ids) and set(ws.selected) == {a, b}
    assert set(np.load(folder / "spike_clusters.npy")) == set(ids)
    qtbot.keyClick(ws, Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)  # redo, then undo again
    assert new in ws.curation.cluster_ids
    qtbot.keyClick(ws, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)

    # split unit a with a lasso around its larger-amplitude spikes (Ctrl-clicks on the amplitude view), K
    click_row(qtbot, ws, a)
    t, amp, _ = ws.views.amplitude_points[a]
    amp_uv = amp * 1e6
    cut = float(np.median(amp_uv))
    top = float(amp_uv.max()) * 1.05
    end = ws.curation.duration
    for x, y in ((0.0, cut), (end, cut), (end, top), (0.0, top)):
        qtbot.mouseClick(ws.views.click_target(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ControlModifier,
                         ws.views.amplitude_position(x, y))
    assert len(ws.views.lasso) == 4 and ws.split_button.isEnabled()
    # clicks land on whole pixels: the lasso's edge is the median give or take a pixel's worth of µV
    lasso = np.array(ws.views.lasso)
    assert np.abs(lasso[:, 1] * 1e6 - [cut, cut, top, top]).max() < 0.02 * top
    expected = int(points_in_polygon(t, amp, lasso).sum())
    assert abs(expected - int((amp_uv > cut).sum())) <= 0.1 * len(amp_uv)
    qtbot.keyClick(ws, Qt.Key.Key_K)
    inside, rest = new + 1, new + 2  # ids are never reused, even after an undo
    assert ws.selected == [inside, rest]
    assert len(ws.curation.spikes(inside)) == expected
    assert len(ws.curation.spikes(inside)) + len(ws.curation.spikes(rest)) == rows[a]["n_spikes"]
    assert not ws.views.lasso

    # Phy's feature view: merge `rest` with a unit elsewhere on the probe, then take that unit back
    # out with a lasso around its spikes in feature space (Ctrl-clicks on the feature view), K
    c_unit = next(k for k in ids if k not in (a, b) and rows[k]["peak_channel"] != rows[a]["peak_channel"])
    c_spikes = set(ws.curation.spikes(c_unit).tolist())
    click_row(qtbot, ws, rest)
    click_row(qtbot, ws, c_unit, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClick(ws, Qt.Key.Key_G)
    views_drawn(qtbot, ws)
    merged = rest + 1
    assert ws.selected == [merged] and ws.views.feature_channels is not None
    fx, fy, spikes = ws.views.feature_points[merged]
    assert len(spikes) == len(ws.curation.spikes(merged)) and "PC1" in ws.views.features.titleLabel.text
    of_c = np.isin(spikes, list(c_spikes)) & ~np.isnan(fx) & ~np.isnan(fy)
    assert of_c.sum() > 0.9 * len(c_spikes)
    qtbot.wait(50)  # the feature view's auto range settles
    span = max(np.nanmax(fx) - np.nanmin(fx), np.nanmax(fy) - np.nanmin(fy))
    x0, x1 = fx[of_c].min() - 0.005 * span, fx[of_c].max() + 0.005 * span
    y0, y1 = fy[of_c].min() - 0.005 * span, fy[of_c].max() + 0.005 * span
    for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
        qtbot.mouseClick(ws.views.click_target(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ControlModifier,
                         ws.views.plot_position(ws.views.features, x, y))
    assert len(ws.views.lasso) == 4 and ws.views.lasso_plot is ws.views.features
    qtbot.keyClick(ws, Qt.Key.Key_K)
    views_drawn(qtbot, ws)
    back = set(ws.curation.spikes(merged + 1).tolist())
    assert len(back & c_spikes) > 0.95 * len(c_spikes) and len(back - c_spikes) < 0.05 * len(c_spikes)
    # Phy's feature axes: Ctrl-click a channel on the waveform view for x, Shift-click another for y
    x_ch, y_ch = [int(ch) for ch in ws.views._waveform_channels if ch not in ws.views.feature_channels][:2]
    for modifier, ch in ((Qt.KeyboardModifier.ControlModifier, x_ch), (Qt.KeyboardModifier.ShiftModifier, y_ch)):
        qtbot.mouseClick(ws.views.click_target(), Qt.MouseButton.LeftButton, modifier,
                         ws.views.plot_position(ws.views.waveforms, *ws.curation.positions[ch]))
    assert ws.views.feature_channels == (x_ch, y_ch) and f"ch {x_ch} → ch {y_ch}" in ws.views.features.titleLabel.text
    fx, fy, _ = ws.views.feature_points[merged + 1]
    ref, _ = ws.curation.features_of(merged + 1, [x_ch, y_ch])
    np.testing.assert_array_equal(np.c_[fx, fy], ref)
    qtbot.mouseClick(ws.views.click_target(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ControlModifier,
                     ws.views.plot_position(ws.views.waveforms, *ws.curation.positions[y_ch]))
    assert ws.views.feature_channels == (y_ch, x_ch)  # x takes y's channel: the axes swap
    qtbot.keyClick(ws, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # back to the merge, then before it
    qtbot.keyClick(ws, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert {rest, c_unit} <= set(ws.curation.cluster_ids)

    # label b good with Alt+G: table row and file follow
    click_row(qtbot, ws, b)
    qtbot.keyClick(ws, Qt.Key.Key_G, Qt.KeyboardModifier.AltModifier)
    assert read_cluster_groups(folder)[b] == "good"
    row = ws.units.row_of(b)
    assert ws.table.item(row, ws.table.columnCount() - 1).text() == "good"
    assert ws.table.item(row, 0).background().color().name() == "#dcfce7"
    qtbot.keyClick(ws, Qt.Key.Key_N, Qt.KeyboardModifier.AltModifier)  # relabel noise, then undo back to good
    assert read_cluster_groups(folder)[b] == "noise"
    qtbot.keyClick(ws, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert read_cluster_groups(folder)[b] == "good"

    # Export units to NWB… (the save dialog answered): the label is in the file's Units table
    import pynwb

    # the session metadata form is asked once per folder: its answers are in the file, and remembered
    form = {"session_description": "Probe recording, day 3", "experimenter": "Doe, Jane; Roe, Rick", "subject_id": "M7",
            "species": "Mus musculus", "sex": "F", "age": "P60D", "location": "VISp"}
    save_through_button(window, qtbot, monkeypatch, ws.export_nwb_button, tmp_path / "units", metadata=form)
    with pynwb.NWBHDF5IO(str(tmp_path / "units.nwb"), "r") as io:
        nwb = io.read()
        units = nwb.units
        assert units["quality"][list(units.id[:]).index(b)] == "good" and len(units) == len(ws.curation.cluster_ids)
        assert list(nwb.experimenter) == ["Doe, Jane", "Roe, Rick"] and nwb.subject.age == "P60D"
        assert nwb.session_description == "Probe recording, day 3"
    from app.dialogs import NwbMetadataDialog

    monkeypatch.setattr(NwbMetadataDialog, "exec", lambda self: pytest.fail("asked again for the same folder"))
    from PyQt6.QtWidgets import QFileDialog

    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(tmp_path / "again.nwb"), "")))
    wait_for_job(qtbot, ws.export_nwb())
    with pynwb.NWBHDF5IO(str(tmp_path / "again.nwb"), "r") as io:
        assert io.read().subject.subject_id == "M7"

    # the filter box keeps matching rows only
    qtbot.keyClicks(ws.units.filter, "good")
    assert ws.units.visible_clusters() == [b]
    ws.units.filter.clear()
    assert len(ws.units.visible_clusters()) == ws.table.rowCount()

    qtbot.wait(200)
    assert not is_blank(save_screenshot(window, tmp_path / "ephys.png"))

    # reopen the folder (its params.py): the curation is there, and the raw is found from dat_path
    clusters_before = ws.curation.spike_clusters.copy()
    ws = open_in(window, qtbot, folder / "params.py")
    assert ws.curation is not None and ws.recording is not None and ws.recording.path == recording
    np.testing.assert_array_equal(ws.curation.spike_clusters, clusters_before)
    assert ws.curation.groups[b] == "good" and {inside, rest} <= set(ws.curation.cluster_ids)
    assert ws.table.rowCount() == len(ws.curation.cluster_ids)


def test_sort_can_be_cancelled(window, qtbot, recording):
    ws = open_in(window, qtbot, recording)
    job = ws.run_sort()
    qtbot.mouseClick(ws.cancel_button, Qt.MouseButton.LeftButton)
    wait_for_job(qtbot, job, timeout=60000)
    assert job.state is JobState.CANCELLED  # the sort takes seconds; the click lands in milliseconds
    assert ws.curation is None and "cancelled" in ws.stage_label.text()
    assert not (recording.parent / "sim_phy").exists()
    assert ws.sort_button.isEnabled() and not ws.cancel_button.isEnabled()


def test_resorting_over_curated_work_asks_first(window, qtbot, recording):
    from engine.ephys.curation import is_curated

    ws = open_in(window, qtbot, recording)
    wait_for_job(qtbot, ws.run_sort(), timeout=120000)
    folder = ws.curation.folder
    ws.curation.label(ws.curation.cluster_ids[:2], "good")
    before = (folder / "cluster_group.tsv").read_text()
    asked = answer_next_question("Cancel")
    assert ws.run_sort() is None  # cancelled: no job, nothing moved
    assert asked and "curation" in asked[0] and "Sort again" not in ws.stage_label.text()
    assert (folder / "cluster_group.tsv").read_text() == before and ws.curation.counts()["good"] == 2
    answer_next_question("Sort again")
    job = ws.run_sort()  # confirmed, then cancelled: the curated folder and the view are as they were
    qtbot.mouseClick(ws.cancel_button, Qt.MouseButton.LeftButton)
    wait_for_job(qtbot, job, timeout=120000)
    assert job.state is JobState.CANCELLED and "unchanged" in ws.stage_label.text()
    assert (folder / "cluster_group.tsv").read_text() == before and ws.curation.counts()["good"] == 2
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith((folder.name + "_", "."))] == []
    asked = answer_next_question("Sort again")
    job = ws.run_sort()
    assert asked and job is not None
    wait_for_job(qtbot, job, timeout=120000)
    assert job.state is JobState.FINISHED and ws.curation.counts()["good"] == 0 and not is_curated(folder)
    kept = [p for p in folder.parent.iterdir() if p.name.startswith(folder.name + "_")]
    assert len(kept) == 1 and (kept[0] / "cluster_group.tsv").read_text() == before


def test_traces_load_in_background_latest_request_wins(window, qtbot, recording, monkeypatch):
    import time

    from app.ephys import panel as panel_module
    from app.ephys.traces import load_traces

    ws = open_in(window, qtbot, recording)
    monkeypatch.setattr(panel_module, "SYNC_MAX_VALUES", 0)  # every window goes through the loader
    loads = []

    def slow_load(request, progress=None):  # a big probe: each window takes a while to read
        for _ in range(15):
            time.sleep(0.01)
            progress.check()
        loads.append(request.id)
        return load_traces(request, progress)

    ws.loader._load = slow_load
    ws.window_seconds.setValue(1.0)
    qtbot.waitUntil(lambda: not ws.loader.busy and ws._frame_id == ws._request_id, timeout=10000)
    x_before = ws.traces.curves["data"].getData()[0][0]
    assert x_before == 0.0

    # five quick presses of → : the GUI keeps the old frame meanwhile, the three in between are never read
    loads.clear()
    for _ in range(5):
        qtbot.keyClick(ws, Qt.Key.Key_Right)
    assert ws.traces.curves["data"].getData()[0][0] == x_before  # no freeze, no partial frame
    assert ws.view_start == pytest.approx(2.5)
    qtbot.waitUntil(lambda: not ws.loader.busy and ws._frame_id == ws._request_id, timeout=10000)
    # read: the latest, and the first press unless the latest (no overlap with it) cancelled it
    assert loads[-1] == ws._frame_id == ws._request_id and len(loads) <= 2 and ws.loader.dropped >= 3
    x, y = layer(ws, "data", ws.n_shown.value())
    assert x[0, 0] == pytest.approx(2.5, abs=1e-4)
    start = int(round(2.5 * ws.recording.sample_rate))
    expected = ws.source.filtered(start, start + int(ws.recording.sample_rate), slice(0, ws.n_shown.value()))
    assert np.ptp(y[3]) == pytest.approx(float(np.ptp(expected[:, 3])), rel=1e-5)  # min/max decimation keeps the extremes
    assert ws.traces.position.text().startswith("2.500–3.500 s")

    # a far jump while a window loads cancels that load; the jump's window is drawn
    loads.clear()
    cancelled = ws.loader.cancelled
    qtbot.keyClick(ws, Qt.Key.Key_Right)
    ws.go_to(9.0)
    qtbot.waitUntil(lambda: not ws.loader.busy and ws._frame_id == ws._request_id, timeout=10000)
    assert ws.loader.cancelled == cancelled + 1 and len(loads) == 1
    assert layer(ws, "data", ws.n_shown.value())[0][0, 0] == pytest.approx(8.5, abs=1e-4)
    # once idle, the tiles half a window around the view are filtered ahead of the next scroll
    qtbot.waitUntil(lambda: ws.loader.prefetching is None, timeout=10000)
    rate = ws.recording.sample_rate
    assert ws.source.is_cached(int(8.0 * rate), int(10.0 * rate))
    ws.loader.wait()


def test_reopening_a_folder_returns_to_the_last_view(window, qtbot, recording, settings):
    """Phy-like: the selection, time window, channels and layers of a Phy folder come back when it is
    reopened, even in a new window; a view saved for another sort of the same folder is ignored."""
    from app.main import MainWindow
    from engine.ephys.curation import VIEW_FILE

    ws = open_in(window, qtbot, recording)
    wait_for_job(qtbot, ws.run_sort(), timeout=120000)
    ids = [int(i) for i in ws.curation.cluster_ids]
    assert ws.selected == ws.units.visible_clusters()[:1]  # the default: the table's first row
    pick = [ids[-1], ids[1]]
    click_row(qtbot, ws, pick[0])
    click_row(qtbot, ws, pick[1], Qt.KeyboardModifier.ControlModifier)
    ws.window_seconds.setValue(0.05)
    ws.go_to(3.0)
    ws.first_channel.setValue(2)
    click_check(qtbot, ws.show_model)
    start = ws.view_start
    folder = ws.curation.folder
    window.close()  # saves the view still waiting for its timer
    assert (folder / VIEW_FILE).is_file()

    again = MainWindow(settings)
    qtbot.addWidget(again)
    again.show()
    ws2 = open_in(again, qtbot, folder / "params.py")
    assert ws2 is not ws and ws2.selected == pick
    assert ws2.window_seconds.value() == pytest.approx(0.05) and ws2.view_start == pytest.approx(start, abs=0.01)
    assert ws2.first_channel.value() == 2 and ws2.show_model.isChecked()
    assert ws2.traces.x_range()[0] == pytest.approx(start, abs=0.01)  # the traces are drawn there

    # a re-sort into the same folder drops the old view: reopening shows the defaults
    wait_for_job(qtbot, ws2.run_sort(), timeout=120000)
    again.close()
    third = MainWindow(settings)
    qtbot.addWidget(third)
    third.show()
    ws3 = open_in(third, qtbot, folder / "params.py")
    assert ws3.selected == ws3.units.visible_clusters()[:1]

    # a damaged view file is ignored, never an error: garbage, then the right sort with wrong types
    import json

    for text in ("{not json", json.dumps({"sort": ws3.view_state()["sort"], "selected": 5, "window_s": "wide",
                                          "first_channel": None, "model": "yes"})):
        ws3.view_state_timer.stop()  # nothing pending that would overwrite the damaged file
        (folder / VIEW_FILE).write_text(text)
        ws3 = open_in(third, qtbot, folder / "params.py")
        assert ws3.curation is not None and ws3.selected == ws3.units.visible_clusters()[:1]
    third.jobs.shutdown(3000)


def test_points_in_polygon_hand_cases():
    square = np.array([[0, 0], [2, 0], [2, 2], [0, 2]], float)
    x = np.array([1.0, 3.0, -0.5, 1.0, np.nan])
    y = np.array([1.0, 1.0, 1.0, 2.5, 1.0])
    np.testing.assert_array_equal(points_in_polygon(x, y, square), [True, False, False, False, False])  # NaN: outside
    notch = np.array([[0, 0], [4, 0], [4, 4], [2, 1], [0, 4]], float)  # concave: the notch from the top reaches y=1
    np.testing.assert_array_equal(points_in_polygon(np.array([2.0, 1.0, 3.0]), np.array([2.0, 2.0, 0.5]), notch),
                                  [False, True, True])
    assert not points_in_polygon(np.array([1.0]), np.array([1.0]), square[:2]).any()  # under 3 points: no lasso


def test_nwb_files_go_to_the_workspace_that_reads_them(window, qtbot, recording, tmp_path):
    """An .nwb with an ElectricalSeries opens in Ephys (read lazily, no copy), even from Calcium; one
    with a TwoPhotonSeries opens in Calcium, even from Ephys."""
    import datetime as dt

    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ecephys import ElectricalSeries
    from pynwb.ophys import OpticalChannel, TwoPhotonSeries

    from engine.ephys.io import RawRecording

    def nwb_file(name):
        return NWBFile(session_description="t", identifier=name, session_start_time=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))

    original = RawRecording(recording)
    ephys = nwb_file("ephys")
    group = ephys.create_electrode_group(name="shank", description="", location="brain", device=ephys.create_device(name="probe"))
    for i in range(original.n_channels):
        ephys.add_electrode(group=group, location="brain", rel_x=0.0, rel_y=20.0 * i)
    ephys.add_acquisition(ElectricalSeries(name="ElectricalSeries", data=np.asarray(original.raw), rate=original.sample_rate,
                                           electrodes=ephys.create_electrode_table_region(list(range(original.n_channels)), "all"),
                                           conversion=original.params.gain_uv * 1e-6))
    imaging = nwb_file("imaging")
    plane = imaging.create_imaging_plane(name="plane", optical_channel=OpticalChannel(name="ch", description="", emission_lambda=520.0),
                                         imaging_rate=10.0, description="", device=imaging.create_device(name="scope"),
                                         excitation_lambda=920.0, indicator="GCaMP", location="V1")
    movie = np.random.default_rng(0).integers(0, 1000, (40, 24, 24)).astype(np.uint16)
    imaging.add_acquisition(TwoPhotonSeries(name="TwoPhotonSeries", data=movie, imaging_plane=plane, rate=10.0, unit="a.u."))
    for nwb, name in ((ephys, "ephys.nwb"), (imaging, "imaging.nwb")):
        with NWBHDF5IO(str(tmp_path / name), "w") as io:
            io.write(nwb)

    window.show_workspace("calcium")
    ws = open_in(window, qtbot, tmp_path / "ephys.nwb")
    assert ws.key == "ephys" and ws.raw_path == tmp_path / "ephys.nwb" and ws.sort_button.isEnabled()
    assert ws.recording.n_channels == original.n_channels and ws.probe_path.name == "ephys.nwb"  # its electrodes' positions
    np.testing.assert_allclose(ws.recording.read(0, 300), original.read(0, 300), atol=1e-3)
    assert not (tmp_path / "ephys.raw").exists()
    ws = open_in(window, qtbot, tmp_path / "imaging.nwb")
    assert ws.key == "calcium" and ws.movie.shape == movie.shape


def test_a_sort_belongs_to_its_recording(window, qtbot, tmp_path):
    """Opening recording B while A sorts: A's Phy folder is written beside A, the view stays on B."""
    from engine.ephys.curation import is_phy_folder, phy_folder_for

    a, b = tmp_path / "a" / "a.raw", tmp_path / "b" / "b.raw"
    for path, seed in ((a, 3), (b, 4)):
        path.parent.mkdir()
        write_demo_recording(path, duration=12.0, n_channels=12, n_units=5, seed=seed)
    ws = open_in(window, qtbot, a)
    job = ws.run_sort()
    assert open_in(window, qtbot, b) is ws and job.is_running
    wait_for_job(qtbot, job, timeout=120000)
    assert job.state is JobState.FINISHED, job.error and job.error.details
    assert ws.current_path == b and ws.raw_path == b and ws.curation is None
    assert is_phy_folder(phy_folder_for(a)) and not phy_folder_for(b).exists()
    assert "a.raw" in window.statusBar().currentMessage() and ws.sort_button.isEnabled()


def test_spikeglx_run_opens_without_questions(window, qtbot, tmp_path, monkeypatch):
    """A Neuropixels run opened by its .ap.bin or its folder: no layout dialog, 384 channels (sync left out),
    the rate, gain and probe from the .meta."""
    from lab_files import write_spikeglx

    from app.ephys.params_dialog import RecordingParamsDialog

    monkeypatch.setattr(RecordingParamsDialog, "exec", lambda self: pytest.fail("asked for a layout the file states"))
    counts = np.random.default_rng(0).integers(-40, 40, (3000, 384)).astype(np.int16)
    bin_path = write_spikeglx(tmp_path, counts)
    for path in (bin_path, bin_path.parent.parent):
        ws = open_in(window, qtbot, path)
        assert ws.key == "ephys" and ws.recording.n_channels == 384 and ws.recording.sample_rate == 30000
        assert ws.info.values["gain_uv"].text().startswith("2.34") and ws.probe_path == bin_path.with_suffix(".meta")
        assert ws.sort_button.isEnabled()


def test_real_recording_traces_spaced_by_noise_and_layout_remembered(window, qtbot, tmp_path, shared_data):
    """The locust tetrode at gain 1 (ADC counts): the default spacing follows the measured noise (no wall of
    overlapping traces), the spacing control sits under the traces, and the layout typed for trial 1 is
    offered again for trial 2 of the same folder."""
    import shutil

    from app.ephys.params_dialog import RecordingParamsDialog
    from engine.ephys.preprocess import robust_sd

    for name in ("locust_trial_01.raw", "locust_trial_02.raw"):
        shutil.copy(shared_data / "ephys" / "locust" / name, tmp_path / name)
    offered = []

    def fill_dialog(first: bool):
        dialog = next((w for w in QApplication.topLevelWidgets() if isinstance(w, RecordingParamsDialog) and w.isVisible()), None)
        if dialog is None:
            QTimer.singleShot(50, lambda: fill_dialog(first))
            return
        offered.append((dialog.n_channels.value(), dialog.sample_rate.value(), dialog.offset.value()))
        if first:
            dialog.n_channels.setValue(4)
            dialog.sample_rate.setValue(15000)
            dialog.offset.setValue(2056)
        dialog.save_sidecar.setChecked(False)  # only the window's memory may carry the layout over
        dialog.accept()

    QTimer.singleShot(100, lambda: fill_dialog(True))
    ws = open_in(window, qtbot, tmp_path / "locust_trial_01.raw")
    assert ws.recording.n_channels == 4 and not (tmp_path / "locust_trial_01.json").exists()
    assert ws.traces.isAncestorOf(ws.spacing) and not ws.curation_box.isAncestorOf(ws.spacing)  # under the traces
    assert ws.spacing_auto.isChecked()
    # the default spacing: 10 × the median channel's robust noise SD of the preprocessed data (README: MAD 44–56 counts)
    sd = robust_sd(ws.source.preprocessed(0, ws.recording.n_samples), axis=0)
    assert ws.spacing.value() == pytest.approx(10 * np.median(sd), rel=0.15)
    assert 300 < ws.spacing.value() < 800  # was 150 µV: a wall at 3 σ
    # the drawn traces keep apart: the middle 90 % of each channel's drawn extremes stays within its own lane
    x, y = layer(ws, "data", 4)
    for i in range(4):
        lo, hi = np.percentile(y[i] + i * ws.spacing.value(), [5, 95])
        assert hi - lo < 0.8 * ws.spacing.value()
    # Raw (with its slow waves) has its own noise; a spacing typed by hand stays
    ws.data_kind.setCurrentText("Raw")
    assert ws.spacing.value() == pytest.approx(float(f"{10 * np.median(ws.source.noise_uv('raw')):.2g}"))
    ws.spacing.clear()
    qtbot.keyClicks(ws.spacing, "900")
    qtbot.keyClick(ws.spacing, Qt.Key.Key_Return)
    assert ws.spacing.value() == 900 and not ws.spacing_auto.isChecked()
    assert ws.traces.spacing == 900
    qtbot.mouseClick(ws.spacing_auto, Qt.MouseButton.LeftButton)
    assert ws.spacing_auto.isChecked() and ws.spacing.value() < 900

    QTimer.singleShot(100, lambda: fill_dialog(False))
    ws = open_in(window, qtbot, tmp_path / "locust_trial_02.raw")
    assert offered[1] == (4, 15000, 2056)  # the layout of trial 1, offered for the next file of the folder
    assert ws.recording.n_channels == 4 and ws.recording.sample_rate == 15000


def test_selected_units_waveforms_are_read_off_the_gui_thread_latest_selection_wins(window, qtbot, recording, monkeypatch):
    """Selecting a unit draws at once (the model's mean) and reads its 40 spike windows in the background; a
    newer selection makes an older read's result land in the cache only, never on the views."""
    import threading
    import time

    from engine.ephys import curation as engine_curation

    ws = open_in(window, qtbot, recording)
    wait_for_job(qtbot, ws.run_sort(), timeout=120000)
    a, b = [int(c) for c in ws.curation.cluster_ids[:2]]
    threads, release = [], threading.Event()
    original = engine_curation.Curation.waveforms

    def slow(self, source, cluster, *args, **kwargs):
        if source is not None:
            threads.append(threading.current_thread())
            release.wait(10)
        return original(self, source, cluster, *args, **kwargs)

    monkeypatch.setattr(engine_curation.Curation, "waveforms", slow)
    started = time.perf_counter()
    ws.select([a])
    views_drawn(qtbot, ws)
    assert time.perf_counter() - started < 5 and ws.selected == [a] and ws.views.drawn  # drawn without the read
    job_a = ws._waveform_job
    assert job_a.is_running and a not in ws._waveforms
    ws.select([b])
    views_drawn(qtbot, ws)
    job_b = ws._waveform_job
    assert job_b is not job_a
    release.set()
    for job in (job_a, job_b):
        wait_for_job(qtbot, job, timeout=30000)
    assert threads and all(t is not threading.main_thread() for t in threads)
    assert b in ws._waveforms and len(ws._waveforms[b]["samples"]) > 0  # the spikes of the unit shown
    assert ws.selected == [b]


def test_sorted_units_arrive_in_turns_and_views_keep_their_items(window, qtbot, recording, monkeypatch):
    """The sort's result redraws the traces once, and leaves the unit views to the next event-loop turn; of
    several selections made in one turn the views draw only the latest, into the items they already hold
    (adding and removing plot items per selection cost more than drawing them)."""
    ws = open_in(window, qtbot, recording)
    views_drawn(qtbot, ws)  # the opened recording's empty views
    redraws, drawn = [], []
    show_units = ws.views.show_units
    monkeypatch.setattr(ws, "redraw", lambda: redraws.append(1))
    monkeypatch.setattr(ws.views, "show_units", lambda c, clusters, w: (drawn.append(list(clusters)), show_units(c, clusters, w)))
    job = ws.run_sort()
    after_result = []  # connected after the workspace's handler: runs right after it
    job.finished.connect(lambda _out: after_result.append((len(redraws), len(drawn))))
    wait_for_job(qtbot, job, timeout=120000)
    assert after_result == [(1, 0)]  # one trace redraw; no view drawn inside the result handler
    views_drawn(qtbot, ws)
    assert drawn == [ws.selected] and ws.selected == ws.units.visible_clusters()[:1]
    plots = (ws.views.waveforms, ws.views.footprint, ws.views.correlogram, ws.views.isi, ws.views.amplitude, ws.views.features)
    items = [list(plot.items) for plot in plots]
    a, b, c = [int(k) for k in ws.curation.cluster_ids[:3]]
    drawn.clear()
    for selection in ([a], [b], [c, a]):
        ws.select(selection)
    views_drawn(qtbot, ws)
    assert drawn == [[c, a]] and ws.views.amplitude_points.keys() == {a, c}
    assert [list(plot.items) for plot in plots] == items  # the same items, given new data
    assert ws.views._means[1].isVisible() and not ws.views._means[2].isVisible()
