"""Curation of a Phy folder: merge / split / label with undo-redo and autosave, reload, metrics
getters, correlograms against brute force, and the model / residual of a real sort."""

from __future__ import annotations

import numpy as np
import pytest

from engine.ephys.curation import (Curation, TraceSource, correlogram, filter_rows, is_curated, isi_histogram, open_phy_job,
                                   phy_folder_for, sort_job)
from engine.ephys.io import RecordingParams
from engine.ephys.phy import read_cluster_groups, read_phy, write_phy
from engine.ephys.sorter import SortParams, Sorting
from engine.errors import InputError
from engine.progress import Cancelled, Progress


def _folder(tmp_path, n_units=4, n_ch=6, d=31, n_spikes=400, seed=0):
    rng = np.random.default_rng(seed)
    templates = rng.standard_normal((n_units, n_ch, d)).astype(np.float32)
    templates /= np.linalg.norm(templates.reshape(n_units, -1), axis=1)[:, None, None]
    units = rng.integers(0, n_units, n_spikes)
    times = np.sort(rng.choice(np.arange(100, 299_000), n_spikes, replace=False))
    s = Sorting(spike_times=times, spike_units=units, amplitudes=rng.uniform(8, 12, n_spikes).astype(np.float32),
                templates=templates, template_troughs=np.full(n_units, 10), sample_rate=30000.0, channels=np.arange(n_ch),
                positions=np.c_[np.zeros(n_ch), 20 * np.arange(n_ch)], whitening=np.eye(n_ch, dtype=np.float32) * 0.1,
                preprocess_state={"sample_rate": 30000.0}, info={"duration_s": 10.0})
    raw = tmp_path / "rec.raw"
    np.zeros((300_000, n_ch), np.int16).tofile(raw)
    return write_phy(s, tmp_path / "phy", raw_path=raw, recording_params=RecordingParams(n_ch, 30000.0)), s


def test_merge_split_label_undo_redo_autosave_and_reload(tmp_path):
    folder, s = _folder(tmp_path)
    c = Curation(folder)
    assert list(c.cluster_ids) == [0, 1, 2, 3] and not is_curated(folder)
    n0, n1 = len(c.spikes(0)), len(c.spikes(1))

    new = c.merge([0, 1])
    assert new == 4  # Phy: max + 1
    assert len(c.spikes(4)) == n0 + n1 and list(c.cluster_ids) == [2, 3, 4]
    on_disk = np.load(folder / "spike_clusters.npy")
    np.testing.assert_array_equal(on_disk, c.spike_clusters)  # autosaved
    assert set(read_cluster_groups(folder)) == {2, 3, 4} and is_curated(folder)

    c.label([4], "good")
    assert read_cluster_groups(folder)[4] == "good"

    spikes = c.spikes(2)
    inside = np.arange(len(spikes)) % 3 == 0
    a, b = c.split(2, inside)
    assert (a, b) == (5, 6)
    np.testing.assert_array_equal(c.spikes(5), spikes[inside])
    np.testing.assert_array_equal(c.spikes(6), spikes[~inside])
    with pytest.raises(InputError, match="none"):
        c.split(3, np.zeros(len(c.spikes(3)), bool))
    with pytest.raises(InputError, match="two clusters"):
        c.merge([3])

    # undo the split, the label, then redo the label; a new change clears the redo stack
    assert c.undo().description.startswith("split")
    assert list(c.cluster_ids) == [2, 3, 4]
    c.undo()
    assert read_cluster_groups(folder)[4] == "unsorted"
    c.redo()
    assert read_cluster_groups(folder)[4] == "good" and c.can_redo
    merged_again = c.merge([2, 3])
    assert merged_again == 7 and not c.can_redo  # ids are never reused, not even after an undo

    # reopen: the curation is what is on disk; labels survive; phylib-compatible arrays
    again = Curation(folder)
    np.testing.assert_array_equal(again.spike_clusters, c.spike_clusters)
    assert again.groups == {4: "good", 7: "unsorted"}
    assert read_phy(folder).arrays["spike_templates"].tolist() == s.spike_units.tolist()  # the model is untouched
    # undo everything back to the sorter's output
    while c.undo() is not None:
        pass
    np.testing.assert_array_equal(np.load(folder / "spike_clusters.npy"), s.spike_units)


def test_merged_label_and_rows(tmp_path):
    folder, _ = _folder(tmp_path)
    c = Curation(folder)
    c.label([0, 1], "mua")
    new = c.merge([0, 1])
    assert c.groups[new] == "mua"  # both were mua
    rows = {r["cluster_id"]: r for r in c.rows()}
    assert rows[new]["n_spikes"] == len(c.spikes(new))
    assert rows[new]["firing_rate"] == pytest.approx(len(c.spikes(new)) / 10.0)
    assert rows[new]["snr"] > 0 and 0 < rows[new]["presence_ratio"] <= 1
    assert [r["cluster_id"] for r in filter_rows(c.rows(), "mua")] == [new]
    assert {r["cluster_id"] for r in filter_rows(c.rows(), f"spikes > {rows[2]['n_spikes'] - 1}, label=unsorted")} >= {2}
    assert filter_rows(c.rows(), "id = 3")[0]["cluster_id"] == 3
    with pytest.raises(InputError, match="Unknown column"):
        filter_rows(c.rows(), "colour>3")
    assert c.similar(2)[0][0] in c.cluster_ids and len(c.similar(2)) == len(c.cluster_ids) - 1


def test_correlogram_matches_brute_force():
    rng = np.random.default_rng(3)
    fs = 30000.0
    a = np.sort(rng.choice(300_000, 500, replace=False))
    b = np.sort(np.concatenate([rng.choice(300_000, 300, replace=False), a[:50] + 45]))  # b follows a by 1.5 ms sometimes
    for x, y, same in ((a, a, True), (a, b, False)):
        centers, counts = correlogram(x, y, fs, bin_s=0.001, window_s=0.02, same=same)
        edges = (np.arange(-20, 22) - 0.5) * 30
        lags = (y[None, :] - x[:, None]).ravel()
        if same:
            lags = lags[~np.eye(len(x), dtype=bool).ravel()]
        brute = [np.sum((lags >= lo) & (lags < hi)) for lo, hi in zip(edges[:-1], edges[1:])]  # half-open bins
        np.testing.assert_array_equal(counts, brute)
        assert len(centers) == 41 and centers[20] == 0
    # lag +45 samples = 1.5 ms → bin centred on +1 or +2 ms has the 50 planted pairs
    _, counts = correlogram(a, b, fs, bin_s=0.001, window_s=0.02)
    assert counts[21] + counts[22] >= 50
    # duplicated spike times (possible after a merge) pair with each other, never with themselves
    _, counts = correlogram(np.array([100, 100, 400]), np.array([100, 100, 400]), fs, bin_s=0.001, window_s=0.02, same=True)
    assert counts[20] == 2


def test_isi_histogram():
    t = np.array([0.0, 0.001, 0.0035, 0.010, 0.0101])
    edges, counts = isi_histogram(t, bin_s=0.001, max_s=0.01)
    assert len(edges) == 11 and counts.sum() == 4
    assert counts[0] == 1 and counts[1] == 1 and counts[2] == 1 and counts[6] == 1  # 0.1, 1, 2.5, 6.5 ms


@pytest.fixture(scope="module")
def sorted_folder(tmp_path_factory):
    from engine.ephys.synth import write_demo_recording

    d = tmp_path_factory.mktemp("sorted")
    raw = d / "rec.raw"
    params = write_demo_recording(raw, duration=8.0, n_channels=8, n_units=4, seed=1)
    out = sort_job(raw, params, None, SortParams())
    return raw, params, out


def test_sort_job_writes_folder_and_model_explains_data(sorted_folder):
    raw, params, out = sorted_folder
    assert out["folder"] == phy_folder_for(raw) and out["folder"].name == "rec_phy"
    c, source = out["curation"], out["source"]
    assert len(c.cluster_ids) >= 3 and source is not None and source.has_model
    # around the biggest unit's spikes the model explains most of the preprocessed signal
    best = max(c.rows(), key=lambda r: r["snr"])
    t = int(c.spike_times[c.spikes(best["cluster_id"])[5]])
    pre = source.preprocessed(t - 300, t + 300)
    model = source.model(t - 300, t + 300)
    resid = source.residual(t - 300, t + 300)
    np.testing.assert_allclose(resid, pre - model, atol=1e-3)
    ch = best["peak_channel"]
    assert np.abs(model[:, ch]).max() > 0.5 * np.abs(pre[:, ch]).max()
    assert np.abs(resid[280:340, ch]).max() < 0.5 * np.abs(pre[280:340, ch]).max()
    # a window without spikes has a zero model
    assert source.model(0, 10).shape == (10, 8)
    w = c.waveforms(source, best["cluster_id"], n_spikes=12)
    assert w["samples"].shape[0] == 12 and w["mean"].shape == w["samples"].shape[1:]
    assert np.abs(w["mean"][:, ch]).max() > 0.5 * best["amplitude_uv"]


def test_reopened_folder_gives_same_model(sorted_folder):
    raw, params, out = sorted_folder
    again = open_phy_job(out["folder"] / "params.py")
    assert again["recording"].path == raw and again["note"] == ""
    np.testing.assert_allclose(again["source"].model(1000, 4000), out["source"].model(1000, 4000))


def test_sort_keeps_curated_folder_and_cancels(tmp_path):
    from engine.ephys.synth import write_demo_recording

    raw = tmp_path / "r.raw"
    params = write_demo_recording(raw, duration=6.0, n_channels=8, n_units=3, seed=1)
    progress = Progress()
    progress.cancel()
    with pytest.raises(Cancelled):
        sort_job(raw, params, None, progress=progress)
    out = sort_job(raw, params, None, SortParams(min_spikes=5))
    assert len(out["curation"].cluster_ids) >= 1 and out["backup"] is None
    out["curation"].label(out["curation"].cluster_ids[:1], "good")
    again = sort_job(raw, params, None, SortParams(min_spikes=5))  # sorting again never overwrites hand work
    assert again["backup"] is not None and (again["backup"] / "cluster_group.tsv").is_file()
    assert "good" in (again["backup"] / "cluster_group.tsv").read_text()
    assert not is_curated(again["folder"])


def test_trace_source_before_sorting(tmp_path):
    from engine.ephys.io import RawRecording

    raw = tmp_path / "x.raw"
    (np.arange(4000 * 3, dtype=np.int16).reshape(4000, 3) % 100).tofile(raw)
    src = TraceSource(RawRecording(raw, RecordingParams(3, 20000.0)))
    assert not src.has_model and src.window("raw", 0, 100, slice(1, 3)).shape == (100, 2)
    assert src.window("preprocessed", 0, 100).shape == (100, 3)
    assert not np.any(src.model(0, 50))


def test_phylib_loads_curated_folder(tmp_path):
    model_mod = pytest.importorskip("phylib.io.model")
    folder, s = _folder(tmp_path)
    c = Curation(folder)
    new = c.merge([0, 1])
    c.label([new], "good")
    model = model_mod.load_model(folder / "params.py")
    try:
        np.testing.assert_array_equal(model.spike_clusters, c.spike_clusters)
        assert model.metadata["group"][new] == "good"
        # our QC metrics are Phy cluster-view columns, rewritten for the merged cluster
        assert model.metadata["SNR"][new] == pytest.approx(c.row(new)["snr"], rel=1e-3)
        assert set(model.metadata["PresenceRatio"]) == set(c.cluster_ids.tolist())
    finally:
        model.close()


def _trace_folder(tmp_path, n_ch=10, n_samples=40_000, d=31):
    """A Phy folder over random raw data, with a real preprocess state and two spikes on one sample (both must count)."""
    from engine.ephys.preprocess import Preprocessor

    rng = np.random.default_rng(5)
    n_units = 3
    templates = rng.standard_normal((n_units, n_ch, d)).astype(np.float32)
    times = np.sort(rng.choice(np.arange(50, n_samples - 50), 150, replace=False))
    times = np.sort(np.r_[times, times[7], times[7] + 1])  # a repeated sample: both spikes must count
    units = rng.integers(0, n_units, len(times))
    units[np.flatnonzero(times == times[8])] = [0, 1]
    pre = Preprocessor(30000.0, np.arange(n_ch))
    s = Sorting(spike_times=times, spike_units=units, amplitudes=rng.uniform(0.5, 2, len(times)).astype(np.float32),
                templates=templates, template_troughs=np.full(n_units, 10), sample_rate=30000.0, channels=np.arange(n_ch),
                positions=np.c_[np.zeros(n_ch), 20 * np.arange(n_ch)], whitening=np.eye(n_ch, dtype=np.float32),
                preprocess_state=pre.state(), info={"duration_s": n_samples / 30000.0})
    raw = tmp_path / "rec.raw"
    (rng.standard_normal((n_samples, n_ch)) * 300).astype(np.int16).tofile(raw)
    folder = write_phy(s, tmp_path / "phy", raw_path=raw, recording_params=RecordingParams(n_ch, 30000.0))
    from engine.ephys.curation import recording_of

    return recording_of(read_phy(folder))[0], read_phy(folder)


def test_model_of_visible_rows_equals_brute_force_sum(tmp_path):
    recording, phy = _trace_folder(tmp_path)
    src = TraceSource(recording, phy)
    d = src.templates_uv.shape[1]
    for start, stop, rows in ((0, 40_000, slice(None)), (1234, 5678, slice(2, 7)), (39_990, 40_000, slice(0, 1))):
        expected = np.zeros((stop - start, src.n_channels), np.float64)
        for s0, k, a in zip(src.spike_starts, src.spike_templates, src.amplitudes):
            for j in range(d):
                if start <= s0 + j < stop:
                    expected[s0 + j - start] += a * src.templates_uv[k, j]
        np.testing.assert_allclose(src.model(start, stop, rows), expected[:, rows], atol=1e-4)


def test_cached_tiles_equal_cold_reads_and_direct_filter(tmp_path):
    recording, phy = _trace_folder(tmp_path)
    warm = TraceSource(recording, phy)
    rows = slice(3, 8)
    # scroll through in small steps: after the first window, each step filters at most the tiles it uncovers
    for start in range(5000, 20000, 1500):
        before = warm.tiles_filtered
        got = warm.layers(start, start + 6000, rows, data="preprocessed", model=True, residual=True)
        cold = TraceSource(recording, phy).layers(start, start + 6000, rows, data="preprocessed", model=True, residual=True)
        for name in ("data", "model", "residual"):
            np.testing.assert_array_equal(got[name], cold[name])  # the cache never changes what is drawn
        if start > 5000:
            assert warm.tiles_filtered - before <= 1
    np.testing.assert_array_equal(got["residual"], got["data"] - got["model"])
    # the tiles equal one block filtered with its own margins, to the filter's tolerance
    direct = warm.preprocessed(start, start + 6000)[:, rows]
    assert np.abs(got["data"] - direct).max() < 1e-3 * np.abs(direct).max()
    # the float32 display filter equals the sorter's float64 one to float32 rounding
    np.testing.assert_allclose(direct, warm.preprocessor.read(recording, start, start + 6000, whiten=False)[:, rows],
                               atol=1e-3 * np.abs(direct).max())
    assert warm.window("raw", 0, 100, rows).shape == (100, 5)
    assert warm.layers(0, 100, rows, data=None)["data"] is None


def test_tile_cache_is_bounded_prefetches_and_cancels(tmp_path):
    recording, phy = _trace_folder(tmp_path)
    tile_bytes = TraceSource(recording, phy).tile(0).nbytes
    src = TraceSource(recording, phy, cache_bytes=3 * tile_bytes)
    assert src.prefetch(0, 5 * src.tile_samples) == 5 and src.tiles_filtered == 5
    assert src._cached_bytes <= 3 * tile_bytes and not src.is_cached(0, 10) and src.is_cached(4 * src.tile_samples, 5 * src.tile_samples)
    assert src.prefetch(3 * src.tile_samples, 5 * src.tile_samples) == 0  # already there
    whole = src.filtered(0, recording.n_samples)  # a window bigger than the cache still comes out whole
    np.testing.assert_array_equal(whole[:100], TraceSource(recording, phy).filtered(0, 100))
    progress = Progress()
    progress.cancel()
    with pytest.raises(Cancelled):
        src.layers(0, recording.n_samples, progress=progress)


def test_features_match_phylib_feature_view(sorted_folder):
    """The feature view's numbers are Phy's: phylib's get_features on the same spikes and channels."""
    model_mod = pytest.importorskip("phylib.io.model")
    c = sorted_folder[2]["curation"]
    assert c.has_features
    unit = max(c.rows(), key=lambda r: r["n_spikes"])["cluster_id"]
    channels = np.argsort(-c.footprint(unit))[:2]
    ours, spikes = c.features_of(unit, channels)
    assert ours.shape == (len(spikes), 2) and np.isfinite(ours[:, 0]).all()  # its own best channel is always there
    model = model_mod.load_model(c.folder / "params.py")
    try:
        theirs = model.get_features(spikes, channels)[:, :, 0]  # (n, channels, pcs) → first PC
    finally:
        model.close()
    np.testing.assert_allclose(np.nan_to_num(ours), theirs, rtol=1e-5, atol=1e-6)
    # the unit's spikes stand apart from another unit's on its best channel
    other = next(r["cluster_id"] for r in c.rows() if r["cluster_id"] != unit and r["peak_channel"] != channels[0])
    mine = np.nanmedian(np.abs(ours[:, 0]))
    assert mine > 2 * np.nanmedian(np.abs(c.features_of(other, channels)[0][:, 0]))
