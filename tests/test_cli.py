"""The ``softhist`` command: argument parsing, one-line errors, the demo and the bench end to end."""

import csv
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from softhist import bench, cli, demo

ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def softhist_command(*args, timeout=300):
    """``python -m softhist ARGS`` in a fresh interpreter, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "softhist", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def assert_png(path, min_width, min_height):
    data = pathlib.Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()  # a truncated or corrupt file raises
    with Image.open(path) as image:
        assert image.width >= min_width and image.height >= min_height, image.size


def write_image(path, pixels):
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)
    return str(path)


# --------------------------------------------------------------------------- parsing


def test_help_lists_the_subcommands():
    out = softhist_command("--help")
    assert out.returncode == 0, out.stderr
    assert "demo" in out.stdout and "bench" in out.stdout
    assert "usage: softhist" in out.stdout


def test_console_script_is_installed():
    script = pathlib.Path(sys.executable).with_name("softhist")
    if not script.exists():
        pytest.skip("softhist is not installed with its console script in this environment (pip install -e .)")
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("softhist ")


def test_demo_arguments_parse():
    args = cli.build_parser().parse_args(["demo", "--steps", "7", "--out", "somewhere"])
    assert (args.command, args.steps, args.out, args.image, args.target) == ("demo", 7, "somewhere", None, None)
    defaults = cli.build_parser().parse_args(["demo"])
    assert defaults.steps == 300 and defaults.out == "demo-output"


def test_bench_arguments_parse():
    args = cli.build_parser().parse_args(["bench", "--quick", "--device", "cpu", "--csv", "t.csv", "--plot", "t.png"])
    assert (args.quick, args.device, args.csv, args.plot, args.sweep, args.no_dense) == (True, "cpu", "t.csv", "t.png", False, False)
    assert cli.build_parser().parse_args(["bench", "--device", "cuda:1"]).device == "cuda:1"
    assert args.threads is None and cli.build_parser().parse_args(["bench", "--threads", "1"]).threads == 1
    # The memory probes (fresh interpreters) run on the same thread count as the timings.
    assert bench._probe_argv(bench.Options(quick=True, threads=3))[-2:] == ["--threads", "3"]


def bad_arguments(tmp_path):
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not an image")
    a_file = tmp_path / "file.txt"
    a_file.write_text("")
    cases = {
        "steps-zero": (["demo", "--steps", "0"], "--steps: must be a positive integer, got 0"),
        "steps-negative": (["demo", "--steps", "-3"], "must be a positive integer, got -3"),
        "steps-word": (["demo", "--steps", "many"], "must be a positive integer, got 'many'"),
        "image-missing": (["demo", "--image", str(tmp_path / "missing.jpg")], "--image: no such file"),
        "target-missing": (["demo", "--target", str(tmp_path / "missing.png")], "--target: no such file"),
        "image-directory": (["demo", "--image", str(tmp_path)], "--image: not a file"),
        "image-unreadable": (["demo", "--image", str(not_an_image), "--out", str(tmp_path / "o")], "cannot read"),
        "out-is-a-file": (["demo", "--out", str(a_file)], "exists and is not a directory"),
        "out-under-a-file": (["demo", "--out", str(a_file / "sub")], f"cannot create it, {a_file} is not a directory"),
        "steps-huge": (["demo", "--steps", "100000000000000000000000"], "--steps: must be at most 1,000,000, got 100000000000000000000000"),
        "threads-huge": (["bench", "--threads", "100000000000000000000000"], "--threads: must be at most 1024"),
        "csv-is-a-directory": (["bench", "--csv", str(tmp_path)], f"--csv {tmp_path}: is a directory"),
        "plot-is-a-directory": (["bench", "--plot", str(tmp_path)], f"--plot {tmp_path}: is a directory"),
        "device-unknown": (["bench", "--device", "tpu"], "unknown device 'tpu'"),
        "threads-zero": (["bench", "--threads", "0"], "--threads: must be a positive integer, got '0'"),
        "csv-no-directory": (["bench", "--csv", str(tmp_path / "no" / "such" / "t.csv")], "does not exist"),
        "no-command": ([], "required"),
        "unknown-command": (["frobnicate"], "invalid choice"),
    }
    if not torch.cuda.is_available():
        cases["device-cuda-absent"] = (["bench", "--device", "cuda"], "CUDA is not available")
    return cases


@pytest.mark.parametrize("name", [
    "steps-zero", "steps-negative", "steps-word", "image-missing", "target-missing", "image-directory",
    "image-unreadable", "out-is-a-file", "out-under-a-file", "steps-huge", "threads-huge", "csv-is-a-directory",
    "plot-is-a-directory", "device-unknown", "threads-zero", "csv-no-directory", "no-command", "unknown-command",
    "device-cuda-absent",
])
def test_bad_arguments_give_one_line_and_exit_2(name, tmp_path, capsys):
    cases = bad_arguments(tmp_path)
    if name not in cases:
        pytest.skip("CUDA is available here")
    argv, message = cases[name]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("softhist"), err
    assert message in err


def test_bad_arguments_from_the_shell_never_print_a_traceback(tmp_path):
    # One case per subcommand through a real shell; test_bad_arguments_give_one_line_and_exit_2 checks every case in-process.
    for argv in (["demo", "--steps", "100000000000000000000000"], ["bench", "--threads", "100000000000000000000000"]):
        out = softhist_command(*argv)
        assert out.returncode == 2
        assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
        assert out.stdout == ""


def test_bad_image_leaves_no_output_folder(tmp_path, capsys):
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not an image")
    for flag in ("--image", "--target"):
        out_dir = tmp_path / f"out{flag}" / "nested"
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["demo", flag, str(not_an_image), "--steps", "1", "--out", str(out_dir)])
        assert exit_info.value.code == 2 and "cannot read" in capsys.readouterr().err
        assert not out_dir.parent.exists()


def test_help_does_not_import_the_demo_libraries():
    # torch may import tqdm itself when it is installed; softhist must add neither library.
    code = (
        "import sys, torch; before = set(sys.modules); from softhist import cli; cli.build_parser(); "
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in ('matplotlib', 'tqdm', 'PIL')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- the demo


def test_demo_writes_its_figure(tmp_path):
    out_dir = tmp_path / "out"  # created by the demo
    out = softhist_command("demo", "--steps", "5", "--out", str(out_dir))
    assert out.returncode == 0, out.stderr
    assert_png(out_dir / "demo.png", 600, 400)
    assert "grace_hopper.jpg" in out.stdout
    losses = [line for line in out.stdout.splitlines() if line.startswith("loss")]
    assert len(losses) == 1 and "before" in losses[0] and "after" in losses[0]
    assert "CDF inversion" in out.stdout
    assert "matching" in out.stderr  # the progress bar


def test_demo_matches_a_target_photo_like_cdf_inversion(tmp_path):
    rng = np.random.default_rng(0)
    # A dark, low-contrast photo and a bright target: the curve must lift and stretch the tones.
    dark = np.clip(rng.normal(60, 15, size=(48, 64)), 0, 255)
    bright = np.clip(rng.normal(180, 30, size=(40, 50)), 0, 255)
    image, target = write_image(tmp_path / "dark.png", dark), write_image(tmp_path / "bright.png", bright)
    lines = []
    result = demo.run(150, image, target, progress=False, log=lines.append)
    assert result.loss_after < result.loss_before / 10
    assert result.mean_gap < 3.0  # within 3 of 255 gray levels of exact matching, on average
    assert abs(result.matched.mean() - bright.mean() / 255) < 0.02
    assert result.image_name == "dark.png" and result.target_name == "bright.png"
    assert np.all(np.diff(result.knots) > 0)
    assert any("cross-check" in line for line in lines)
    width, height = demo.plot(result, str(tmp_path / "fig.png"))
    assert_png(tmp_path / "fig.png", width, height)


def test_demo_says_when_the_loss_rose_on_an_already_flat_photo(tmp_path):
    flat = write_image(tmp_path / "flat.png", np.tile(np.arange(256), (32, 1)))  # every gray level equally often
    lines = []
    result = demo.run(3, flat, None, progress=False, log=lines.append)
    (summary,) = [line for line in lines if line.startswith("loss")]
    assert result.loss_after > result.loss_before  # three steps of Adam leave the optimum
    assert summary.endswith(f"({demo.describe_change(result.loss_before, result.loss_after)})"), summary
    assert "higher)" in summary and "lower" not in summary, summary


@pytest.mark.parametrize("before,after,said", [
    (0.19846, 0.00238, "83× lower"), (0.00098, 0.09070, "93× higher"), (0.0010, 0.0013, "1.3× higher"),
    (0.0013, 0.0010, "1.3× lower"), (0.02, 0.020001, "unchanged"), (0.5, 0.5, "unchanged"),
    (0.0, 0.004, "higher (from 0)"), (0.004, 0.0, "down to 0"), (0.5, 0.48, "4% lower"), (0.5, 0.501, "0.2% higher"),
])
def test_demo_describes_a_loss_change_honestly(before, after, said):
    assert demo.describe_change(before, after) == said


def test_readme_demo_output_is_what_the_demo_prints():
    """The README's example output: the same lines, and the same figures to 1% (timings aside)."""
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("It prints the loss before and after", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    shown = [line for line in block.splitlines() if line.split(" ")[0] in ("photo:", "fitting", "loss", "cross-check")]
    printed = []
    demo.run(progress=False, log=printed.append)
    assert len(shown) == len(printed) == 4
    number = re.compile(r"\d[\d,]*(?:\.\d+)?")
    for readme_line, line in zip(shown, printed):
        assert number.sub("#", readme_line) == number.sub("#", line), (readme_line, line)
        for a, b in zip(number.findall(readme_line), number.findall(line)):
            assert float(a.replace(",", "")) == pytest.approx(float(b.replace(",", "")), rel=0.01, abs=2e-5), (readme_line, line)


def test_tone_curve_is_monotone_by_construction():
    curve = demo.ToneCurve(16)
    x = torch.linspace(0, 1, 1001)
    with torch.no_grad():
        # It starts as the identity, its end knots pulled in by a quarter piece.
        assert torch.allclose(curve.knots(), torch.linspace(0, 1, 17).clamp(1 / 64, 1 - 1 / 64), atol=1e-6)
        assert torch.allclose(curve(x), x, atol=1 / 64 + 1e-6)
        for seed, scale in zip(range(6), (0.5, 1.0, 1.0, 3.0, 3.0, 10.0)):
            torch.manual_seed(seed)
            curve.raw.copy_(scale * torch.randn_like(curve.raw))
            curve.offset.copy_(scale * torch.randn_like(curve.offset))
            y = curve(x)
            assert torch.all(torch.diff(y) >= 0) and y.min() >= 0 and y.max() <= 1
            if scale <= 1:  # far from float32 saturation of the sigmoid, strictly increasing
                assert torch.all(torch.diff(curve.knots()) > 0) and y.min() > 0 and y.max() < 1
    y = curve(torch.rand(100))
    y.sum().backward()
    assert curve.raw.grad is not None and torch.isfinite(curve.raw.grad).all()


def test_exact_matching_curve_inverts_cdfs():
    source = np.array([0.1, 0.2, 0.2, 0.4])
    # Flat target: the mid-rank CDF; the tied pixels share the middle of their step.
    assert np.allclose(demo.exact_matching_curve(source, source, None), [0.125, 0.5, 0.5, 0.875])
    # Matching a photo to itself changes nothing.
    values = np.random.default_rng(1).random(1001)
    assert np.allclose(demo.exact_matching_curve(values, values, values), values)
    # A flat target given as evenly spread samples gives the same curve as the flat default.
    even = (np.arange(4000) + 0.5) / 4000
    assert np.allclose(demo.exact_matching_curve(values, values, even), demo.exact_matching_curve(values, values, None))


def test_load_gray_converts_color_and_alpha(tmp_path):
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 128  # pure red, half transparent
    Image.fromarray(rgba).save(tmp_path / "red.png")
    gray = demo.load_gray(str(tmp_path / "red.png"))
    assert gray.shape == (4, 5) and np.allclose(gray, 0.299)


# --------------------------------------------------------------------------- the bench


def test_bench_prints_a_table_against_histc(tmp_path, capsys):
    # In this process, on one small case of each kind (the hidden --tiny); the memory probes are
    # still fresh interpreters, as in a real run.
    table, plot = tmp_path / "bench.csv", tmp_path / "bench.png"
    assert bench.main(["--tiny", "--csv", str(table), "--plot", str(plot)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "| case | provider | fwd (× baseline fwd) | fwd+bwd (× baseline fwd) | peak MiB |" in lines
    main_table = lines[: lines.index("### Small inputs and many rows")]
    rows = [line for line in main_table if line.startswith("| ") and "---" not in line][1:]
    small = lines[lines.index("### Small inputs and many rows"):]
    assert any(line.startswith("| 1,000 samples, 256 bins | softhist soft forward+backward |") for line in small)
    assert any("as rows (dim=1)" in line for line in small) and any("`import softhist`" in line for line in small)
    assert any("torch.histc (hard)" in row and "(1.0×)" in row for row in rows)
    assert any("torch.histogramdd (hard)" in row for row in rows)
    soft = [row for row in rows if "softhist soft" in row]
    assert soft and all(row.count(" ms (") == 2 for row in soft)  # forward and forward+backward
    probed = [row for row in rows if row.rstrip(" |").split("|")[-1].strip().isdigit()]  # peak MiB from the probes
    assert len(probed) == 1 and probed[0].startswith(rows[0].split("|")[0] + "|" + rows[0].split("|")[1])  # --tiny: one probe
    assert "softhist" in probed[0]
    with open(table, newline="") as handle:
        records = list(csv.DictReader(handle))
    assert len(records) == len(rows)
    histc = [r for r in records if r["provider"] == "torch.histc (hard)"]
    assert histc and all(math.isclose(float(r["fwd_ratio"]), 1.0) for r in histc)
    assert_png(plot, 600, 300)


def test_bench_scaling_times_one_thread_against_more(capsys):
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--tiny", "--scaling", "--threads", "2"]) == 0
    finally:
        torch.set_num_threads(threads)
    lines = capsys.readouterr().out.splitlines()
    assert "| call | 1 thread | 2 threads | speed-up |" in lines
    rows = [line for line in lines if line.startswith("| softhist") or line.startswith("| torch.histc")]
    assert [row.split(" | ")[0] for row in rows] == ["| torch.histc", "| softhist hard", "| softhist soft forward", "| softhist soft forward+backward"]
    assert all(row.endswith("× |") and row.count(" ms |") == 2 for row in rows)
    assert any(line.startswith("Minimum of interleaved repeats at 1 and 2 threads; load average") for line in lines)


def test_bench_script_keeps_its_flags():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_histogram.py"), "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for flag in ("--quick", "--device", "--no-dense", "--csv", "--plot"):
        assert flag in out.stdout


def test_bench_plot_and_csv_from_rows(tmp_path):
    rows = [
        bench.Row(f"flat N={n:,}", provider, n, 256, 1.0, ms, None if provider.endswith("(hard)") else 2 * ms, mib)
        for n in (1 << 10, 1 << 14, 1 << 18)
        for provider, ms, mib in (("torch.histc (hard)", n / 1e5, 1.0), ("softhist soft (gaussian)", n / 2e4, 3.0))
    ]
    bench.plot(rows, str(tmp_path / "p.png"), "test device")
    assert_png(tmp_path / "p.png", 1000, 300)
    bench.write_csv(rows, str(tmp_path / "r.csv"), "test device")
    with open(tmp_path / "r.csv", newline="") as handle:
        records = list(csv.DictReader(handle))
    assert [r["provider"] for r in records] == [r.provider for r in rows]
    assert records[1]["fwd_bwd_ms"] != "" and records[0]["fwd_bwd_ms"] == ""


@pytest.mark.parametrize("library", ["kornia", "monai"])
def test_bench_dense_baselines_run_where_installed(library):
    pytest.importorskip(library)
    x = torch.rand(3000, generator=torch.Generator().manual_seed(0))
    case = bench.Case("flat N=3,000", lambda: x, 32, 3000, dense_baseline=True, sweep=True)
    specs = {p.name: p for p in bench.providers(case, x, bench.Options(quick=True))}
    name = "kornia histogram (dense)" if library == "kornia" else "MONAI Parzen window (dense)"
    fwd, fwd_bwd = specs[name].build()
    hist = fwd().reshape(-1)
    assert hist.shape == (32,) and math.isclose(float(hist.sum()), 1.0, rel_tol=1e-4)  # both return probabilities
    soft = torch.histc(x, 32, 0, 1) / 3000
    assert (hist - soft).abs().sum() < 0.2  # the same histogram, smoothed
    fwd_bwd()


def test_bench_gpu_cases_cover_the_gpu_protocol():
    names = [case.name for case in bench._gpu_cases(bench.Options(device="cuda"), lambda *s: (lambda: None), lambda n, d: bench.Case(f"flat N={n:,}", lambda: None, 256, n))]
    assert names == [
        "flat N=1,048,576", "flat N=16,777,216", "flat N=134,217,728", "batched 64×65536", "N=16M, bins=4096",
        "MI loss 2×96³ voxels, 23 bins", "MI loss 2×96³ voxels, 64 bins",
    ]


def test_bench_mutual_information_case_runs_its_providers():
    # The GPU table's MI case, on a small CPU volume: every provider returns a finite loss and a gradient.
    x = torch.rand(2, 2, 1, 8, 8, 8)
    case = bench.Case("MI loss", lambda: x, 23, 2 * 8**3, mi=True)
    specs = bench.providers(case, x, bench.Options(quick=True))
    assert specs[0].name.startswith("torch.histc") and specs[1].name == "softhist MutualInformationLoss"
    fwd, fwd_bwd = specs[1].build()
    assert torch.isfinite(fwd()) and fwd_bwd is not None
    fwd_bwd()
    if bench.installed("MONAI"):
        monai_fwd, _ = specs[2].build()
        assert torch.isfinite(monai_fwd())
