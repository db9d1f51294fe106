"""Preprocessing for spike sorting: band-pass, common median reference, whitening — in chunks.

Order (as Kilosort): zero-phase Butterworth band-pass (``sosfiltfilt``, default 300–6000 Hz,
order 3) → common median reference (each sample minus the median over channels; off by default
below 8 channels, where a tetrode's spikes are on every channel and the median would eat them) →
ZCA whitening ``W = E (D + eps)^-1/2 Eᵀ`` of the noise covariance, global or local (each channel
whitened within its neighbourhood of ``whiten_radius`` µm, Kilosort's "whiteningLocal").
After whitening the noise has unit variance on every channel, so the sorter's thresholds are in
noise standard deviations.

Chunks: a recording is never loaded whole. Each chunk is read with ``margin`` extra samples on
both sides, filtered, and the margins dropped. The margin is where the filter's impulse response
has decayed below 1e-7 of its peak, so chunked output equals whole-array output to float32
precision (tested); the recording's own ends get the same odd-extension padding as a whole-array
filter would.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from engine.progress import as_progress


@dataclass
class PreprocessParams:
    """Settings; ``common_reference`` None means auto (on with ≥ 8 channels)."""

    freq_min: float = 300.0
    freq_max: float = 6000.0
    filter_order: int = 3
    common_reference: bool | None = None
    whiten: str = "global"  # "global", "local" or "none"
    whiten_radius: float = 100.0  # µm, for local whitening
    chunk_seconds: float = 2.0

    def to_dict(self) -> dict:
        return asdict(self)


def bandpass_sos(sample_rate: float, freq_min: float, freq_max: float, order: int = 3) -> np.ndarray:
    """Butterworth second-order sections; high-pass only when freq_max is near Nyquist."""
    from scipy.signal import butter

    nyquist = sample_rate / 2
    if freq_max is None or freq_max >= 0.95 * nyquist:
        return butter(order, freq_min, btype="highpass", fs=sample_rate, output="sos")
    return butter(order, [freq_min, freq_max], btype="bandpass", fs=sample_rate, output="sos")


def filter_margin(sos: np.ndarray, tolerance: float = 1e-7) -> int:
    """Samples after which the impulse response stays below ``tolerance`` × its peak."""
    from scipy.signal import sosfilt

    n = 1 << 12
    while True:
        impulse = np.zeros(n)
        impulse[0] = 1.0
        h = np.abs(sosfilt(sos, impulse))
        above = np.flatnonzero(h > tolerance * h.max())
        if above[-1] < n // 2 or n >= 1 << 22:
            return int(above[-1]) + 1
        n *= 2


def median_rows(x: np.ndarray) -> np.ndarray:
    """np.median(x, axis=1), exactly: a row sort is SIMD-vectorized in numpy and ~9x faster than the
    per-row partition np.median does (0.004 s vs 0.034 s for 66000 × 32)."""
    n = x.shape[1]
    s = np.sort(x, axis=1)
    return (s[:, (n - 1) // 2] + s[:, n // 2]) / 2 if n % 2 == 0 else s[:, n // 2].copy()


def zca(cov: np.ndarray, eps_fraction: float = 1e-3) -> np.ndarray:
    """ZCA whitening matrix of a covariance; eps regularizes near-null directions (e.g. after CMR)."""
    d, e = np.linalg.eigh(cov)
    d = np.clip(d, 0, None) + eps_fraction * max(d.mean(), 1e-12)
    return (e / np.sqrt(d)) @ e.T


class Preprocessor:
    """Band-pass + CMR + whitening for one recording's channels.

    ``channels``: file columns used (probe order); ``positions``: their µm positions (for local
    whitening). Call :meth:`fit` (estimates the whitening from the recording) before
    :meth:`read`/:meth:`write`, or set ``whitening`` yourself.
    """

    def __init__(self, sample_rate: float, channels: np.ndarray, positions: np.ndarray | None = None, params: PreprocessParams | None = None):
        self.sample_rate = float(sample_rate)
        self.channels = np.asarray(channels, dtype=np.int64)
        self.positions = None if positions is None else np.asarray(positions, dtype=np.float64)
        self.params = params or PreprocessParams()
        self.sos = bandpass_sos(self.sample_rate, self.params.freq_min, self.params.freq_max, self.params.filter_order)
        self.margin = filter_margin(self.sos)
        cmr = self.params.common_reference
        self.use_cmr = (len(self.channels) >= 8) if cmr is None else bool(cmr)
        self.whitening = np.eye(len(self.channels), dtype=np.float32)

    # -- pieces ---------------------------------------------------------------------------------
    def filter(self, block: np.ndarray, float32: bool = False) -> np.ndarray:
        """Band-pass + CMR of an in-memory block (samples × channels), float32 out.

        ``float32`` filters in single precision (~20 % faster, equal to the float64 path within
        float32 rounding, ~1e-3 µV): for display; the sorter keeps float64.
        """
        from scipy.signal import sosfiltfilt

        if block.shape[0] == 0:
            return np.zeros(block.shape, np.float32)
        padlen = min(3 * (2 * len(self.sos) + 1), block.shape[0] - 1)
        # filter channels × time (contiguous rows: what sosfilt works on anyway), then back to
        # samples × channels contiguous, so the median's row sort and the casts run on contiguous data
        dtype = np.float32 if float32 else np.float64
        out = sosfiltfilt(self.sos.astype(dtype), np.array(block.T, dtype=dtype, order="C"), axis=1, padlen=padlen)
        out = np.ascontiguousarray(out.T)
        if self.use_cmr:
            out -= median_rows(out)[:, None]
        return out.astype(np.float32, copy=False)

    def read(self, recording, start: int, stop: int, whiten: bool = True, float32: bool = False) -> np.ndarray:
        """Preprocessed samples ``start:stop`` (clipped), samples × probe channels, float32 (see :meth:`filter`)."""
        n = recording.n_samples
        start, stop = max(0, int(start)), min(n, int(stop))
        if stop <= start:
            return np.zeros((0, len(self.channels)), np.float32)
        lo, hi = max(0, start - self.margin), min(n, stop + self.margin)
        block = self.filter(recording.read(lo, hi, channels=self.channels), float32)[start - lo: stop - lo]
        return block @ self.whitening.T if whiten else block

    def chunks(self, n_samples: int) -> Iterator[tuple[int, int]]:
        step = max(int(self.params.chunk_seconds * self.sample_rate), 1)
        for start in range(0, n_samples, step):
            yield start, min(start + step, n_samples)

    # -- whitening ------------------------------------------------------------------------------
    def fit(self, recording, max_seconds: float = 20.0, progress=None) -> "Preprocessor":
        """Estimate the noise covariance on up to ``max_seconds`` (evenly spread chunks) and set the whitening.

        Samples within 1 ms of any |value| > 5 robust SD are left out, so large spikes do not
        inflate the covariance (the noise, not the spikes, is what whitening should flatten).
        """
        return self._fit(lambda a, b: self.read(recording, a, b, whiten=False), recording.n_samples, max_seconds, progress)

    def _fit(self, read_filtered, n_samples: int, max_seconds: float, progress=None) -> "Preprocessor":
        """:meth:`fit` on filtered data from ``read_filtered(start, stop)`` (the recording, or a file
        of it already filtered)."""
        from scipy.ndimage import maximum_filter1d

        progress = as_progress(progress)
        mode = self.params.whiten
        n_ch = len(self.channels)
        if mode == "none":
            self.whitening = np.eye(n_ch, dtype=np.float32)
            return self
        step = min(int(0.5 * self.sample_rate), n_samples)
        n_pieces = max(1, min(int(max_seconds / 0.5), n_samples // max(step, 1)))
        starts = np.linspace(0, n_samples - step, n_pieces).astype(np.int64)
        cov = np.zeros((n_ch, n_ch))
        count = 0
        for i, s in enumerate(starts):
            progress.check()
            x = np.asarray(read_filtered(s, s + step), dtype=np.float64)
            sd = np.median(np.abs(x), axis=0) / 0.6745 + 1e-12
            loud = maximum_filter1d((np.abs(x) > 5 * sd).any(axis=1).astype(np.uint8), size=int(2e-3 * self.sample_rate) + 1) > 0
            quiet = x[~loud]
            cov += quiet.T @ quiet
            count += len(quiet)
            progress.report((i + 1) / len(starts), "estimating whitening")
        if count < 10 * n_ch:
            # almost everything was "loud" (tiny recording): fall back to all samples
            x = np.asarray(read_filtered(0, min(n_samples, 10 * step)), dtype=np.float64)
            cov, count = x.T @ x, len(x)
        cov /= max(count, 1)
        if mode == "local" and self.positions is not None:
            w = np.zeros((n_ch, n_ch))
            dist = np.linalg.norm(self.positions[:, None] - self.positions[None], axis=2)
            for c in range(n_ch):
                nb = np.flatnonzero(dist[c] <= self.params.whiten_radius)
                if len(nb) < min(4, n_ch):
                    nb = np.argsort(dist[c])[: min(4, n_ch)]
                local = zca(cov[np.ix_(nb, nb)])
                w[c, nb] = local[list(nb).index(c)]
        else:
            w = zca(cov)
        self.whitening = w.astype(np.float32)
        return self

    @property
    def whitening_inverse(self) -> np.ndarray:
        return np.linalg.pinv(self.whitening.astype(np.float64)).astype(np.float32)

    def write(self, recording, path: str | os.PathLike, progress=None, fit_seconds: float | None = None, workers: int = 1,
              dtype=np.float32) -> "np.memmap | Int16Traces":
        """Write the whitened recording (samples × channels) to ``path`` chunk by chunk: float32 (a memmap), or with
        ``dtype=np.int16`` as :class:`Int16Traces` (half the disk), each channel in steps of 1/``Int16Traces.STEPS_PER_SD``
        of its noise SD measured on the first chunk (written before the whitening is fitted: the filtered data, then
        the whitened data with their own steps).

        ``workers`` > 1 filters that many chunks at a time in threads (scipy's filters and numpy's
        sort release the GIL: ~1.8x faster on 2 cores); chunks are independent, so the output is the same.

        ``fit_seconds``: also estimate the whitening (:meth:`fit` with ``max_seconds=fit_seconds``),
        from the filtered data as written instead of filtering those pieces a second time; the
        file is then whitened in place (a matrix product per chunk, ~20x cheaper than filtering).
        """
        progress = as_progress(progress)
        path = Path(path)
        int16 = np.dtype(dtype) == np.int16
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.int16 if int16 else np.float32,
                                        shape=(recording.n_samples, len(self.channels)))
        chunks = list(self.chunks(recording.n_samples))
        fitting = fit_seconds is not None
        p_filter, p_fit, p_whiten = progress.split([8, 1, 1]) if fitting else (progress, None, None)
        def filtered(chunk):
            return self.read(recording, chunk[0], chunk[1], whiten=not fitting)

        pool = None
        if workers > 1 and len(chunks) > 1:
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="neurowb-filter")
        try:
            # at most 2 × workers chunks in flight (bounded memory)
            ahead = 2 * workers if pool else 0
            pending = [pool.submit(filtered, c) for c in chunks[:ahead]] if pool else []
            for i, (a, b) in enumerate(chunks):
                p_filter.check()
                if pool:
                    block = pending.pop(0).result()
                    if i + ahead < len(chunks):
                        pending.append(pool.submit(filtered, chunks[i + ahead]))
                else:
                    block = filtered((a, b))
                if int16 and i == 0:
                    out = Int16Traces.measured(out, block)
                out[a:b] = block
                p_filter.report((i + 1) / len(chunks), "filtering" if fitting else "filtering and whitening")
        finally:
            if pool:
                pool.shutdown(wait=True, cancel_futures=True)
        if fitting:
            data = out if int16 else np.asarray(out)  # a plain view: memmap slices are slow to make
            self._fit(lambda a, b: data[a:b], recording.n_samples, fit_seconds, p_fit)
            if self.params.whiten != "none":
                w_t = self.whitening.T
                for i, (a, b) in enumerate(chunks):
                    p_whiten.check()
                    block = data[a:b] @ w_t
                    if int16 and i == 0:  # the whitened data get their own steps
                        out = Int16Traces.measured(out.raw, block)
                    (out if int16 else data)[a:b] = block
                    p_whiten.report((i + 1) / len(chunks), "whitening")
        out.flush()
        return out

    def state(self) -> dict:
        """JSON-able description (enough to rebuild this Preprocessor, with the whitening matrix)."""
        return {
            "sample_rate": self.sample_rate,
            "channels": self.channels.tolist(),
            "params": self.params.to_dict(),
            "use_cmr": self.use_cmr,
            "margin": self.margin,
            "whitening": self.whitening.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict, positions: np.ndarray | None = None) -> "Preprocessor":
        pre = cls(state["sample_rate"], np.asarray(state["channels"]), positions, PreprocessParams(**state["params"]))
        pre.use_cmr = bool(state["use_cmr"])
        pre.whitening = np.asarray(state["whitening"], dtype=np.float32)
        return pre


class Int16Traces:
    """Samples × channels traces stored as int16 (a memory-mapped ``.npy``) in steps of ``step`` per channel, read and
    written as float32: half the temporary disk of float32 (an hour of 384 channels at 30 kHz: 83 GB, not 166), as
    Kilosort's int16 whitened file. With 200 steps per noise SD the range is ±164 SD (larger values are clipped and
    counted in ``clipped``) and the rounding error 0.0014 SD. Index rows, or (rows, channels): ``x[a:b]``,
    ``x[a:b, chans]`` (the second reads only those channels)."""

    STEPS_PER_SD = 200

    def __init__(self, raw: np.ndarray, step: np.ndarray):
        self.raw = raw  # the memmap, for flush()
        self._data = np.asarray(raw)  # a plain view: memmap slices are slow to make
        self.step = np.asarray(step, np.float32)
        self.clipped = 0

    @classmethod
    def measured(cls, raw: np.ndarray, block: np.ndarray) -> "Int16Traces":
        """Steps of 1/STEPS_PER_SD of each channel's robust SD in ``block`` (a dead channel: of the typical SD's 1e-3)."""
        sd = np.median(np.abs(block), axis=0) / 0.6745
        return cls(raw, np.maximum(sd, max(float(np.median(sd)) * 1e-3, 1e-12)) / cls.STEPS_PER_SD)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._data.shape

    dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self._data)

    def _step(self, index):
        return self.step[index[1]] if isinstance(index, tuple) and len(index) > 1 else self.step

    def __getitem__(self, index) -> np.ndarray:
        return self._data[index] * self._step(index)

    def __setitem__(self, index, values) -> None:
        q = np.asarray(values, np.float32) / self._step(index)
        np.rint(q, out=q)
        if q.size and (q.max() > 32767 or q.min() < -32767):  # two fast reductions; counted only when it happens
            self.clipped += int(np.count_nonzero(np.abs(q) > 32767))
            np.clip(q, -32767, 32767, out=q)
        self._data[index] = q

    def flush(self) -> None:
        self.raw.flush()


class ArrayRecording:
    """An in-memory array (samples × channels, µV) with RawRecording's read() — for tests and simulations."""

    def __init__(self, data: np.ndarray, sample_rate: float):
        self.data = np.asarray(data)
        self.sample_rate = float(sample_rate)

    @property
    def n_samples(self) -> int:
        return self.data.shape[0]

    @property
    def n_channels(self) -> int:
        return self.data.shape[1]

    @property
    def duration(self) -> float:
        return self.n_samples / self.sample_rate

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def read(self, start: int, stop: int, channels=None) -> np.ndarray:
        start, stop = max(0, int(start)), min(self.n_samples, int(stop))
        block = self.data[start:stop] if channels is None else self.data[start:stop][:, channels]
        return np.array(block, dtype=np.float32)


def robust_sd(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Median absolute deviation / 0.6745: the noise SD, insensitive to sparse spikes."""
    return np.median(np.abs(x - np.median(x, axis=axis, keepdims=True)), axis=axis) / 0.6745


__all__ = ["PreprocessParams", "Preprocessor", "ArrayRecording", "Int16Traces", "bandpass_sos", "filter_margin", "zca", "robust_sd"]
