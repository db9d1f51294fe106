"""The drift map in the Ephys workspace: a sort shows its spikes at once; a Phy folder with
spike_positions.npy and motion.npz opens with the spikes at their depths and one motion line per
depth block; a selected unit's spikes are drawn in its colour; D switches traces / drift map."""

import numpy as np
import pyqtgraph as pg
import pytest
from PyQt6.QtCore import Qt

from app.ephys.driftmap import NO_MOTION
from app.jobs import JobState
from app.screenshots import is_blank, save_screenshot
from engine.ephys.synth import write_demo_recording

from gui_helpers import open_in, wait_for_job


@pytest.fixture
def recording(tmp_path):
    raw = tmp_path / "sim.raw"
    write_demo_recording(raw, duration=12.0, n_channels=12, n_units=5, seed=3)
    return raw


def drift_shown(ws, qtbot):
    qtbot.waitUntil(lambda: ws.drift.drift is not None and ws.drift.folder == ws.curation.folder, timeout=30000)
    qtbot.wait(50)
    return ws.drift.drift


def test_drift_map_follows_sorts_and_phy_folders(window, qtbot, recording, tmp_path):
    ws = open_in(window, qtbot, recording)
    assert ws.drift.drift is None and ws.drift.image.image is None
    with qtbot.waitSignal(window.jobs.job_added, timeout=5000) as blocker:
        qtbot.mouseClick(ws.sort_button, Qt.MouseButton.LeftButton)
    wait_for_job(qtbot, blocker.args[0], timeout=120000)
    assert blocker.args[0].state is JobState.FINISHED
    drift = drift_shown(ws, qtbot)
    c = ws.curation
    # our sorter writes each spike's position (spike_positions.npy), which the map uses first
    assert drift.n_total == len(c.spike_times) == len(drift.spikes) and drift.depth_source == "spike positions"
    assert (c.folder / "spike_positions.npy").exists()
    assert f"{drift.n_total:,} spikes" in ws.drift.summary.text()
    folder = c.folder
    # a Phy folder without them (as other sorters write) falls back to the PC features
    (folder / "spike_positions.npy").unlink()
    (folder / "motion.npz").unlink(missing_ok=True)
    ws.drift.drift = None
    open_in(window, qtbot, folder)
    drift = drift_shown(ws, qtbot)
    c = ws.curation
    assert drift.n_total == len(c.spike_times) == len(drift.spikes) and drift.depth_source == "PC features"
    # each unit's spikes sit near its peak channel's depth (channels 20 µm apart on the assumed linear probe)
    for row in c.rows():
        mine = c.spike_clusters[drift.spikes] == row["cluster_id"]
        assert abs(np.median(drift.depths_um[mine]) - row["depth_um"]) < 25, row
    assert ws.drift.note.text() == NO_MOTION and not ws.drift.motion_lines

    # the same folder with spike positions and an estimated motion: reopened, both are shown
    n = drift.n_total
    units = c.spike_clusters % 3
    depths = (100.0 + 60.0 * units).astype(np.float32)
    np.save(folder / "spike_positions.npy", np.stack([np.zeros(n, np.float32), depths], axis=1))
    bins = np.arange(0.0, 12.0, 1.0)
    displacement = np.stack([5 * np.sin(bins), -5 * np.sin(bins)], axis=1).astype(np.float32)
    np.savez(folder / "motion.npz", temporal_bins_s=bins, spatial_bins_um=np.array([60.0, 180.0]),
             displacement_um=displacement, rigid=np.array(False))
    ws.drift.drift = None
    open_in(window, qtbot, folder)
    drift = drift_shown(ws, qtbot)
    assert drift.depth_source == "spike positions" and drift.n_total == n
    np.testing.assert_array_equal(drift.depths_um, depths)
    # the image holds dots only at those depths (each dot two bins tall), across the whole recording
    image = ws.drift.image.image  # (depth, time, RGBA)
    rect = ws.drift.image.mapRectToParent(ws.drift.image.boundingRect())
    rows = np.flatnonzero(image[..., 3].max(axis=1) > 0)
    row_depth = rect.top() + (rows + 0.5) * rect.height() / image.shape[0]
    assert all(np.min(np.abs(d - np.array([100.0, 160.0, 220.0]))) < 4 * rect.height() / image.shape[0] for d in row_depth)
    columns = np.flatnonzero(image[..., 3].max(axis=0) > 0)
    assert columns.min() < 0.05 * image.shape[1] and columns.max() > 0.9 * image.shape[1]
    # one line per depth block, at its centre plus its displacement, and the legend names it
    assert len(ws.drift.motion_lines) == 2
    for line, centre, d in zip(ws.drift.motion_lines, (60.0, 180.0), displacement.T):
        x, y = line.getData()
        np.testing.assert_allclose(x, bins)
        np.testing.assert_allclose(y, centre + d, rtol=1e-6)
    assert [label.text for _, label in ws.drift.legend.items] == ["estimated motion"]
    assert "non-rigid, 2 depth blocks" in ws.drift.note.text()
    assert ws.drift.colorbar.title == "amplitude (µV)" and ws.drift.colorbar.lo < ws.drift.colorbar.hi

    # selecting a unit draws its spikes in its colour on the map
    cid = int(ws.curation.cluster_ids[0])
    ws.select([cid])
    qtbot.waitUntil(lambda: not ws.views_timer.isActive())  # the map follows the table one event-loop turn later
    (highlight,) = ws.drift.highlights
    x, y = highlight.getData()
    mine = ws.curation.spike_clusters == cid
    assert len(x) == mine.sum() and np.all(y == 100.0 + 60.0 * (cid % 3))

    # clicking a spike of another unit selects that unit
    other = next(int(k) for k in ws.curation.cluster_ids if k % 3 != cid % 3)
    spike = np.flatnonzero(ws.curation.spike_clusters[drift.spikes] == other)[0]
    ws.drift.tabs.setCurrentWidget(ws.drift)
    qtbot.wait(50)
    vb = ws.drift.plot.getPlotItem().getViewBox()
    scene_pos = vb.mapViewToScene(pg.Point(drift.times_s[spike], drift.depths_um[spike]))
    pos = ws.drift.plot.mapFromScene(scene_pos)
    qtbot.mouseClick(ws.drift.plot.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert ws.selected and ws.selected[0] % 3 == other % 3  # a unit at that depth (they share it by threes)
    ws.drift.tabs.setCurrentWidget(ws.traces)

    # D switches the traces and the drift map; the map is drawn (not blank)
    tabs = ws.drift.tabs
    assert tabs.currentWidget() is ws.traces
    qtbot.keyClick(ws, Qt.Key.Key_D)
    assert tabs.currentWidget() is ws.drift
    assert ("Views", "D", "Traces / drift map") == ws.registry.rows()[[r[2] for r in ws.registry.rows()].index("Traces / drift map")][:3]
    assert not is_blank(save_screenshot(ws.drift, tmp_path / "drift.png"))
    qtbot.keyClick(ws, Qt.Key.Key_D)
    assert tabs.currentWidget() is ws.traces


def test_a_damaged_motion_file_is_said_on_the_map(window, qtbot, recording):
    ws = open_in(window, qtbot, recording)
    wait_for_job(qtbot, ws.run_sort(), timeout=120000)
    drift_shown(ws, qtbot)
    (ws.curation.folder / "motion.npz").write_bytes(b"not a zip file")
    job = ws.drift.load(ws.curation.folder)
    wait_for_job(qtbot, job)
    qtbot.wait(20)
    assert job.state is JobState.FAILED and ws.drift.drift is None  # no dialog: the units stay usable
    assert "Cannot draw the drift map" in ws.drift.summary.text() and "motion.npz" in ws.drift.summary.text()
