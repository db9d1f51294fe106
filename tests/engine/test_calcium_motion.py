"""Motion correction: known subpixel shifts are recovered, the movie is moved back, memmap output works."""

from __future__ import annotations

import numpy as np
import pytest

from engine.calcium import motion, synth
from engine.errors import InputError


@pytest.fixture(scope="module")
def shifted():
    sim = synth.recording(300, 80, 80, 15, seed=4)
    rng = np.random.default_rng(0)
    true = rng.uniform(-3, 3, (300, 2)).astype(np.float32)
    return sim["movie"], motion.shift_frames(sim["movie"], true), true


def test_rigid_shifts_recovered_subpixel(shifted):
    still, moved, true = shifted
    result = motion.correct_motion(moved)
    error = result.shifts - true
    error -= np.median(error, axis=0)  # the template's own position is arbitrary
    assert np.sqrt((error**2).mean()) < 0.1
    assert np.abs(error).max() < 0.35
    # Moved back: the corrected movie matches the still one (up to the template offset), inside the border.
    offset = np.median(result.shifts - true, axis=0)
    expected = motion.shift_frames(still, np.tile(-offset, (len(still), 1)))
    inner = (slice(None), slice(8, -8), slice(8, -8))
    assert np.abs(result.corrected[inner] - expected[inner]).mean() < 0.15 * np.abs(moved[inner] - still[inner]).mean()


def test_piecewise_and_memmap_output(shifted, tmp_path):
    _, moved, true = shifted
    out = tmp_path / "registered.npy"
    result = motion.correct_motion(moved[:100], "piecewise", out=out, block_size=40)
    assert result.path == out and out.exists()
    assert result.block_shifts.shape[0] == 100 and result.block_shifts.shape[-1] == 2
    reopened = result.movie(fps=30)
    assert reopened.shape == (100, 80, 80)
    np.testing.assert_allclose(reopened.frame(5), result.corrected[5])


def test_bad_input():
    with pytest.raises(InputError, match="registration method"):
        motion.correct_motion(np.zeros((10, 32, 32), np.float32), "elastic")
    with pytest.raises(InputError, match="too small"):
        motion.correct_motion(np.zeros((10, 4, 4), np.float32))
