"""Template initialization: threshold crossings → snippets → PCA features → clusters → templates.

1. **Detection** (:func:`detect_peaks`): negative peaks of the whitened data below
   ``-threshold`` (noise SDs) that are the minimum within ±``exclusion_ms`` and among channels
   within ``exclusion_radius`` µm — one detection per spike, on its largest channel.
2. **Features**: snippets of ``n_samples`` around each trough on the main channel's neighbours,
   projected on 3 temporal PCs (learnt from main-channel snippets), then PCA per channel group.
3. **Clustering per main channel** (:func:`cluster_features`, isosplit-like): over-cluster with
   k-means, then repeatedly merge the nearest pair whose points, projected on the line through
   the two centres, are *not* bimodal; finally try to split every cluster in two and keep the
   split when the projection *is* bimodal. The number of clusters is not given, only found.
   Bimodal means: the smoothed histogram of the projection dips, between the two cluster
   modes, below ``valley_ratio`` × the smaller mode.
4. **Merging across channels** (:func:`merge_templates`): one neuron often peaks on two
   neighbouring channels and so forms a cluster in each group; clusters whose mean templates
   have cosine similarity ≥ ``merge_similarity`` (best lag within ±3 samples) and amplitudes
   within a factor 1.4 are merged.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from engine.progress import as_progress


def detect_peaks(block: np.ndarray, threshold: float, neighbours: np.ndarray, half_window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, channels, depth) of locally-exclusive negative peaks of ``block`` (samples × channels).

    ``neighbours``: (C, m) channel indices padded with -1 (the exclusion zone of each channel).
    """
    neg = -block
    h = int(half_window)
    # Only samples above threshold can be peaks, and they are sparse: test them by gathering
    # their ±h windows instead of max-filtering the whole block (same result, ~10x faster).
    padded = np.full((neg.shape[0] + 2 * h, neg.shape[1]), -np.inf, dtype=neg.dtype)
    padded[h: h + neg.shape[0]] = neg  # -inf outside the block, as a constant-mode max filter
    lags = np.arange(2 * h + 1)
    nb = np.where(neighbours < 0, neighbours[:, :1], neighbours)  # pad with the channel itself
    t_all, c_all = np.nonzero(neg > threshold)
    kept = []
    for a in range(0, len(t_all), 16384):  # bounded memory: (16384, m, 2h+1) at most
        t, c = t_all[a: a + 16384], c_all[a: a + 16384]
        # most samples above threshold are on a spike's flanks: drop those below a direct neighbour first
        v = neg[t, c]
        top = (v >= padded[t + h - 1, c]) & (v >= padded[t + h + 1, c]) if h >= 1 else np.ones(len(t), bool)
        t, c, a_idx = t[top], c[top], np.flatnonzero(top) + a
        # the temporal maximum on its own channel (cheap, removes most), then over the exclusion zone
        own = neg[t, c] >= padded[t[:, None] + lags, c[:, None]].max(axis=1)
        t, c = t[own], c[own]
        zone = padded[t[:, None, None] + lags[None, None, :], nb[c][:, :, None]].max(axis=(1, 2))
        kept.append(a_idx[own][neg[t, c] >= zone])
    keep = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    t, c = t_all[keep], c_all[keep]
    # ties (same value at two samples/channels) would double-detect: keep the first per window
    if len(t) > 1:
        order = np.lexsort((c, t))
        t, c = t[order], c[order]
        keep = np.ones(len(t), bool)
        close = (np.diff(t) <= half_window) & (neg[t[1:], c[1:]] == neg[t[:-1], c[:-1]])
        keep[1:][close] = False
        t, c = t[keep], c[keep]
    return t, c, neg[t, c]


def extract_snippets(data, times: np.ndarray, channels: np.ndarray, start_offset: int, n_samples: int) -> np.ndarray:
    """(n, n_samples, len(channels)) windows ``data[t + start_offset : … + n_samples, channels]`` (zero outside)."""
    out = np.zeros((len(times), n_samples, len(channels)), np.float32)
    valid = channels >= 0
    for i, t in enumerate(times):
        a = int(t) + start_offset
        lo, hi = max(a, 0), min(a + n_samples, data.shape[0])
        if hi > lo:
            out[i, lo - a: hi - a][:, valid] = data[lo:hi, channels[valid]]
    return out


def _bimodal(projection: np.ndarray, labels: np.ndarray, valley_ratio: float) -> bool:
    """Is the 1-D projection of two clusters bimodal (a dip between the two modes)?"""
    from scipy.ndimage import gaussian_filter1d

    n = len(projection)
    bins = int(np.clip(np.sqrt(n) * 1.5, 16, 80))
    hist, edges = np.histogram(projection, bins=bins)
    hist = gaussian_filter1d(hist.astype(float), 1.0)
    centres = 0.5 * (edges[1:] + edges[:-1])
    m0, m1 = np.median(projection[labels == 0]), np.median(projection[labels == 1])
    if m0 > m1:
        m0, m1 = m1, m0
    i0, i1 = np.searchsorted(centres, m0), np.searchsorted(centres, m1)
    i0, i1 = min(i0, bins - 1), min(i1, bins - 1)
    if i1 - i0 < 2:
        return False
    mid = np.searchsorted(centres, 0.5 * (m0 + m1))
    p0, p1 = hist[: max(mid, 1)].max(), hist[mid:].max()
    valley = hist[i0: i1 + 1].min()
    return bool(valley < valley_ratio * min(p0, p1))


def _pair_projection(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ca, cb = x[a].mean(0), x[b].mean(0)
    axis = cb - ca
    norm = np.linalg.norm(axis)
    if norm == 0:
        return np.zeros(len(a) + len(b)), np.r_[np.zeros(len(a)), np.ones(len(b))].astype(int)
    proj = np.r_[x[a] @ axis, x[b] @ axis] / norm
    return proj, np.r_[np.zeros(len(a), int), np.ones(len(b), int)]


def cluster_features(x: np.ndarray, min_cluster: int = 20, valley_ratio: float = 0.4, max_clusters: int = 16, seed: int = 0) -> np.ndarray:
    """Labels 0..n_clusters-1 for the rows of ``x`` (or -1 for none: too few points)."""
    from sklearn.cluster import KMeans

    n = len(x)
    if n < min_cluster:
        return np.full(n, -1)
    k0 = int(np.clip(n // (2 * min_cluster), 1, max_clusters))
    labels = KMeans(k0, n_init=1, random_state=seed).fit_predict(x) if k0 > 1 else np.zeros(n, int)
    # merge the nearest unimodal pairs until none is left
    while True:
        ids = np.unique(labels)
        if len(ids) < 2:
            break
        centres = np.stack([x[labels == i].mean(0) for i in ids])
        d = np.linalg.norm(centres[:, None] - centres[None], axis=2)
        iu = np.triu_indices(len(ids), 1)
        merged = False
        for p in np.argsort(d[iu]):
            i, j = ids[iu[0][p]], ids[iu[1][p]]
            a, b = np.flatnonzero(labels == i), np.flatnonzero(labels == j)
            proj, lab = _pair_projection(x, a, b)
            if min(len(a), len(b)) < min_cluster or not _bimodal(proj, lab, valley_ratio):
                labels[b] = i
                merged = True
                break
        if not merged:
            break
    # split what is still bimodal
    out = np.full(n, -1)
    next_id = 0
    stack = [np.flatnonzero(labels == i) for i in np.unique(labels)]
    depth_guard = 0
    while stack:
        idx = stack.pop()
        depth_guard += 1
        if len(idx) >= 2 * min_cluster and depth_guard < 4 * max_clusters:
            sub = KMeans(2, n_init=2, random_state=seed).fit_predict(x[idx])
            a, b = idx[sub == 0], idx[sub == 1]
            if min(len(a), len(b)) >= min_cluster:
                proj, lab = _pair_projection(x, a, b)
                if _bimodal(proj, lab, valley_ratio):
                    stack += [a, b]
                    continue
        out[idx] = next_id
        next_id += 1
    return out


MAX_LAG = 8  # samples (~0.27 ms at 30 kHz): one neuron detected on a far channel is seen a little later


def _best_lag(a: np.ndarray, b: np.ndarray, max_lag: int) -> int:
    """Shift L (samples) maximizing <a[:, t], b[:, t + L]>: b's spikes at t + L line up with a's at t."""
    d = a.shape[1]
    best, best_lag = -np.inf, 0
    for lag in range(-max_lag, max_lag + 1):
        v = float(np.sum(a[:, max(-lag, 0): d - max(lag, 0)] * b[:, max(lag, 0): d - max(-lag, 0)]))
        if v > best:
            best, best_lag = v, lag
    return best_lag


def template_similarity(templates: np.ndarray, max_lag: int = MAX_LAG) -> np.ndarray:
    """(K, K) best cosine similarity over lags within ±max_lag; templates (K, C, D)."""
    k, c, d = templates.shape
    flat = templates / np.maximum(np.linalg.norm(templates.reshape(k, -1), axis=1), 1e-12)[:, None, None]
    best = np.full((k, k), -1.0)
    for lag in range(-max_lag, max_lag + 1):
        a = flat[:, :, max(lag, 0): d + min(lag, 0)]
        b = flat[:, :, max(-lag, 0): d + min(-lag, 0)]
        best = np.maximum(best, a.reshape(k, -1) @ b.reshape(k, -1).T)  # a BLAS product: ~20x faster than einsum at 384 channels
    return best


def merge_templates(templates: np.ndarray, similarity: float = 0.9, amplitude_ratio: float = 1.4) -> np.ndarray:
    """Group index per template after union-merging near-duplicates (see module docstring)."""
    k = len(templates)
    if k == 0:
        return np.zeros(0, int)
    sim = template_similarity(templates)
    norms = np.linalg.norm(templates.reshape(k, -1), axis=1)
    ratio = np.maximum.outer(norms, norms) / np.maximum(np.minimum.outer(norms, norms), 1e-12)
    duplicates = (sim >= similarity) & (ratio <= amplitude_ratio)
    return connected_components(sparse.csr_matrix(duplicates), directed=False)[1]


def _split_unimodal_groups(data, times, labels, templates, group, tpcs, trough, n_samples, valley_ratio, rng) -> np.ndarray:
    """Confirm each merge of similar templates: two clusters stay merged only when their spikes,
    projected on the line between the two cluster means (features on the clusters' 6 largest
    channels), are not bimodal. Similar shape with different amplitude = different neurons."""
    out = np.arange(len(templates))
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        if len(members) == 1:
            continue
        chans = np.argsort(-np.abs(templates[members]).max(axis=(0, 2)))[:6]
        ref = templates[members[0]]
        feats = {}
        for m in members:
            idx = np.flatnonzero(labels == m)
            if len(idx) > 300:
                idx = rng.choice(idx, 300, replace=False)
            lag = _best_lag(ref, templates[m], MAX_LAG)  # align on the first member's template
            sn = extract_snippets(data, times[idx] + lag, chans, -trough, n_samples)
            feats[m] = np.einsum("ndm,pd->nmp", sn, tpcs).reshape(len(idx), -1)
        root = {m: m for m in members}
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                ra, rb = root[a], root[b]
                if ra == rb:
                    continue
                xa = np.concatenate([feats[m] for m in members if root[m] == ra])
                xb = np.concatenate([feats[m] for m in members if root[m] == rb])
                x = np.concatenate([xa, xb])
                proj, lab = _pair_projection(x, np.arange(len(xa)), np.arange(len(xa), len(x)))
                if not _bimodal(proj, lab, valley_ratio):
                    for m in members:
                        if root[m] == rb:
                            root[m] = ra
        for m in members:
            out[m] = root[m]
    return np.unique(out, return_inverse=True)[1]


def initial_templates(
    data,
    times: np.ndarray,
    channels: np.ndarray,
    neighbours: np.ndarray,
    n_samples: int,
    trough: int,
    min_cluster: int = 20,
    max_per_channel: int = 1500,
    valley_ratio: float = 0.4,
    merge_similarity: float = 0.9,
    seed: int = 0,
    progress=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cluster detections and return ``(templates (K, C, D), temporal_pcs (3, D), label per detection or -1)``.

    Only up to ``max_per_channel`` detections per main channel are clustered (enough to find
    the templates; the deconvolution finds every spike afterwards).
    """
    from sklearn.decomposition import PCA

    progress = as_progress(progress)
    data = np.asarray(data) if isinstance(data, np.memmap) else data  # a plain view: slicing a np.memmap per spike is ~6x slower
    rng = np.random.default_rng(seed)
    n_ch = neighbours.shape[0]
    picked = []
    for c in range(n_ch):
        idx = np.flatnonzero(channels == c)
        if len(idx) > max_per_channel:
            idx = np.sort(rng.choice(idx, max_per_channel, replace=False))
        picked.append(idx)
    main = np.concatenate(picked) if picked else np.zeros(0, int)
    if len(main) == 0:
        return np.zeros((0, n_ch, n_samples), np.float32), np.eye(3, n_samples, dtype=np.float32), np.full(len(times), -1)
    # temporal PCs from main-channel waveforms
    sample = rng.choice(main, min(len(main), 5000), replace=False)
    wave = np.stack([extract_snippets(data, times[i:i + 1], channels[i:i + 1], -trough, n_samples)[0, :, 0] for i in sample])
    n_pc = min(3, len(wave), n_samples)
    tpcs = PCA(n_pc).fit(wave).components_.astype(np.float32)
    if tpcs[0, trough] > 0:  # Kilosort's sign: a spike projects positively on the first PC (Phy's depths weigh by it)
        tpcs[0] *= -1

    labels = np.full(len(times), -1)
    cluster_templates = []
    next_label = 0
    for c in range(n_ch):
        progress.check()
        idx = picked[c]
        if len(idx) < min_cluster:
            continue
        nb = neighbours[c]
        snip = extract_snippets(data, times[idx], nb, -trough, n_samples)  # (n, D, m)
        feats = np.einsum("ndm,pd->nmp", snip, tpcs).reshape(len(idx), -1)
        n_comp = min(8, feats.shape[1], len(idx) - 1)
        reduced = PCA(n_comp, random_state=seed).fit_transform(feats)
        lab = cluster_features(reduced, min_cluster=min_cluster, valley_ratio=valley_ratio, seed=seed)
        all_ch = np.arange(n_ch)
        for u in np.unique(lab[lab >= 0]):
            members = idx[lab == u]
            # full-channel mean (from ≤ 300 members): clusters of one neuron found on two
            # neighbouring main channels then have the same template, and merge below
            sub = members if len(members) <= 300 else np.sort(rng.choice(members, 300, replace=False))
            full = extract_snippets(data, times[sub], all_ch, -trough, n_samples).mean(0).T
            cluster_templates.append(full.astype(np.float32))
            labels[members] = next_label
            next_label += 1
        progress.report((c + 1) / n_ch, "clustering")
    if not cluster_templates:
        return np.zeros((0, n_ch, n_samples), np.float32), tpcs, labels
    templates = np.stack(cluster_templates)
    group = merge_templates(templates, similarity=merge_similarity)
    group = _split_unimodal_groups(data, times, labels, templates, group, tpcs, trough, n_samples, valley_ratio, rng)
    merged = np.zeros((group.max() + 1, n_ch, n_samples), np.float32)
    for g in range(group.max() + 1):
        members = np.flatnonzero(group == g)
        counts = np.array([(labels == m).sum() for m in members], float)
        merged[g] = np.tensordot(counts / counts.sum(), templates[members], axes=1)
    labels = np.where(labels >= 0, group[np.maximum(labels, 0)], -1)
    return merged, tpcs, labels


def split_units(features: np.ndarray, labels: np.ndarray, min_cluster: int = 25, valley_ratio: float = 0.4, min_fraction: float = 0.15,
                max_footprint_similarity: float = 0.9, n_components: int = 6) -> np.ndarray:
    """Labels after splitting every unit whose spikes hold two neurons; new units are numbered from ``labels.max() + 1``.

    ``features``: (n, P, C) per spike, P temporal-PC coefficients on each of C channels shared by the unit's spikes
    (the sorter's PC features of residual + own template). A unit is cut in two (2-means in the first
    ``n_components`` PCs of its features, started from the cut at the median of the first) and the cut is kept when
    (a) the projection on the line between the two halves is bimodal (:func:`_bimodal`, as clustering's splits),
    (b) each half holds ≥ ``min_cluster`` spikes and ≥ ``min_fraction`` of the unit (a small minority is the unit's
    own spikes bent by collisions with a neighbour), and (c) the halves' spatial footprints (per-channel norm of the
    mean features) differ: cosine < ``max_footprint_similarity`` — two neurons sit at two places; one neuron's spikes
    of two sizes (bursts) or two drift phases keep one footprint shape. Halves are tried again, so a unit holding
    three neurons can end as three. numpy only: sklearn's per-call overhead was 0.5 s for 86 units at 384 sites.
    """
    labels = np.asarray(labels).copy()
    if len(labels) == 0:
        return labels
    flat = features.reshape(len(features), -1).astype(np.float64)
    next_label = int(labels.max()) + 1
    stack = [np.flatnonzero(labels == u) for u in np.unique(labels)]
    while stack:
        idx = stack.pop()
        need = max(min_cluster, min_fraction * len(idx))
        if len(idx) < 2 * need:
            continue
        x = flat[idx] - flat[idx].mean(0)
        x = x @ np.linalg.svd(x, full_matrices=False)[2][:n_components].T
        side = x[:, 0] > np.median(x[:, 0])
        for _ in range(50):  # Lloyd's iterations of 2-means
            if side.all() or not side.any():
                break
            c0, c1 = x[~side].mean(0), x[side].mean(0)
            new = ((x - c1) ** 2).sum(1) < ((x - c0) ** 2).sum(1)
            if np.array_equal(new, side):
                break
            side = new
        a, b = np.flatnonzero(~side), np.flatnonzero(side)
        if min(len(a), len(b)) < need:
            continue
        proj, lab = _pair_projection(x, a, b)
        if not _bimodal(proj, lab, valley_ratio):
            continue
        fa, fb = (np.linalg.norm(features[idx[s]].mean(0), axis=0) for s in (a, b))
        if fa @ fb >= max_footprint_similarity * np.linalg.norm(fa) * np.linalg.norm(fb):
            continue
        labels[idx[b]] = next_label
        next_label += 1
        stack += [idx[a], idx[b]]
    return labels
