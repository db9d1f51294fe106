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
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
        assert dev.os.environ["OMP_NUM_THREADS"] == "1"
        monkeypatch.setenv(dev.THREADS_ENV, "2")
        assert dev.configure_threads() == 2
    finally:
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
