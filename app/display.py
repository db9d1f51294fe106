"""A virtual X display (Xvfb) for running the GUI where there is no screen."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from typing import Iterator

from engine.errors import InputError

SCREEN = "1600x1000x24"


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or \
        os.environ.get("QT_QPA_PLATFORM", "") in ("offscreen", "minimal")


@contextlib.contextmanager
def virtual_display(screen: str = SCREEN) -> Iterator[str]:
    """Start Xvfb on a free display number, set DISPLAY for the block, stop it afterwards."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise InputError("No display and no Xvfb to make one. Install the system packages with "
                         "`bash installers/linux/system-deps.sh` (or run inside a desktop session).")
    read_fd, write_fd = os.pipe()
    # -displayfd: Xvfb picks a free display number and writes it to the pipe once it is ready.
    process = subprocess.Popen([xvfb, "-displayfd", str(write_fd), "-screen", "0", screen, "-nolisten", "tcp"],
                               pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    if not number:
        process.kill()
        raise InputError("Xvfb failed to start a virtual display. Check that `Xvfb -help` runs.")
    previous = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = f":{number}"
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
    try:
        yield os.environ["DISPLAY"]
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
        if previous is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = previous
