import subprocess
import sys

from engine import __version__, cli
from engine.errors import InputError


def fake_commands(subparsers):
    ok = subparsers.add_parser("ok")
    ok.add_argument("value", type=int)
    ok.set_defaults(run=lambda args: 0 if args.value > 0 else 3)
    subparsers.add_parser("bad-input").set_defaults(run=lambda args: (_ for _ in ()).throw(
        InputError("file has 31 channels, probe has 32: pick the matching probe file")))
    subparsers.add_parser("crash").set_defaults(run=lambda args: 1 / 0)


def test_version_from_the_console_script():
    out = subprocess.run([sys.executable, "-m", "engine.cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"NeuroWorkbench {__version__}"


def test_installed_commands_include_the_apps_gui_and_demo():
    parser = cli.build_parser()
    help_text = parser.format_help()
    assert "gui" in help_text and "demo" in help_text


def test_registered_command_runs_and_returns_its_code():
    assert cli.main(["ok", "5"], registrations=[fake_commands]) == 0
    assert cli.main(["ok", "-1"], registrations=[fake_commands]) == 3


def test_input_error_prints_one_line_and_exits_2(capsys):
    assert cli.main(["bad-input"], registrations=[fake_commands]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: file has 31 channels, probe has 32: pick the matching probe file"]


def test_unexpected_error_is_one_line_without_debug_and_traceback_with(capsys):
    assert cli.main(["crash"], registrations=[fake_commands]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "ZeroDivisionError" in err and "--debug" in err
    assert cli.main(["--debug", "crash"], registrations=[fake_commands]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_device_and_scheduler_options_reach_the_environment(monkeypatch):
    import os

    monkeypatch.delenv("NEUROWB_DEVICE", raising=False)
    monkeypatch.delenv("NEUROWB_SCHEDULER", raising=False)
    assert cli.main(["--device", "cpu", "--scheduler", "serial", "ok", "1"], registrations=[fake_commands]) == 0
    assert os.environ["NEUROWB_DEVICE"] == "cpu" and os.environ["NEUROWB_SCHEDULER"] == "serial"


def test_engine_cli_does_not_import_qt():
    code = "import sys, engine.cli, engine.progress, engine.device, engine.parallel; " \
           "sys.exit(any(m.startswith('PyQt') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_progress_bar_is_fed_by_progress(capsys):
    with cli.progress_bar("Working", disable=False) as progress:
        progress.report(0.5, "half")
        progress.report(1.0, "done")
    err = capsys.readouterr().err
    assert "Working" in err and "100%" in err


HEAVY = ("torch", "dask", "distributed", "sklearn", "scipy")


def _imported_by(argv: list[str]) -> list[str]:
    """Which of HEAVY a fresh interpreter imports to run ``neurowb ARGV`` (help and version exit)."""
    code = ("import sys\nfrom engine.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "print('MODULES', *[m for m in %r if m in sys.modules])" % (argv, HEAVY))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1].split()[1:]


def test_version_and_help_start_without_heavy_imports():
    # Seconds of start-up otherwise (scikit-learn alone took 1-2 s): the commands import them when they run.
    assert _imported_by(["--version"]) == []
    assert _imported_by(["hks", "--help"]) == []
    assert _imported_by(["--help"]) == []


def test_unreachable_scheduler_is_a_quick_input_error(monkeypatch, capsys):
    import socket
    import time

    from engine import parallel

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT", 1.0)
    monkeypatch.setenv("NEUROWB_SCHEDULER", "auto")  # restored after the test (main sets it)
    ran = []
    def commands(sub):
        sub.add_parser("work").set_defaults(run=lambda args: ran.append(1), batches=True)
        sub.add_parser("local-only").set_defaults(run=lambda args: ran.append(2))

    start = time.monotonic()
    assert cli.main(["--scheduler", address, "work"], registrations=[commands]) == 2
    assert time.monotonic() - start < 10 and not ran  # failed before the command's work began
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and address in err[0] and "dask scheduler" in err[0]
    # A command that does not batch says so instead of pretending its work went there.
    assert cli.main(["--scheduler", address, "local-only"], registrations=[commands]) == 0 and ran == [2]
    assert "runs on this machine" in capsys.readouterr().err
