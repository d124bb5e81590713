"""benchmarks/gpu.py: without a GPU it refuses (exit code 2, one paragraph naming what it needs); with
--allow-cpu it runs at smoke-test sizes and writes valid JSON and a RESULTS.md section."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.test_runner import REPO


def test_refuses_without_a_gpu():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "benchmarks/gpu.py"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, out.stderr
    assert "sees no GPU" in out.stderr and "make cuda12" in out.stderr and "--allow-cpu" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1  # one paragraph
    assert out.stdout == ""


def test_allow_cpu_shrinks_to_smoke_sizes_and_the_report_reads_the_json():
    """The --allow-cpu smoke run itself (population + host sections) takes ~3 minutes on this shared 2-core CPU,
    too slow for the suite: here its sizes and the RESULTS.md section built from a result of its shape."""
    from benchmarks import gpu
    a = gpu.parse_args(["--allow-cpu"])
    assert a.members == [1, 4] and a.num_envs == 4 and a.rounds == 1
    assert gpu.parse_args([]).members == [1, 16, 64, 256]
    res = {"command": "python benchmarks/gpu.py", "machine": {"devices": "cuda:0"},
           "sac": {"env": "ant", "utd": 1, "env_steps_per_s": 12345.6, "compile_s": 3.0},
           "population": [{"members": 1, "seconds_per_chunk": 0.5, "ratio_to_one": 1.0},
                          {"members": 256, "seconds_per_chunk": 2.0, "ratio_to_one": 4.0}],
           "host": {"members": 256, "host_s_per_chunk": 0.25, "device_s_per_chunk": 2.0}}
    section = gpu.report(json.loads(json.dumps(res)))
    assert section.startswith("## GPU (cuda:0)")
    assert "| sac | ant | 1 | 12,346 | 3.0 |" in section and "| 256 | 2.0000 | 4.00 |" in section
    assert "Host time per chunk at 256 members (metrics to host, JSONL + TensorBoard): 0.2500 s" in section
