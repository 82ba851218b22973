"""The device check: everything worth knowing from a GPU, in one run of under 8 minutes.

Whoever first has a CUDA GPU at hand runs this before anything else (a fresh H100/H200 machine
with CuPy but without dask/zarr is enough: the few tests of block-wise runs, which keep their
blocks in zarr, then skip; ``benchmarks/device_check.sh`` installs wheels carried in ``.whl/``
first, e.g. those ``../shared/tools/gpu-wheels`` fetches):

    python benchmarks/device_check.py            # → benchmarks/results/device_check_gpu.json

Sections (each one is timed, recorded and written to the JSON as soon as it ends, so a run cut
short still leaves what it found; a failing section does not stop the others):

``env``
    the card, its compute capability, memory and FP32:FP64 ratio, the precision the column fits
    choose, CuPy/CUDA/driver versions.
``tests``
    ``pytest -m gpu``: the same test bodies CI runs against the CuPy stand-in, with real CuPy.
``sanitizer``
    ``compute-sanitizer`` memcheck, racecheck, synccheck and initcheck over
    ``benchmarks/kernel_smoke.py`` (every kernel once, small inputs, through the library).
``bench``
    the headline cases: column fits per second at 11 × 11 pixels in both precisions (kernel alone
    and end to end), windowed SVD of a 2048² image with 32-px windows (GPU vs this machine's
    CPU), and SVD of a large in-memory matrix against the time of copying it to the device.

``--standin`` runs the whole script on the CuPy stand-in and the CPU kernel harness of the test
suite (no GPU: timings mean nothing) — the suite does so to keep this script working.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

SECTIONS = ("env", "tests", "sanitizer", "bench")
SANITIZER_TOOLS = ("memcheck", "racecheck", "synccheck", "initcheck")


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------- env
def section_env(args: argparse.Namespace, remaining: float) -> dict[str, Any]:
    import cupy

    from usidgpu.atoms.fit_kernel import choose_precision, fp64_ratio
    from usidgpu.core.device import gpu_status

    usable, why = gpu_status()
    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    free, total = dev.mem_info
    out = {
        "usable": usable,
        "device": why,
        "name": name,
        "compute_capability": f"{props.get('major')}.{props.get('minor')}",
        "multiprocessors": props.get("multiProcessorCount"),
        "memory_total_bytes": int(total),
        "memory_free_bytes": int(free),
        "fp32_to_fp64_ratio": fp64_ratio(),
        "fit_precision_auto": choose_precision("auto"),
        "cupy": cupy.__version__,
        "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
        "cuda_driver": cupy.cuda.runtime.driverGetVersion(),
        "devices_visible": cupy.cuda.runtime.getDeviceCount(),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "standin": args.standin,
    }
    smi = shutil.which("nvidia-smi")
    if smi:
        proc = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
        out["nvidia_smi"] = proc.stdout.strip().splitlines()
    log(
        f"env        {name} (cc {out['compute_capability']}), FP32:FP64 {out['fp32_to_fp64_ratio']}, "
        f"fits auto → {out['fit_precision_auto']}, CuPy {out['cupy']}"
    )
    return out


# ------------------------------------------------------------------------------------- tests
def child_env(args: argparse.Namespace) -> dict[str, str]:
    """Environment of the child processes: the source tree importable, the stand-in with --standin."""
    paths = [str(REPO)]
    if args.standin:
        paths = [str(REPO / "tests" / "cupy_standin" / "site"), str(REPO / "tests"), *paths]
    extra = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths + ([extra] if extra else []))}


def section_tests(args: argparse.Namespace, remaining: float) -> dict[str, Any]:
    xml = Path(args.workdir) / "device_check_junit.xml"
    cmd = [
        sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
        "--continue-on-collection-errors", f"--junitxml={xml}", *args.pytest_args,
    ]  # fmt: skip
    timeout = max(30.0, min(args.tests_timeout, remaining - 120))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=child_env(args), capture_output=True, text=True, timeout=timeout)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr).strip().splitlines()[-15:]
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        rc, tail = "timeout", out.strip().splitlines()[-15:]
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = {"command": " ".join(cmd), "returncode": rc, "seconds": round(seconds, 1), "tail": tail}
    if xml.exists():
        counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
        failures = []
        for case in ET.parse(xml).getroot().iter("testcase"):
            tid = f"{case.get('classname')}::{case.get('name')}"
            kinds = {child.tag for child in case}
            if "failure" in kinds or "error" in kinds:
                counts["failed" if "failure" in kinds else "errors"] += 1
                node = case.find("failure") if "failure" in kinds else case.find("error")
                msg = (node.get("message") or "").strip().splitlines()
                failures.append(f"{tid}: {msg[0][:300] if msg else ''}")
            elif "skipped" in kinds:
                counts["skipped"] += 1
            else:
                counts["passed"] += 1
        result.update(counts=counts, failures=failures[:60])
    log(f"tests      pytest -m gpu: {result.get('counts', rc)} in {seconds:.0f} s")
    for line in result.get("failures", [])[:10]:
        log(f"           FAILED {line}")
    return result


# --------------------------------------------------------------------------------- sanitizer
def find_sanitizer() -> str | None:
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "compute-sanitizer").exists():
            return str(Path(root) / "bin" / "compute-sanitizer")
    return None


def section_sanitizer(args: argparse.Namespace, remaining: float) -> dict[str, Any]:
    smoke = [sys.executable, str(HERE / "kernel_smoke.py")]
    tool_path = None if args.standin else find_sanitizer()
    runs: dict[str, Any] = {}
    if tool_path is None:
        # without compute-sanitizer (or on the stand-in) the smoke program still runs: its own
        # comparison with the CPU path is worth having
        tools: tuple[str, ...] = ("none",)
        runs["note"] = "compute-sanitizer not found" if not args.standin else "stand-in run: no sanitizer"
    else:
        tools = SANITIZER_TOOLS
    for tool in tools:
        cmd = smoke if tool == "none" else [tool_path, "--tool", tool, "--error-exitcode", "99", *smoke]
        per_tool = max(20.0, min(120.0, (remaining - 60) / max(len(tools), 1)))
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=child_env(args), capture_output=True, text=True, timeout=per_tool)
            text = proc.stdout + proc.stderr
            rc: Any = proc.returncode
        except subprocess.TimeoutExpired:
            text, rc = "", "timeout"
        summary = [ln for ln in text.splitlines() if "ERROR SUMMARY" in ln or ln.startswith("kernel_smoke")]
        runs[tool] = {
            "returncode": rc,
            "seconds": round(time.perf_counter() - t0, 1),
            "summary": summary[-3:],
            "tail": text.strip().splitlines()[-12:] if rc != 0 else [],
        }
        log(f"sanitizer  {tool}: exit {rc}, {' / '.join(summary[-2:])}")
    return runs


# ------------------------------------------------------------------------------------- bench
def timed(fn: Callable[[], Any], sync: Callable[[], None], repeats: int) -> tuple[float, list[float], Any]:
    """Median seconds of ``repeats`` runs after one untimed warm-up (compilation, caches)."""
    out = fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), [round(t, 4) for t in times], out


def bench_fits(args: argparse.Namespace, sync: Callable[[], None]) -> dict[str, Any]:
    import cupy

    from usidgpu.atoms import fit as F
    from usidgpu.atoms.fit_kernel import lm_kernel
    from usidgpu.atoms.synthetic import lattice_image

    size = args.fit_size
    lat = lattice_image((size, size), spacing=16, angle_deg=7, dose=200, read_noise=0.02, seed=0)
    start = lat.positions + np.random.default_rng(1).normal(0, 0.3, lat.positions.shape)
    keep = ((start > 6) & (start < size - 7)).all(axis=1)
    start = start[keep]
    radius = 5.0  # 11 × 11 windows
    image = cupy.asarray(lat.image)
    neighbours = F._neighbours(start, radius)
    out: dict[str, Any] = {"image": [size, size], "columns": len(start), "radius_px": radius, "window_px": 11}
    positions = {}
    for precision in ("float64", "float32"):
        start_dev = cupy.asarray(start)
        packed = F.prepare(cupy, image, start_dev, neighbours, radius)  # yy, xx, data, weight, p0

        def kernel_only(packed=packed, start_dev=start_dev, precision=precision):
            return lm_kernel(*packed, start_dev, radius, 100, 1e-10, precision)

        k_s, k_all, k_out = timed(kernel_only, sync, args.repeats)

        def end_to_end(precision=precision):
            return F.refine(image, start, radius=radius, device="gpu", engine="kernel", precision=precision)

        e_s, e_all, fit = timed(end_to_end, sync, args.repeats)
        positions[precision] = fit.positions
        out[precision] = {
            "kernel_s": round(k_s, 5),
            "kernel_runs_s": k_all,
            "fits_per_s_kernel": round(len(start) / k_s),
            "end_to_end_s": round(e_s, 4),
            "end_to_end_runs_s": e_all,
            "fits_per_s_end_to_end": round(len(start) / e_s),
            "converged": float(np.mean(fit.converged)),
            "mean_iterations": float(np.mean(fit.n_iter)),
            "kernel_converged": float(cupy.asnumpy(k_out[1]).mean()),
        }
        log(
            f"bench      fits {precision}: {out[precision]['fits_per_s_kernel']:.3g} fits/s (kernel), "
            f"{out[precision]['fits_per_s_end_to_end']:.3g} fits/s (refine), {len(start)} columns"
        )
    diff = np.abs(positions["float32"] - positions["float64"])
    truth = lat.positions[keep]
    out["float32_vs_float64_max_px"] = float(diff.max())
    out["rms_error_vs_truth_px"] = {p: float(np.sqrt(np.mean((positions[p] - truth) ** 2))) for p in positions}
    out["float32_speedup"] = round(out["float64"]["kernel_s"] / out["float32"]["kernel_s"], 3)
    return out


def bench_windowed_svd(args: argparse.Namespace, sync: Callable[[], None]) -> dict[str, Any]:
    import cupy

    import usidgpu
    from usidgpu.atoms.synthetic import lattice_image

    n = args.denoise_size
    image = lattice_image((n, n), spacing=12, motif="square", dose=60, seed=0).image.astype(np.float32)
    dev_image = cupy.asarray(image)
    g_s, g_all, gpu = timed(lambda: usidgpu.windowed_svd(dev_image, window=32, k=16, device="gpu"), sync, args.repeats)
    h_s, h_all, _ = timed(lambda: usidgpu.windowed_svd(image, window=32, k=16, device="gpu"), sync, args.repeats)
    t0 = time.perf_counter()
    cpu = usidgpu.windowed_svd(image, window=32, k=16, device="cpu")
    c_s = time.perf_counter() - t0
    out = {
        "image": [n, n],
        "window": 32,
        "k": 16,
        "gpu_on_device_s": round(g_s, 4),
        "gpu_on_device_runs_s": g_all,
        "gpu_from_host_s": round(h_s, 4),
        "gpu_from_host_runs_s": h_all,
        "cpu_s_one_run": round(c_s, 3),
        "cpu_over_gpu": round(c_s / g_s, 2),
        "cleaned_max_abs_diff_gpu_vs_cpu": float(np.abs(np.asarray(gpu.cleaned) - np.asarray(cpu.cleaned)).max()),
    }
    log(
        f"bench      windowed SVD {n}² w32: GPU {g_s:.3f} s (on device), {h_s:.3f} s (from host); "
        f"CPU {c_s:.2f} s ({out['cpu_over_gpu']}×)"
    )
    return out


def bench_svd_vs_copy(args: argparse.Namespace, sync: Callable[[], None]) -> dict[str, Any]:
    import cupy

    import usidgpu

    m, n = args.svd_rows, args.svd_cols
    rng = np.random.default_rng(0)
    x = (
        rng.standard_normal((m, 16)).astype(np.float32) @ rng.standard_normal((16, n)).astype(np.float32)
    ) + 0.05 * rng.standard_normal((m, n), dtype=np.float32)
    copy_s, copy_all, x_dev = timed(lambda: cupy.asarray(x), sync, args.repeats)
    on_s, on_all, r_dev = timed(lambda: usidgpu.svd(x_dev, 16, method="gram", device="gpu"), sync, args.repeats)
    host_s, host_all, _ = timed(lambda: usidgpu.svd(x, 16, method="gram", device="gpu"), sync, args.repeats)
    ref = np.linalg.svd(x[: min(m, 4096)].astype(np.float64), compute_uv=False)  # a sanity figure only
    out = {
        "matrix": [m, n],
        "bytes": int(x.nbytes),
        "copy_to_device_s": round(copy_s, 4),
        "copy_runs_s": copy_all,
        "copy_GB_per_s": round(x.nbytes / copy_s / 1e9, 2),
        "svd_on_device_s": round(on_s, 4),
        "svd_on_device_runs_s": on_all,
        "svd_from_host_s": round(host_s, 4),
        "svd_from_host_runs_s": host_all,
        "svd_over_copy": round(on_s / copy_s, 3),
        "top_singular_value": float(r_dev.S[0]),
        "sanity_top_singular_value_of_first_rows": float(ref[0]),
    }
    log(
        f"bench      SVD {m}×{n} f32: copy {copy_s:.3f} s ({out['copy_GB_per_s']} GB/s), "
        f"svd on device {on_s:.3f} s ({out['svd_over_copy']}× the copy), from host {host_s:.3f} s"
    )
    return out


def section_bench(args: argparse.Namespace, remaining: float) -> dict[str, Any]:
    import cupy

    sync = cupy.cuda.Device().synchronize
    out: dict[str, Any] = {}
    for name, fn in (
        ("column_fits", bench_fits),
        ("windowed_svd", bench_windowed_svd),
        ("svd_vs_copy", bench_svd_vs_copy),
    ):
        t0 = time.perf_counter()
        try:
            out[name] = fn(args, sync)
        except Exception as exc:  # recorded; the next case still runs
            out[name] = {
                "error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            }
            log(f"bench      {name}: ERROR {out[name]['error']}")
        out[name]["section_s"] = round(time.perf_counter() - t0, 1)
    return out


# -------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    p.add_argument("--output", type=Path, default=None, help="JSON (default benchmarks/results/device_check_gpu.json)")
    p.add_argument("--workdir", type=Path, default=REPO / "bench_tmp", help="folder for the JUnit XML (bench_tmp/)")
    p.add_argument("--standin", action="store_true", help="run on the test suite's CuPy stand-in (no GPU; CI)")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--time-limit", type=float, default=470.0, help="seconds for the whole check (default 470)")
    p.add_argument("--tests-timeout", type=float, default=210.0, help="seconds for pytest -m gpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--fit-size", type=int, default=4096, help="image side of the column-fit case")
    p.add_argument("--denoise-size", type=int, default=2048)
    p.add_argument("--svd-rows", type=int, default=262144)
    p.add_argument("--svd-cols", type=int, default=1024)
    p.add_argument(
        "pytest_args",
        nargs="*",
        help="pytest arguments after '--' (default: the whole tests folder), e.g. -- -x -k svd",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.fit_size, args.denoise_size, args.svd_rows, args.svd_cols, args.repeats = 160, 128, 2048, 64, 1
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}")
    if args.output is None:
        name = "device_check_standin.json" if args.standin else "device_check_gpu.json"
        args.output = HERE / "results" / name
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deadline = time.perf_counter() + args.time_limit
    with ExitStack() as stack:
        if args.standin:
            sys.path.insert(0, str(REPO / "tests"))
            import cupy_standin

            stack.enter_context(cupy_standin.install())
        from harness import run_header

        from usidgpu.core.device import gpu_status

        ok, why = gpu_status()
        if not ok:
            print(f"device_check: error: no usable CUDA GPU: {why}", file=sys.stderr)
            return 2
        result: dict[str, Any] = {
            "benchmark": "device_check (usidgpu on a real GPU: tests, sanitizers, headline cases)",
            **run_header("gpu"),
            "gpu": why,
            "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        log(f"device_check: {why}; sections {', '.join(args.sections)}; limit {args.time_limit:.0f} s")
        functions = {"env": section_env, "tests": section_tests, "sanitizer": section_sanitizer, "bench": section_bench}
        for name in args.sections:
            remaining = deadline - time.perf_counter()
            if remaining < 30:
                result[name] = {"skipped": f"out of time ({remaining:.0f} s left)"}
                continue
            t0 = time.perf_counter()
            try:
                result[name] = functions[name](args, remaining)
            except Exception as exc:
                result[name] = {"error": f"{type(exc).__name__}: {exc}"}
                log(f"{name:10s} ERROR {result[name]['error']}")
            if isinstance(result[name], dict):
                result[name]["section_s"] = round(time.perf_counter() - t0, 1)
            args.output.write_text(json.dumps(result, indent=1, default=str) + "\n")  # after every section
        result["elapsed_s"] = round(args.time_limit - (deadline - time.perf_counter()), 1)
        args.output.write_text(json.dumps(result, indent=1, default=str) + "\n")
        log(f"device_check: done in {result['elapsed_s']:.0f} s → {args.output}")
    failed = (
        any("error" in result.get(s, {}) for s in args.sections)
        or result.get("tests", {}).get("counts", {}).get("failed", 0) > 0
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
