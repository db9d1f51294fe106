"""The bad-input corpus, through the command line: every case is a small damaged file or a bad option,
generated here (no binary files in the repository), given to the ``neurowb`` command that takes it.

Each must end with exit code 2 and one ``error:`` line on stderr, the last one: never exit 1 (a raw
exception), a traceback, a hang (every case runs under a timer) or exit 0 (silently accepted garbage).
Most cases run in-process through :func:`engine.cli.main` (a subprocess costs seconds of imports on
this 2-core machine); :func:`test_installed_command_reports_bad_input` runs a few as real processes.
The window's open path gets the same kinds of files in tests/app/test_bad_input_window.py, which
builds them with tests/bad_files.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import cli
import bad_files as bf

CASE_SECONDS = 60  # far above any case's time (most take milliseconds): only a hang gets here

#: id → (builder(tmp, good) → argv, text the error line must contain)
CASES: dict[str, tuple] = {}


def case(name: str, expect: str = ""):
    def register(build):
        assert name not in CASES, name
        CASES[name] = (build, expect)
        return build
    return register


def simple(name: str, expect: str, argv):
    """A case whose argv needs only the good files: argv(tmp, good) → list."""
    case(name, expect)(argv)


# ----------------------------------------------------------------------------------------------
# Morphology: meshes, labels, models, HKS options

for kind in bf.BAD_MESHES:
    simple(f"mesh-hks-{kind}", bf.BAD_MESHES[kind][1],
           lambda tmp, good, kind=kind: ["hks", str(bf.bad_mesh(tmp, kind)), "-o", str(tmp / "o.npz")])

simple("mesh-predict-collinear", "no face of non-zero area",
       lambda tmp, good: ["spines", "predict", str(good["spine_model"]), str(bf.bad_mesh(tmp, "collinear")), "-o", str(tmp / "p.npy")])
simple("mesh-train-collinear", "no face of non-zero area",
       lambda tmp, good: ["spines", "train", "--mesh", str(bf.bad_mesh(tmp, "collinear")), "--labels", str(good["labels_4"]),
                          "-o", str(tmp / "m.nwbspine")])
simple("mesh-hks-coordinates-1e12", "other units",
       lambda tmp, good: ["hks", str(bf.scaled_sphere(tmp, 1e12)), "-o", str(tmp / "o.npz")])
simple("mesh-hks-scale-1e12", "other units", lambda tmp, good: ["hks", str(good["sphere"]), "--scale", "1e12", "-o", str(tmp / "o.npz")])
simple("mesh-hks-scale-1e12-units-um", "other units",
       lambda tmp, good: ["hks", str(good["sphere"]), "--scale", "1e12", "--units", "um", "-o", str(tmp / "o.npz")])
simple("mesh-hks-scale-1e12-every-eigenpair", "eigenpairs",
       lambda tmp, good: ["hks", str(bf.scaled_sphere(tmp, 1e12, subdivisions=4)), "--t-min", "1e25", "--t-max", "1e26",
                          "-o", str(tmp / "o.npz")])
for option, value, expect in [
    ("--scale", "0", "must be > 0"), ("--scale", "-1", "must be > 0"), ("--scale", "nan", "finite"), ("--scale", "inf", "finite"),
    ("--timescales", "0", "must be ≥ 1"), ("--timescales", "2.5", "whole number"), ("--t-min", "-1", "must be > 0"),
    ("--t-max", "nan", "finite"), ("--max-eigenvalue", "0", "must be > 0"), ("--overlap", "-1", "must be ≥ 0"),
    ("--chunk-size", "0", "must be ≥ 1"),
]:
    simple(f"mesh-hks-option{option}={value}", expect,
           lambda tmp, good, o=option, v=value: ["hks", str(good["sphere"]), o, v, "-o", str(tmp / "o.npz")])
simple("mesh-hks-t-min-above-t-max", "--t-min <= --t-max",
       lambda tmp, good: ["hks", str(good["sphere"]), "--t-min", "10", "--t-max", "1", "-o", str(tmp / "o.npz")])
simple("mesh-hks-output-is-a-folder", "existing folder", lambda tmp, good: ["hks", str(good["sphere"]), "-o", str(bf.folder(tmp, "o.npz"))])
simple("mesh-hks-output-suffix", "must end in .npz", lambda tmp, good: ["hks", str(good["sphere"]), "-o", str(tmp / "o.txt")])
simple("mesh-hks-output-parent-is-a-file", "is a file",
       lambda tmp, good: ["hks", str(good["sphere"]), "-o", str(bf.text(tmp, "f", "x") / "o.npz")])
simple("mesh-hks-points-missing", "not found",
       lambda tmp, good: ["hks", str(good["sphere"]), "--points", str(tmp / "none.csv"), "-o", str(tmp / "o.npz")])
simple("mesh-hks-points-two-columns", "column",
       lambda tmp, good: ["hks", str(good["sphere"]), "--points", str(bf.text(tmp, "p.csv", "1,2\n3,4\n")), "-o", str(tmp / "o.npz")])
simple("mesh-hks-points-nan", "NaN",
       lambda tmp, good: ["hks", str(good["sphere"]), "--points", str(bf.npy(tmp, "p.npy", np.full((2, 3), np.nan))), "-o", str(tmp / "o.npz")])
simple("mesh-train-label-count", "labels but",
       lambda tmp, good: ["spines", "train", "--mesh", str(good["sphere"]), "--labels", str(good["labels_4"]), "-o", str(tmp / "m")])
simple("mesh-train-labels-garbage", "Cannot read labels",
       lambda tmp, good: ["spines", "train", "--mesh", str(good["sphere"]), "--labels", str(bf.garbage(tmp, "l.npy")), "-o", str(tmp / "m")])
simple("mesh-train-one-class", "fewer than two classes",
       lambda tmp, good: ["spines", "train", "--mesh", str(good["sphere"]), "--labels", str(good["labels_sphere_one_class"]),
                          "--label-map", "binary", "-o", str(tmp / "m")])
simple("mesh-train-n-estimators-0", "must be ≥ 1",
       lambda tmp, good: ["spines", "train", "--mesh", str(good["sphere"]), "--labels", str(good["labels_4"]), "--n-estimators", "0",
                          "-o", str(tmp / "m")])
simple("mesh-train-label-map", "",
       lambda tmp, good: ["spines", "train", "--mesh", str(good["sphere"]), "--labels", str(good["labels_sphere_one_class"]),
                          "--label-map", "0:wing", "-o", str(tmp / "m")])
simple("mesh-predict-model-garbage", "",
       lambda tmp, good: ["spines", "predict", str(bf.garbage(tmp, "m.nwbspine")), str(good["sphere"]), "-o", str(tmp / "p.npy")])
simple("mesh-predict-output-folder", "existing folder",
       lambda tmp, good: ["spines", "predict", str(good["spine_model"]), str(good["sphere"]), "-o", str(bf.folder(tmp, "p.npy"))])
simple("mesh-evaluate-leave-one-out-one-mesh", "at least two",
       lambda tmp, good: ["spines", "evaluate", "--mesh", str(good["sphere"]), "--labels", str(good["labels_4"]), "--split", "leave-one-out"])

# ----------------------------------------------------------------------------------------------
# Ephys: recordings, probes, sort options, Phy folders


def sort_argv(tmp, good, *extra, raw=None, output=None):
    raw = good["recording"] if raw is None else raw
    return ["sort", str(raw), "--n-channels", "4", "--fs", "30000", "--probe", str(good["probe"]),
            "-o", str(output or tmp / "phy"), *extra]


simple("ephys-sort-nan-samples", "NaN or infinite samples, the first at sample 1,234",
       lambda tmp, good: sort_argv(tmp, good, "--dtype", "float32", raw=bf.float_recording(tmp, nan_at=(1234, 2))))
simple("ephys-sort-inf-samples", "NaN or infinite samples",
       lambda tmp, good: sort_argv(tmp, good, "--dtype", "float32", raw=bf.float_recording(tmp, nan_at=(50, 0), value=np.inf)))
simple("ephys-sort-output-is-a-file", "is an existing file",
       lambda tmp, good: sort_argv(tmp, good, output=bf.text(tmp, "phy", "not a folder")))
simple("ephys-sort-size-not-multiple", "not a multiple",
       lambda tmp, good: sort_argv(tmp, good, raw=bf.raw_bytes(tmp, "odd.raw", 4 * 2 * 1000 + 3)))
simple("ephys-sort-empty", "empty", lambda tmp, good: sort_argv(tmp, good, raw=bf.raw_bytes(tmp, "e.raw", 0)))
simple("ephys-sort-missing", "not found", lambda tmp, good: sort_argv(tmp, good, raw=tmp / "none.raw"))
simple("ephys-sort-too-short", "too short", lambda tmp, good: sort_argv(tmp, good, raw=bf.raw_bytes(tmp, "short.raw", 4 * 2 * 20)))
simple("ephys-sort-lfp-rate", "cannot be spike sorted",
       lambda tmp, good: [*sort_argv(tmp, good)[:5], "1000", *sort_argv(tmp, good)[6:]])
for option, value, expect in [
    ("--threshold", "-1", "must be > 0"), ("--threshold", "0", "must be > 0"), ("--threshold", "nan", "finite"),
    ("--gain", "0", "must not be 0"), ("--gain", "nan", "finite"), ("--offset", "inf", "finite"),
    ("--dtype", "int8", "invalid choice"),
]:
    simple(f"ephys-sort-option{option}={value}", expect, lambda tmp, good, o=option, v=value: sort_argv(tmp, good, o, v))
for option, value, expect in [("--n-channels", "0", "must be ≥ 1"), ("--n-channels", "abc", "whole number"),
                              ("--fs", "0", "must be > 0"), ("--fs", "-30000", "must be > 0"), ("--fs", "nan", "finite"),
                              ("--fs", "inf", "finite")]:
    simple(f"ephys-sort-option{option}={value}", expect,
           lambda tmp, good, o=option, v=value: ["sort", str(good["recording"]), "--n-channels", "4", "--fs", "30000",
                                                 o, v, "-o", str(tmp / "phy")])
for kind in bf.BAD_PROBES:
    simple(f"ephys-sort-probe-{kind}", bf.BAD_PROBES[kind][1],
           lambda tmp, good, kind=kind: sort_argv(tmp, good, "--probe", str(bf.bad_probe(tmp, kind))))
for option, value, expect in [("--channels", "0", "must be ≥ 1"), ("--duration", "-1", "must be > 0"), ("--noise", "nan", "finite"),
                              ("--fs", "0", "must be > 0"), ("--units", "-2", "must be ≥ 0")]:
    simple(f"ephys-simulate-option{option}={value}", expect,
           lambda tmp, good, o=option, v=value: ["simulate-ephys", "-o", str(tmp / "sim"), o, v])
simple("ephys-simulate-output-is-a-file", "existing file", lambda tmp, good: ["simulate-ephys", "-o", str(bf.text(tmp, "sim", "x"))])

for kind in bf.BAD_PHY:
    simple(f"ephys-qc-{kind}", bf.BAD_PHY[kind][1], lambda tmp, good, kind=kind: ["qc", str(bf.bad_phy(tmp, kind))])
simple("ephys-qc-missing-folder", "not found", lambda tmp, good: ["qc", str(tmp / "none")])
simple("ephys-qc-output-is-a-folder", "existing folder",
       lambda tmp, good: ["qc", str(bf.bad_phy(tmp, None)), "-o", str(bf.folder(tmp, "m.csv"))])

# ----------------------------------------------------------------------------------------------
# Calcium: movies, traces, options

for kind in bf.BAD_MOVIES:
    simple(f"calcium-cnmf-{kind}", bf.BAD_MOVIES[kind][1],
           lambda tmp, good, kind=kind: ["cnmf", str(bf.bad_movie(tmp, kind)), "-o", str(tmp / "out")])
for option, value, expect in [("--fs", "0", "must be > 0"), ("--fs", "nan", "finite"), ("--neuron-diameter", "1", "must be ≥ 2"),
                              ("--neuron-diameter", "inf", "finite"), ("--patch-size", "0", "must be ≥ 1")]:
    simple(f"calcium-cnmf-option{option}={value}", expect,
           lambda tmp, good, o=option, v=value: ["cnmf", str(good["movie"]), o, v, "-o", str(tmp / "out")])
simple("calcium-cnmf-output-is-a-file", "existing file", lambda tmp, good: ["cnmf", str(good["movie"]), "-o", str(bf.text(tmp, "out", "x"))])
simple("calcium-cnmf-nwb-suffix", "must end in .nwb",
       lambda tmp, good: ["cnmf", str(good["movie"]), "-o", str(tmp / "out"), "--nwb", str(tmp / "x.h5")])
for name, make, expect in [
    ("garbage", lambda tmp: bf.garbage(tmp, "t.npy"), "Could not read"),
    ("3d", lambda tmp: bf.npy(tmp, "t.npy", np.zeros((2, 3, 4))), "traces × frames"),
    ("strings", lambda tmp: bf.npy(tmp, "t.npy", np.array(["a", "b"])), "numbers"),
    ("nan", lambda tmp: bf.npy(tmp, "t.npy", np.r_[np.ones(50), np.nan, np.ones(49)]), "NaN"),
    ("txt", lambda tmp: bf.text(tmp, "t.txt", "1 2 3"), "not supported"),
]:
    simple(f"calcium-deconvolve-{name}", expect, lambda tmp, good, make=make: ["deconvolve", str(make(tmp)), "-o", str(tmp / "d.npz")])
simple("calcium-deconvolve-output-suffix", "must end in .npz",
       lambda tmp, good: ["deconvolve", str(bf.npy(tmp, "t.npy", np.ones((2, 100)))), "-o", str(tmp / "d.txt")])
simple("calcium-deconvolve-fs-0", "must be > 0",
       lambda tmp, good: ["deconvolve", str(bf.npy(tmp, "t.npy", np.ones((2, 100)))), "--fs", "0", "-o", str(tmp / "d.npz")])
for option, value, expect in [("--size", "10", "must be ≥ 24"), ("--frames", "5", "must be ≥ 40"), ("--fs", "nan", "finite"),
                              ("--motion", "-1", "must be ≥ 0"), ("--cells", "-1", "must be ≥ 0")]:
    simple(f"calcium-simulate-option{option}={value}", expect,
           lambda tmp, good, o=option, v=value: ["simulate-calcium", "-o", str(tmp / "sim"), o, v])

# ----------------------------------------------------------------------------------------------
# Microarchitecture: images, label maps, models, latents, factors, options


def train_argv(tmp, good, *extra, image=None, labels=None, output=None):
    return ["factors", "train", str(image or good["image"]), "--labels", str(labels or good["labels_image"]),
            "-o", str(output or tmp / "m.pt"), "--patch-size", "54", "--epochs", "1", *extra]


for kind in bf.BAD_IMAGES:
    simple(f"factors-train-image-{kind}", bf.BAD_IMAGES[kind][1],
           lambda tmp, good, kind=kind: train_argv(tmp, good, image=bf.bad_image(tmp, kind)))
    simple(f"factors-extract-image-{kind}", bf.BAD_IMAGES[kind][1],
           lambda tmp, good, kind=kind: ["factors", "extract", str(good["patch_model"]), str(bf.bad_image(tmp, kind)),
                                         "-o", str(tmp / "l.npy")])
for kind in bf.BAD_LABELS:
    simple(f"factors-train-labels-{kind}", bf.BAD_LABELS[kind][1],
           lambda tmp, good, kind=kind: train_argv(tmp, good, labels=bf.bad_labels(tmp, kind)))
for option, value, expect in [("--patch-size", "10", "must be ≥ 54"), ("--epochs", "0", "must be ≥ 1"),
                              ("--pixel-size", "nan", "finite"), ("--pixel-size", "0", "must be > 0"), ("--batch-size", "-4", "must be ≥ 1")]:
    simple(f"factors-train-option{option}={value}", expect, lambda tmp, good, o=option, v=value: train_argv(tmp, good, o, v))
simple("factors-train-output-is-a-folder", "existing folder", lambda tmp, good: train_argv(tmp, good, output=bf.folder(tmp, "m.pt")))
simple("factors-extract-model-garbage", "",
       lambda tmp, good: ["factors", "extract", str(bf.garbage(tmp, "m.pt")), str(good["image"]), "-o", str(tmp / "l.npy")])
for option, value, expect in [("--stride", "0", "must be ≥ 1"), ("--memory-mb", "1", "must be ≥ 16"), ("--memory-mb", "nan", "finite")]:
    simple(f"factors-extract-option{option}={value}", expect,
           lambda tmp, good, o=option, v=value: ["factors", "extract", str(good["patch_model"]), str(good["image"]), o, v,
                                                 "-o", str(tmp / "l.npy")])
simple("factors-extract-output-suffix", "must end in .npy",
       lambda tmp, good: ["factors", "extract", str(good["patch_model"]), str(good["image"]), "-o", str(tmp / "l.npz")])
simple("factors-nmf-latents-garbage", "",
       lambda tmp, good: ["factors", "nmf", str(bf.garbage(tmp, "l.npy")), "-o", str(tmp / "f.npz")])
simple("factors-nmf-latents-without-grid", "", lambda tmp, good: ["factors", "nmf", str(bf.npy(tmp, "l.npy", np.ones((4, 4, 64), np.float32))),
                                                                  "-o", str(tmp / "f.npz")])
for option, value, expect in [("-k", "0", "must be ≥ 1"), ("--tol", "nan", "finite"), ("--tol", "-1", "must be ≥ 0"),
                              ("--max-iter", "0", "must be ≥ 1")]:
    simple(f"factors-nmf-option{option}={value}", expect,
           lambda tmp, good, o=option, v=value: ["factors", "nmf", str(good["latents"]), o, v, "-o", str(tmp / "f.npz")])
simple("factors-nmf-output-suffix", "must end in .npz", lambda tmp, good: ["factors", "nmf", str(good["latents"]), "-o", str(tmp / "f.npy")])
simple("factors-select-factors-garbage", "",
       lambda tmp, good: ["factors", "select", str(bf.garbage(tmp, "f.npz")), "--labels", str(good["labels_image"])])
simple("factors-select-lam-nan", "finite",
       lambda tmp, good: ["factors", "select", str(good["factors"]), "--labels", str(good["labels_image"]), "--lam", "nan"])
simple("factors-select-p-0", "must be ≥ 1",
       lambda tmp, good: ["factors", "select", str(good["factors"]), "--labels", str(good["labels_image"]), "-p", "0"])
simple("factors-select-labels-shape", "but the image is",
       lambda tmp, good: ["factors", "select", str(good["factors"]), "--labels", str(bf.bad_labels(tmp, "shape"))])
for value, expect in [("0", "at least 1"), ("2-100", "at most"), ("x", "number of clusters"), ("8-2", "upwards")]:
    simple(f"factors-cluster-n={value}", expect,
           lambda tmp, good, v=value: ["factors", "cluster", str(good["factors"]), "--mask", str(good["labels_image"]), "-n", v])
simple("factors-cluster-roi-0", "must be ≥ 1",
       lambda tmp, good: ["factors", "cluster", str(good["factors"]), "--mask", str(good["labels_image"]), "--roi", "0"])
simple("factors-cluster-roi-absent", "regions on the grid",
       lambda tmp, good: ["factors", "cluster", str(good["factors"]), "--mask", str(good["labels_image"]), "--roi", "9"])
simple("factors-cluster-erode-negative", "must be ≥ 0",
       lambda tmp, good: ["factors", "cluster", str(good["factors"]), "--mask", str(good["labels_image"]), "--erode", "-1"])
simple("factors-cluster-output-suffix", "must end in",
       lambda tmp, good: ["factors", "cluster", str(good["factors"]), "--mask", str(good["labels_image"]), "-o", str(tmp / "c.jpg")])

# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def good(tmp_path_factory) -> dict[str, Path]:
    """Valid files the bad cases need beside their bad one (a probe, a model, ...)."""
    return bf.good_files(tmp_path_factory.mktemp("good"))


class Hang(Exception):
    pass


def run_case(argv) -> int:
    def alarm(signum, frame):
        raise Hang(f"no answer within {CASE_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(CASE_SECONDS)
    try:
        return cli.main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check_one_line(code: int, err: str, expect: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, f"exit {code}: {err}"
    assert "Traceback" not in err and "Warning:" not in err, err
    assert lines and lines[-1].startswith("error: "), err
    assert sum(line.startswith("error:") for line in lines) == 1, err
    assert "(run with --debug" not in lines[-1], err  # that is how an unexpected exception reads
    assert expect in lines[-1], f"{expect!r} not in {lines[-1]!r}"
    return lines[-1]


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_exits_2_with_one_line(name, good, tmp_path, capsys):
    build, expect = CASES[name]
    argv = build(tmp_path, good)
    capsys.readouterr()
    code = run_case(argv)
    out = capsys.readouterr()
    check_one_line(code, out.err, expect)


def test_corpus_is_large_and_spans_the_four_workspaces():
    prefixes = {name.split("-")[0] for name in CASES}
    assert prefixes == {"mesh", "ephys", "calcium", "factors"}
    assert len(CASES) >= 100, len(CASES)


@pytest.mark.parametrize("name", ["mesh-hks-collinear", "ephys-sort-option--threshold=-1", "ephys-qc-truncated-spike-clusters",
                                  "factors-train-image-all-nan"])
def test_installed_command_reports_bad_input(name, good, tmp_path):
    """The same through a real process: exit status 2 and the one line, as a shell script sees them."""
    build, expect = CASES[name]
    proc = subprocess.run([sys.executable, "-m", "engine.cli", *build(tmp_path, good)], capture_output=True, text=True, timeout=120)
    check_one_line(proc.returncode, proc.stderr, expect)


def test_sort_checks_its_output_before_sorting(good, tmp_path, capsys, monkeypatch):
    """`sort -o FILE` used to sort for minutes and then fail on the existing file: now nothing runs."""
    import engine.ephys.sorter

    monkeypatch.setattr(engine.ephys.sorter, "sort_recording", lambda *a, **k: pytest.fail("sorted before checking -o"))
    assert cli.main(sort_argv(tmp_path, good, output=bf.text(tmp_path, "phy", "x"))) == 2
    assert "existing file" in capsys.readouterr().err


def test_usage_errors_are_one_line(capsys):
    assert cli.main(["sort"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "neurowb sort --help" in err
    assert cli.main(["no-such-command"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert cli.main(["--version"]) == 0


def test_number_type_messages():
    import argparse

    parse = cli.number(float, 0, 10, above=True)
    assert parse("2.5") == 2.5 and parse("10") == 10
    for text, message in [("0", "> 0"), ("11", "≤ 10"), ("nan", "finite"), ("-inf", "finite"), ("x", "a number")]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            parse(text)
    assert json.dumps(cli.positive_int("3")) == "3"
