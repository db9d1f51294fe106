import threading
import time

import pytest

from engine.progress import Cancelled, Progress, as_progress


def recorder():
    calls = []
    return calls, (lambda fraction, message: calls.append((fraction, message)))


def test_report_clamps_and_calls_back():
    calls, callback = recorder()
    p = Progress(callback, min_interval=0)
    p.report(0.25, "a")
    p.report(1.7)
    assert calls[0] == (0.25, "a")
    assert calls[-1][0] == 1.0
    assert p.fraction == 1.0


def test_throttling_lets_message_changes_and_completion_through():
    calls, callback = recorder()
    p = Progress(callback, min_interval=10.0)
    for i in range(1000):
        p.report(i / 2000, "same")
    p.report(0.6, "new message")
    p.report(1.0)
    fractions = [c[0] for c in calls]
    assert len(calls) == 3  # first, the message change, completion
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_check_raises_after_cancel_from_another_thread():
    p = Progress()
    p.check()
    threading.Thread(target=p.cancel).start()
    deadline = time.monotonic() + 2
    with pytest.raises(Cancelled):
        while time.monotonic() < deadline:
            p.check()
    assert p.cancelled


def test_nested_stages_map_onto_parent_range():
    calls, callback = recorder()
    p = Progress(callback, min_interval=0)
    load, solve = p.split([1, 3], ["Loading", "Solving"])
    load.report(0.5)
    assert p.fraction == pytest.approx(0.125)
    assert p.message == "Loading"
    inner_a, inner_b = solve.split([1, 1])
    inner_b.report(0.5, "band 3")
    assert p.fraction == pytest.approx(0.25 + 0.75 * 0.75)
    assert p.message == "Solving: band 3"
    # stages share cancellation with the root
    p.cancel()
    with pytest.raises(Cancelled):
        inner_a.check()


def test_progress_never_goes_backwards():
    p = Progress()
    a, b = p.split([1, 1])
    b.report(0.5)
    a.report(0.1)  # late report from an earlier stage
    assert p.fraction == pytest.approx(0.75)


def test_iterate_checks_and_reports():
    calls, callback = recorder()
    p = Progress(callback, min_interval=0)
    seen = []
    for item in p.iterate(range(4), message="item"):
        seen.append(item)
        if item == 2:
            p.cancel()
            break
    assert seen == [0, 1, 2]
    assert calls[-1] == (0.5, "item 2/4")
    with pytest.raises(Cancelled):
        list(p.iterate(range(3)))


def test_bad_stage_arguments():
    p = Progress()
    with pytest.raises(ValueError):
        p.stage(0.5, 0.2)
    with pytest.raises(ValueError):
        p.split([])
    with pytest.raises(ValueError):
        p.split([1, 1], ["only one"])


def test_as_progress_default_is_silent_and_usable():
    p = as_progress(None)
    p.report(0.5, "x")
    p.check()
    given = Progress()
    assert as_progress(given) is given
