"""The app's ``neurowb`` sub-commands: ``gui`` and ``demo`` (registered through the entry point
``neurowb.commands`` so that engine/cli.py never imports Qt)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from engine.errors import InputError

DEMO_TIMEOUT_S = 300


def register(subparsers: argparse._SubParsersAction) -> None:
    gui = subparsers.add_parser("gui", help="open the workbench window", description="Open the workbench, optionally with files.")
    gui.add_argument("files", nargs="*", help="files to open (dispatched to the matching workspace by type)")
    gui.set_defaults(run=run_gui)

    demo = subparsers.add_parser("demo", help="open the workbench on the bundled demo data",
                                 description="Generate (once) the demo datasets and open each in its workspace. "
                                             "With --screenshots, save one PNG per workspace and exit; "
                                             "without a display this runs on a virtual one (Xvfb).")
    demo.add_argument("--screenshots", metavar="DIR", type=Path, help="save one screenshot per workspace to DIR, then exit")
    demo.set_defaults(run=run_demo)


def run_gui(args: argparse.Namespace) -> int:
    from app.display import has_display

    if not has_display():
        raise InputError("No display found (DISPLAY is not set). Run inside a desktop session, use `ssh -X`, "
                         "or run `neurowb demo --screenshots DIR` for a headless demo.")
    from app.main import main

    return main(args.files)


def run_demo(args: argparse.Namespace) -> int:
    from app.display import has_display, virtual_display
    from engine.cli import check_output

    if args.screenshots is not None:
        check_output(args.screenshots, folder=True)  # before generating the demo data and starting the window
    if has_display():
        return _demo(args.screenshots)
    # No display: run this same command in a child process on a virtual one. The child's Qt
    # must disconnect before Xvfb stops, or X aborts the process on exit.
    screenshots = args.screenshots or Path("demo-output")
    with virtual_display() as display:
        print(f"No display: running the demo on a virtual display ({display}); screenshots go to {screenshots}/", flush=True)
        return subprocess.call([sys.executable, "-m", "engine.cli", "demo", "--screenshots", str(screenshots)])


def _demo(screenshot_dir: Path | None) -> int:
    from PyQt6.QtCore import QTimer

    from app.main import MainWindow, create_application
    from app.screenshots import is_blank, save_screenshot

    app = create_application()
    if screenshot_dir is not None:  # unattended: a second run asks whether to replace the first run's results
        from app import dialogs

        dialogs.unattended = True
    window = MainWindow()
    window.resize(1480, 900)
    window.show()
    outcome = {"code": 0}
    shots = {"count": 0}

    def fail(message: str) -> None:
        print(f"error: {message}", file=sys.stderr)
        outcome["code"] = 1
        app.quit()

    def take_screenshots(index: int = 0) -> None:
        if index == len(window.workspaces):
            print(f"Saved {shots['count']} screenshots to {screenshot_dir}/")
            app.quit()
            return
        ws = window.workspaces[index]
        window.show_workspace(ws.key)
        steps = list(ws.demo_steps())

        def grab(name: str) -> bool:
            path = screenshot_dir / f"{name}.png"
            if is_blank(save_screenshot(window, path)):
                fail(f"screenshot {path} is blank")
                return False
            print(f"  {path}")
            shots["count"] += 1
            return True

        def after_render(then) -> None:
            # Finished jobs linger briefly in the status bar, and OpenGL views need a few frames.
            if window.job_panel.rows:
                QTimer.singleShot(200, lambda: after_render(then))
            else:
                QTimer.singleShot(700, then)

        def run_step(k: int) -> None:
            if k == len(steps):
                take_screenshots(index + 1)
                return
            name, action = steps[k]
            job = action()

            def shoot() -> None:
                if grab(f"{index + 1}-{ws.key}-{k + 1}-{name}"):
                    run_step(k + 1)

            if job is None:
                after_render(shoot)
                return

            def ended(job) -> None:
                if job.error is not None:
                    fail(f"demo step {name!r} of {ws.title}: {job.error.message}")
                else:
                    after_render(shoot)

            job.ended.connect(ended)

        def first() -> None:
            if grab(f"{index + 1}-{ws.key}"):
                run_step(0)

        after_render(first)

    def opened(jobs) -> None:
        pending = set(jobs)
        if not pending:
            fail("no workspace opened its demo data")

        def ended(job) -> None:
            pending.discard(job)
            if job.error is not None:
                fail(f"{job.name} failed: {job.error.message}")
            elif not pending and screenshot_dir is not None:
                take_screenshots()
            elif not pending:
                window.show_workspace(window.workspaces[0].key)

        for job in jobs:
            job.ended.connect(ended)

    demo_job = window.open_demo(on_opened=opened)
    demo_job.failed.connect(lambda error: fail(f"preparing demo data failed: {error.message}"))
    if screenshot_dir is not None:
        QTimer.singleShot(DEMO_TIMEOUT_S * 1000, lambda: fail(f"demo did not finish within {DEMO_TIMEOUT_S} s"))
    app.exec()
    window.close()
    return outcome["code"]
