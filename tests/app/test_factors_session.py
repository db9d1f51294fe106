"""The microarchitecture session without a window: image, settings, regions and their undo, results,
the factor selection and the factor shown, each change a signal."""

import numpy as np
import pytest

from app.factors.session import PIPELINE_DEFAULTS, FactorsSession
from app.jobs import Job
from engine.errors import InputError
from engine.factors import workflow
from engine.factors.files import Grid, Latents
from engine.factors.rois import RegionSet
from engine.factors.synth import write_demo_mosaic
from engine.progress import Progress

SIGNALS = ("image_changed", "parameters_changed", "regions_changed", "region_selected", "results_changed",
           "clusters_changed", "selection_changed", "factor_shown", "history_changed", "busy_changed")


def listen(session) -> list[str]:
    heard = []
    for name in SIGNALS:
        getattr(session, name).connect(lambda *_args, name=name: heard.append(name))
    return heard


@pytest.fixture
def opened(qtbot, tmp_path):
    """A session showing the 256-px demo mosaic, whose label file gives three regions."""
    path = write_demo_mosaic(tmp_path / "mosaic.png", size=256, n_cells=6)
    session = FactorsSession()
    heard = listen(session)
    session.open(path, workflow.open_project_job(path, progress=Progress()), {"stride": 4, "epochs": "junk", "k": 3})
    return session, heard, path


def region_latents(labels: np.ndarray, stride: int = 8) -> Latents:
    """Latents with one channel pair per region (and noise), as a CNN that tells the regions apart would give."""
    grid = Grid.for_image(labels.shape, stride, 32)
    on_grid = grid.sample(labels)
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 0.05, (*grid.shape, 8)).astype(np.float32)
    for k in (1, 2, 3):
        values[on_grid == k, 2 * k - 2: 2 * k] += 1.0
    return Latents(values, grid)


def test_opening_restores_settings_and_regions(opened):
    session, heard, path = opened
    assert heard == ["parameters_changed", "image_changed"]  # the views draw it all from image_changed
    assert session.image.shape == (256, 256) and session.folder == workflow.project_folder(path)
    # a small image gets small patches; the settings last used win over the defaults; junk is ignored
    assert session.parameters == {**PIPELINE_DEFAULTS, "patch_size": 64, "stride": 4, "k": 3}
    assert session.n_regions == 3 and session.current_region == 3 and set(np.unique(session.labels)) == {1, 2, 3}
    assert session.counts[1:].sum() == 256 * 256
    assert session.model is None and session.factors is None and session.selection is None


def test_region_edits_are_saved_heard_and_undone(opened):
    session, heard, path = opened
    heard.clear()
    label = session.add_region("extra")
    assert label == 4 and session.current_region == 4
    assert heard == ["history_changed", "regions_changed", "selection_changed", "region_selected"]
    heard.clear()
    assert session.add_polygon([(10, 10), (60, 10), (60, 40), (10, 40)]) == 4  # (x, y): the current region
    assert (session.labels[12:38, 12:58] == 4).all() and session.n_regions == 4 and "regions_changed" in heard
    assert (RegionSet.load(session.folder).rasterize() == session.labels).all()  # saved with the edit
    drawn = session.counts[4]
    assert session.undo() and session.counts[4] == 0 and session.can_redo
    assert session.redo() and session.counts[4] == drawn
    with pytest.raises(InputError):
        session.rename_region(4, "  ")  # a region needs a name
    session.rename_region(4, "cortex")
    assert session.region_name(4) == "cortex" and session.regions.names[4] == "cortex"
    session.delete_region(4)
    assert session.current_region == 3 and session.region_name(4) == "region 4"  # the last one is current again
    session.select_region(1)
    heard.clear()
    session.add_stroke([(100.0, 100.0), (120.0, 100.0)], 5.0, False)
    assert session.labels[100, 110] == 1 and heard[-2:] == ["regions_changed", "selection_changed"]


def test_results_selection_and_the_factor_shown(opened):
    session, heard, _ = opened
    latents = region_latents(session.labels)
    heard.clear()
    session.take_latents(latents)
    assert session.latents is latents and heard == ["results_changed", "selection_changed"]
    factors = workflow.nmf_job(latents, session.folder, k=3, progress=Progress())
    session.take_factors(factors)
    sel = session.selection
    assert session.max_pairs == session.pairs == 3 and len(sel.pairs) == 3
    assert len({f for f, _, _ in sel.pairs}) == 3  # one factor per region
    on_grid = factors.grid.sample(session.labels)
    for factor, region, _ in sel.pairs:  # each chosen factor is on in its region, off outside
        heat = factors.heatmap(factor)
        assert heat[on_grid == region].mean() > 3 * heat[on_grid != region].mean()
    assert session.current_factor == sel.pairs[0][0]

    heard.clear()
    session.set_weights(lam=2.0, pairs=1)
    assert len(session.selection.pairs) == 1 and session.lam == 2.0 and heard == ["selection_changed"]
    assert not session.show_factor(7)
    assert session.show_factor(2) and session.current_factor == 2 and heard[-1] == "factor_shown"

    session.take_clusters("clusters")
    assert heard[-1] == "clusters_changed" and session.clusters == "clusters"
    session.take_model("a new model")  # the old model's results mean nothing now
    assert session.model == "a new model" and session.latents is None and session.factors is None
    assert session.clusters is None and session.selection is None and session.current_factor is None


def test_a_pipeline_job_makes_the_session_busy(qtbot):
    session = FactorsSession()
    busy = []
    session.busy_changed.connect(lambda: busy.append(session.busy))
    job = Job("NMF", lambda progress=None: 1)
    with qtbot.waitSignal(job.ended, timeout=5000):
        session.set_job(job.start())
    assert busy == [True, False] and session.job is job
