"""QC metrics on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from engine.ephys import qc


def test_isi_violations_hand_case():
    # 1000 spikes in 100 s, every 0.1 s, plus 5 spikes 1 ms after five of them → 5 violations
    t = np.r_[np.arange(1000) * 0.1, np.arange(5) * 0.1 + 0.001]
    ratio, n_v = qc.isi_violations(t, duration=100.0)
    assert n_v == 5
    assert ratio == pytest.approx(5 * 100.0 / (2 * 1005**2 * 0.0015))  # 0.165
    c = qc.rp_contamination(ratio)
    assert c == pytest.approx((1 - np.sqrt(1 - 4 * ratio)) / 2) and 0.15 < c < 0.3
    # c solves n_v = 2 t_r N² c (1 - c) / T
    assert 2 * 0.0015 * 1005**2 * c * (1 - c) / 100.0 == pytest.approx(5)
    assert qc.isi_violations(np.arange(100) * 0.1, 10.0) == (0.0, 0)
    assert qc.rp_contamination(0.3) == 1.0  # no real solution


def test_presence_ratio():
    assert qc.presence_ratio(np.linspace(0, 9.99, 1000), 10.0) == 1.0
    assert qc.presence_ratio(np.linspace(0, 4.99, 1000), 10.0) == pytest.approx(0.5)


def test_amplitude_cutoff():
    rng = np.random.default_rng(0)
    full = rng.normal(10, 2, 20000)
    assert qc.amplitude_cutoff(full) < 0.02  # nothing missing
    cut = full[full > 10]  # half the distribution below threshold
    assert qc.amplitude_cutoff(cut) > 0.3


def test_l_ratio():
    rng = np.random.default_rng(0)
    own = rng.standard_normal((500, 4))
    far = rng.standard_normal((500, 4)) + 20
    near = rng.standard_normal((500, 4)) * 1.0
    assert qc.l_ratio(own, far) < 1e-6
    assert qc.l_ratio(own, near) > 0.3
