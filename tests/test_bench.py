"""``pynn bench``: a quick run through the command line writes the JSON report and the roofline PNG,
the machine's peaks are sane, flop and byte counts match hand counts, ratios and roofline
percentages follow from the medians, and bad ``--shape``/``--op`` values fail with clear messages."""
import contextlib
import io
import json
import math

import pytest

from pynn import bench
from pynn.cli import main

RECORD_KEYS = {
    "op", "shape", "backend", "median_s", "min_s", "calls", "flops", "bytes", "intensity", "gflops", "gbytes_per_s",
    "bound", "roofline_gflops", "pct_roofline", "baseline", "vs_numpy", "vs_torch",
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick run: relu (which has a plain NumPy expression) and max_pool2d (whose baseline is
    the numpy backend) at small shapes, on the numba backend only."""
    out = tmp_path_factory.mktemp("bench")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["bench", "--quick", "--backend", "numba", "--op", "relu", "--op", "max_pool2d",
                       "--shape", "relu:64x256", "--shape", "max_pool2d:2x3x8x8", "--shape", "matmul:32x32x32",
                       "--json", str(out / "report.json"), "--png", str(out / "chart" / "roofline.png")])
    return status, stdout.getvalue(), out


def _report(quick_run):
    return json.loads((quick_run[2] / "report.json").read_text())


def test_quick_run_writes_report_and_chart(quick_run):
    status, stdout, out = quick_run
    assert status == 0
    report = _report(quick_run)
    assert set(report) == {"machine", "versions", "quick", "records"}
    assert report["quick"] is True
    assert set(report["versions"]) == {"python", "numpy", "numba", "torch"}
    has_torch = report["versions"]["torch"] is not None
    by_case = {}
    for r in report["records"]:
        assert set(r) == RECORD_KEYS
        by_case.setdefault((r["op"], r["shape"]), []).append(r["backend"])
    # --op keeps relu and max_pool2d of the three shapes; numpy joins as max_pool2d's baseline.
    torch = ["torch"] if has_torch else []
    assert by_case == {("relu", "64x256"): ["plain-numpy", "numba", *torch],
                       ("max_pool2d", "2x3x8x8"): ["numpy", "numba", *torch]}
    lines = stdout.splitlines()
    assert lines[0].startswith("machine: ") and "GFLOP/s" in lines[0] and "GB/s" in lines[0]
    assert sum(line.startswith(("relu ", "max_pool2d ")) for line in lines) == len(report["records"])
    from matplotlib.image import imread
    image = imread(out / "chart" / "roofline.png")
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200


def test_peaks_are_positive_and_finite(quick_run):
    machine = _report(quick_run)["machine"]
    for key in ("fma_peak_gflops", "triad_gbytes_per_s"):
        assert math.isfinite(machine[key]) and machine[key] > 0
    # Far below any CPU's ceilings, far above what a broken loop would time.
    assert 1 < machine["fma_peak_gflops"] < 1e5 and 0.5 < machine["triad_gbytes_per_s"] < 1e4
    assert machine["threads"] >= 1


def test_ratios_and_roofline_follow_from_the_medians(quick_run):
    report = _report(quick_run)
    peak, bandwidth = report["machine"]["fma_peak_gflops"], report["machine"]["triad_gbytes_per_s"]
    for r in report["records"]:
        case = [s for s in report["records"] if (s["op"], s["shape"]) == (r["op"], r["shape"])]
        (baseline,) = [s for s in case if s["baseline"]]
        assert r["vs_numpy"] == pytest.approx(baseline["median_s"] / r["median_s"])
        torch = [s for s in case if s["backend"] == "torch"]
        if torch:
            assert r["vs_torch"] == pytest.approx(torch[0]["median_s"] / r["median_s"])
        assert 0 < r["min_s"] <= r["median_s"] and r["calls"] >= bench.QUICK_MIN_REPS
        assert r["gflops"] == pytest.approx(r["flops"] / r["median_s"] / 1e9)
        assert r["gbytes_per_s"] == pytest.approx(r["bytes"] / r["median_s"] / 1e9)
        assert r["intensity"] == pytest.approx(r["flops"] / r["bytes"])
        assert r["roofline_gflops"] == pytest.approx(min(peak, r["intensity"] * bandwidth))
        assert r["pct_roofline"] == pytest.approx(100 * r["gflops"] / r["roofline_gflops"])
        assert r["bound"] == "memory"  # relu and pooling do well under one flop per byte
    assert {r["backend"] for r in report["records"] if r["baseline"]} == {"plain-numpy", "numpy"}


@pytest.mark.parametrize("op, dims, flops, nbytes", [
    ("matmul", (2, 3, 4), 2 * 2 * 3 * 4, 4 * (2 * 3 + 3 * 4 + 2 * 4)),
    ("linear_backward", (2, 3, 4), 2 * 2 * (2 * 3 * 4), 4 * (2 * 4 + 2 * 2 * 3 + 2 * 4 * 3 + 4)),
    # 3x3 kernel, padding 1 keeps 8x8: 2 N Cout Ho Wo Cin k k; x, weight, bias, y.
    ("conv2d", (2, 3, 8, 8, 4, 3), 2 * 2 * 4 * 8 * 8 * 3 * 9, 4 * (2 * 3 * 64 + 4 * 3 * 9 + 4 + 2 * 4 * 64)),
    # 8 outputs of 3 comparisons; x read, y (float32) and indices (int64) written.
    ("max_pool2d", (1, 2, 4, 4), 8 * 3, 4 * 32 + 12 * 8),
    ("adam_step", (10,), 13 * 10, 7 * 4 * 10),
    # layers 5-3-2 on 2 rows: the GEMMs; x, weights and biases, y.
    ("mlp", (2, 5, 3, 2), 2 * 2 * (5 * 3 + 3 * 2), 4 * (2 * 5 + 5 * 3 + 3 + 3 * 2 + 2 + 2 * 2)),
])
def test_counts_match_hand_counts(op, dims, flops, nbytes):
    case = bench.build_case(op, dims)
    assert (case.flops, case.nbytes) == (flops, nbytes)
    assert case.shape == "x".join(map(str, dims))


def test_default_cases_are_the_models_shapes():
    assert bench.MLP_PARAMETERS == 235_146
    assert (64, 784, 256) in bench.OPS["linear"].defaults
    assert (64, 32, 14, 14, 64, 3) in bench.OPS["conv2d_backward"].defaults
    assert bench.parse_shape("conv2d:64x32x14x14x64x3") == ("conv2d", (64, 32, 14, 14, 64, 3))
    assert bench.parse_shape("relu:5") == ("relu", (5,))


@pytest.mark.parametrize("shape, message", [
    ("matmul:64x64", "expected matmul:MxKxN"),
    ("matmul:64x0x64", "positive integer sizes"),
    ("linear:64x-3x10", "expected linear:NxINxOUT"),
    ("conv2d", "expected conv2d:NxCxHxWxCOUTxK"),
    ("max_pool2d:1x1x1x8", "H and W >= 2"),
    ("batch_norm:1x4", "more than one value per channel"),
    ("gemm:8x8x8", "unknown op 'gemm'"),
])
def test_bad_shape_fails_with_a_clear_message(capsys, shape, message):
    assert main(["bench", "--shape", shape]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pynn: error: shape ") and message in err and shape in err


def test_unknown_op_or_nothing_to_run(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--op", "gemm"])
    assert exc.value.code == 2
    assert "invalid choice: 'gemm'" in capsys.readouterr().err
    assert main(["bench", "--op", "relu", "--shape", "matmul:8x8x8"]) == 1
    assert "nothing to run" in capsys.readouterr().err


def test_run_refuses_an_unknown_backend_before_timing():
    with pytest.raises(ValueError, match="backend 'tpu' is not usable"):
        bench.run(backends=["tpu"])
    with pytest.raises(ValueError, match="unknown op gemm"):
        bench.run(ops=["gemm"])
