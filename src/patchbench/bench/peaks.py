"""The device's peak FLOP/s, the denominator of MFU.

GPUs: published dense (no sparsity) peaks per precision, matched by `torch.cuda.get_device_name`.
"bf16"/"fp16" are tensor-core peaks with fp32 accumulation (what autocast uses); "tf32" is used for
fp32 runs when `torch.backends.cuda.matmul.allow_tf32` is on, else the plain "fp32" (CUDA-core) peak.
Note that cuDNN convolutions use TF32 by default even in "fp32" runs, so a CNN's fp32 MFU against the
fp32 peak can exceed 100%.

CPUs: no table can know the core count, clocks and SIMD width of a shared machine, so the peak is
measured by a probe (a large matmul and a large convolution in the benchmark's dtype on torch's threads;
the faster one). A measured peak is a floor of the true one: MFU near or above 100% means the probe
did not reach the hardware's peak, not that the model did better.
"""

from __future__ import annotations

import re
import time

import torch

TFLOP = 1e12

# label, name regex, fp32, tf32, bf16, fp16 (TFLOP/s, dense); vendor data sheets, SXM unless named
GPU_PEAKS: list[tuple[str, str, float, float, float, float]] = [
    ("GH200", r"GH200", 67.0, 494.7, 989.4, 989.4),
    ("H200", r"H200", 67.0, 494.7, 989.4, 989.4),
    ("H100 PCIe", r"H100.*PCIe", 51.2, 378.0, 756.5, 756.5),
    ("H100 NVL", r"H100.*NVL", 60.0, 417.5, 835.0, 835.0),
    ("H100 SXM", r"H100", 67.0, 494.7, 989.4, 989.4),
    ("A100", r"A100", 19.5, 156.0, 312.0, 312.0),
    ("A10", r"\bA10\b", 31.2, 62.5, 125.0, 125.0),
    ("L40S", r"L40S", 91.6, 183.0, 362.0, 362.0),
    ("L40", r"\bL40\b", 90.5, 90.5, 181.0, 181.0),
    ("L4", r"\bL4\b", 30.3, 60.0, 121.0, 121.0),
    ("RTX 6000 Ada", r"RTX 6000 Ada", 91.1, 182.1, 364.2, 364.2),
    ("RTX A6000", r"RTX A6000", 38.7, 77.4, 154.8, 154.8),
    ("RTX 4090", r"RTX 4090", 82.6, 82.6, 165.2, 165.2),
    ("RTX 4080", r"RTX 4080", 48.7, 48.7, 97.5, 97.5),
    ("RTX 3090", r"RTX 3090", 35.6, 35.6, 71.0, 71.0),
    ("RTX 3080", r"RTX 3080", 29.8, 29.8, 59.5, 59.5),
    ("RTX 3070", r"RTX 3070", 20.3, 20.3, 40.6, 40.6),
    ("V100", r"V100", 15.7, 15.7, 0.0, 125.0),  # no bf16 tensor cores
    ("T4", r"\bT4\b", 8.1, 8.1, 0.0, 65.0),
]


def gpu_peak(name: str, dtype: str, tf32: bool) -> tuple[float | None, str]:
    """(peak FLOP/s, how it was found) for a CUDA device name; (None, reason) when unknown."""
    for label, pattern, fp32, tf32_peak, bf16, fp16 in GPU_PEAKS:
        if re.search(pattern, name, flags=re.IGNORECASE):
            if dtype == "fp32":
                value, col = (tf32_peak, "tf32") if tf32 else (fp32, "fp32")
            else:
                value, col = (bf16, "bf16") if dtype == "bf16" else (fp16, "fp16")
            if not value:
                return None, f"{name}: no {dtype} tensor cores in the table"
            return value * TFLOP, f"table: {label} {col} dense {value:g} TFLOP/s"
    return None, f"{name!r} is not in the peak table; pass --peak-tflops"


def _best_rate(fn, flops: float, seconds: float) -> float:
    fn()  # warm-up: thread pool, kernel selection
    best, spent = float("inf"), 0.0
    while spent < seconds:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
    return flops / best


def cpu_peak(dtype: str, n: int = 1024, seconds: float = 0.5) -> tuple[float, str]:
    """Measured: the faster of an n×n matmul (BLAS) and a 3×3 convolution (oneDNN) in `dtype` (fp16 is
    probed as bf16 on CPU). Both, because BLAS libraries may not use the widest vector units on every
    vendor's CPU while oneDNN does (MKL on AMD: AVX2), and the models use both."""
    dt = torch.float32 if dtype == "fp32" else torch.bfloat16
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    mm = _best_rate(lambda: torch.mm(a, b), 2 * n**3, seconds)
    C, S = 256, 64
    x, w = torch.randn(1, C, S, S, dtype=dt), torch.randn(C, C, 3, 3, dtype=dt)
    conv = _best_rate(lambda: torch.nn.functional.conv2d(x, w, padding=1), 2 * C * C * 9 * S * S, seconds)
    name = str(dt).replace("torch.", "")
    return max(mm, conv), (f"probe: best of {name} {n}x{n} matmul {mm / 1e9:.0f} GFLOP/s and 3x3 conv "
                           f"{conv / 1e9:.0f} GFLOP/s, {torch.get_num_threads()} threads")


def peak_flops(device: torch.device, dtype: str, override_tflops: float = 0.0) -> tuple[float | None, str]:
    if override_tflops > 0:
        return override_tflops * TFLOP, f"--peak-tflops {override_tflops:g}"
    if device.type == "cuda":
        return gpu_peak(torch.cuda.get_device_name(device), dtype, torch.backends.cuda.matmul.allow_tf32)
    if device.type == "cpu":
        return cpu_peak(dtype)
    return None, f"no peak known for device type {device.type!r}; pass --peak-tflops"
