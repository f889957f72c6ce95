"""benchmarks/gpu_throughput.py runs end to end (on the CPU, at tiny sizes) and writes its JSON and table."""

import json

import gpu_throughput


def test_tiny_cpu_check_writes_results(tmp_path):
    script = gpu_throughput
    args = ["--tiny", "--device", "cpu", "--batch_sizes", "2", "--steps", "1", "--warmup", "1", "--frames", "2"]
    args += [
        "--words",
        "5",
        "--encode_batch",
        "2",
        "--variants",
        "clip4clip-meanP",
        "s2ca-patches",
        "s2ca-soft",
    ]
    args += ["s2ca-patches+atr"]
    report = script.main([*args, "--out", str(tmp_path)])
    [json_file] = tmp_path.glob("gpu_throughput-*-tiny-check.json")
    saved = json.loads(json_file.read_text())
    assert saved["tiny"] and [row["variant"] for row in saved["training"]] == [
        "clip4clip-meanP",
        "s2ca-patches",
        "s2ca-soft",
        "s2ca-patches+atr",
    ]
    assert saved["training"][0]["ratio_to_meanp"] == 1.0
    for row in saved["training"]:
        assert row["videos_per_s"] > 0 and row["tflops_effective"] > 0
    # The S2CA step does strictly more arithmetic than the meanP step it is compared with.
    flops = {row["variant"]: row["tflops_effective"] * row["step_ms"] for row in report["training"]}
    assert flops["s2ca-patches"] > flops["clip4clip-meanP"]
    # ATR adds a teacher forward pass, the heads and the generators to the same step.
    assert flops["s2ca-patches+atr"] > flops["s2ca-patches"]
    assert [row["variant"] for row in saved["encoding"]] == ["clip (meanP)", "s2ca"]
    assert "| s2ca-patches | 2 |" in json_file.with_suffix(".md").read_text()
