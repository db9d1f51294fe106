"""Fixtures shared by all tests."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Real data for tests and benchmarks, beside the repository (never copied into it).
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def shared_data_path() -> Path:
    """``../shared/data`` beside the repository root (may not exist)."""
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder; skips the test cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} (../shared/data beside the repository) is absent")
    return SHARED_DATA


# -- crash injection -----------------------------------------------------------------------------

_FS_CHANGES = ("replace", "rename", "unlink", "remove", "rmdir")  # how a write becomes visible


def killed_at_every_write(actions, prepare, max_runs: int = 400):
    """For k = 0, 1, 2, …: ``prepare()`` (fresh files), then a forked child runs ``actions()`` and is
    killed (``os._exit``, no cleanup, as ``kill -9``) just before its k-th file-system change — every
    rename, replace or unlink, which is how each atomic write becomes visible. Yields k after each
    child is gone, for the caller to reopen and check the files; stops after the first run that
    finished without being killed. ``os.fork``: POSIX only."""
    import os

    if not hasattr(os, "fork"):
        pytest.skip("crash injection forks the process (POSIX only)")
    for k in range(max_runs):
        prepare()
        pid = os.fork()
        if pid == 0:  # the child: count file-system changes, die before the k-th
            code = 0
            try:
                count = [0]

                def hooked(fn, count=count, k=k):
                    def wrapper(*args, **kwargs):
                        if count[0] == k:
                            os._exit(137)
                        count[0] += 1
                        return fn(*args, **kwargs)
                    return wrapper

                for name in _FS_CHANGES:
                    setattr(os, name, hooked(getattr(os, name)))
                actions()
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        assert code in (0, 137), f"the child failed (exit {code}) at write {k}: see its traceback above"
        yield k
        if code == 0:
            return
    raise AssertionError(f"still writing after {max_runs} file-system changes")


@pytest.fixture
def crash_every_write():
    """:func:`killed_at_every_write` for a test, run with torch on one thread (the steps in the parent too,
    so both compute the same numbers): a forked child has none of the threads of a pool the parent
    already started (e.g. an earlier test in the same run), and its first parallel region would wait
    for them forever. PyTorch's DataLoader workers run on one thread for the same reason."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield killed_at_every_write
    torch.set_num_threads(threads)


def cancelling_at(text: str):
    """A Progress that cancels itself the first time a message containing ``text`` is reported (every
    report is seen: no throttling); ``.seen`` lists the messages up to then."""
    from engine.progress import Progress

    def callback(fraction, message):
        progress.seen.append(message)
        if text in (message or ""):
            progress.cancel()

    progress = Progress(callback, min_interval=0.0)
    progress.seen = []
    return progress


def folder_bytes(folder) -> dict:
    """Every file under ``folder`` (relative path → bytes), to compare a result before and after."""
    from pathlib import Path

    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
