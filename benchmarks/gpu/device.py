"""Check 0: the device, its driver, the package versions, and a measured dense matmul rate."""

from __future__ import annotations

from benchmarks.gpu.common import Context, assumed_peak_bf16, device_facts, matmul_rate, result, versions


def run(ctx: Context) -> dict:
    facts = device_facts()
    peak = None if ctx.dry_run else assumed_peak_bf16(facts["device"])
    figures = {
        **facts,
        "measured_matmul_tflops": round(matmul_rate(ctx.dry_run) / 1e12, 3),
        "matmul": "256^3 fp32 on CPU" if ctx.dry_run else "8192^3 bf16, mean of 10 after 3 warm-ups",
        "assumed_peak_bf16_tflops": peak / 1e12 if peak else None,
        "peak_source": "vendor datasheet, dense (no sparsity), SXM" if peak else None,
    }
    record = result("device", ctx, "passed", figures, versions=versions())
    if not ctx.dry_run and peak is None:  # MFU is then not computed; the measured rate still is
        record["note"] = f"no datasheet bf16 peak known for {facts['device']!r}: add it to PEAK_BF16 for MFU"
    return record
