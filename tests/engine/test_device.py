import pytest
import torch

from engine import device as dev
from engine.progress import Cancelled, Progress


def test_auto_selects_an_available_device(monkeypatch):
    monkeypatch.delenv(dev.DEVICE_ENV, raising=False)
    chosen = dev.select_device()
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert chosen.type in (expected, "mps")


def test_env_overrides_setting(monkeypatch):
    monkeypatch.setenv(dev.DEVICE_ENV, "cpu")
    assert dev.select_device("cuda").type == "cpu"


def test_unavailable_or_unknown_device_falls_back_to_cpu(monkeypatch, caplog):
    monkeypatch.delenv(dev.DEVICE_ENV, raising=False)
    monkeypatch.setattr(dev, "_cuda_ok", lambda torch: False)
    assert dev.select_device("cuda:3").type == "cpu"
    assert "not available" in caplog.text
    assert dev.select_device("quantum").type == "cpu"
    assert "unknown device" in caplog.text


def test_device_name_for_cpu():
    name = dev.device_name(torch.device("cpu"))
    assert name.startswith("CPU: ") and "cores" in name


def test_configure_threads_sets_torch_blas_and_env(monkeypatch):
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    try:
        assert dev.configure_threads(1) == 1
        assert torch.get_num_threads() == 1
        assert [p["filepath"] for p in threadpool_info() if p["num_threads"] != 1] == []
        assert dev.os.environ["OMP_NUM_THREADS"] == "1"
        monkeypatch.setenv(dev.THREADS_ENV, "2")
        assert dev.configure_threads() == 2
    finally:
        dev.configure_threads(before)


def _pool_threads():
    """Thread counts of the BLAS pools that can use threads: process-wide, unlike OpenMP's (and
    torch's), which each thread keeps for itself once set. (cvxpy's SCS brings a single-threaded
    OpenBLAS build that always reports 1.)"""
    from threadpoolctl import threadpool_info

    return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas" and p.get("threading_layer") != "disabled"}


def test_overlapping_single_threaded_sections_restore_the_configured_count():
    """Two threads entering and leaving out of order: one thread while either is inside, the
    configured count after both (per-caller threadpool_limits left a random count behind)."""
    import threading

    before = torch.get_num_threads()
    try:
        dev.configure_threads(2)
        a_in, b_in, a_may_leave, a_left = (threading.Event() for _ in range(4))

        def first():
            with dev.single_threaded():
                a_in.set()
                a_may_leave.wait(5)
            a_left.set()

        thread = threading.Thread(target=first)
        thread.start()
        assert a_in.wait(5)
        assert _pool_threads() == {1}
        with dev.single_threaded():  # entered second, left last
            b_in.set()
            a_may_leave.set()
            assert a_left.wait(5)
            assert _pool_threads() == {1}, "the first to leave restored the pools under the other caller"
            dev.configure_threads(2)  # e.g. the settings dialog while a job runs
            assert _pool_threads() == {1}
        thread.join(5)
        assert _pool_threads() == {2}
    finally:
        dev.configure_threads(before)


def test_configure_threads_works_while_another_live_thread_holds_openblas():
    """threadpoolctl >= 3.8 ignores OpenBLAS limits from all but the first thread that set one;
    a job thread that once limited BLAS must not freeze the settings (the failure CI saw)."""
    import threading

    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    holding, release = threading.Event(), threading.Event()

    def job():
        threadpool_limits(limits=2)  # takes OpenBLAS control and keeps it while alive
        holding.set()
        release.wait(5)

    thread = threading.Thread(target=job)
    thread.start()
    try:
        assert holding.wait(5)
        dev.configure_threads(1)
        assert _pool_threads() == {1}
        with dev.single_threaded():
            assert _pool_threads() == {1}
        dev.configure_threads(2)
        assert _pool_threads() == {2}
    finally:
        release.set()
        thread.join(5)
        dev.configure_threads(before)


def test_describe_reports_device_and_versions(monkeypatch):
    monkeypatch.setenv(dev.DEVICE_ENV, "cpu")
    info = dev.describe()
    assert info.device == "cpu"
    assert info.torch_version == torch.__version__
    assert "torch" in info.summary() and "cores" in info.summary()


def test_measure_speed_reports_throughput_and_can_be_cancelled(monkeypatch):
    monkeypatch.setenv(dev.DEVICE_ENV, "cpu")
    result = dev.measure_speed(seconds=0.2, size=128)
    assert result["matmuls"] >= 1 and result["gflops"] > 0
    p = Progress()
    p.cancel()
    with pytest.raises(Cancelled):
        dev.measure_speed(seconds=5, size=128, progress=p)
