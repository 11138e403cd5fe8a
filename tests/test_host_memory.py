"""tinygrad_llm.runtime.host_memory: arrays freed by one step are reused by the next, without page faults."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tinygrad_llm.runtime import host_memory

# Allocate and free a step's worth of activations (ten arrays of 4 MiB, above glibc's default mmap threshold;
# 40 MiB in all, above its trim threshold) ten times; print the page faults of the last nine rounds.
PROGRAM = """
import resource, numpy as np, tinygrad_llm
tinygrad_llm.runtime.configure()  # what the command line and the Trainer do
from tinygrad_llm.runtime import host_memory
def step():
    arrays = [np.ones((1024, 1024), np.float32) for _ in range(10)]
    return sum(float(a[0, 0]) for a in arrays)
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, host_memory.describe())
"""


def faults(setting: str | None) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    if setting is not None:
        env[host_memory.ENV] = setting
    out = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, check=True)
    count, described = out.stdout.split(" ", 1)
    return int(count), described


@pytest.mark.skipif(host_memory._glibc_mallopt() is None, reason="not glibc: host_memory leaves malloc alone")
def test_freed_arrays_are_reused_without_page_faults():
    kept, described = faults(None)
    assert kept < 100, described  # 9 rounds x 10,240 pages would fault without it
    assert "kept for reuse" in described
    default, described = faults("default")
    assert default > 9 * 5000, described  # glibc's defaults: every round faults its pages back in
    assert "default" in described


def test_a_bad_setting_is_named_and_ignored():
    out = subprocess.run(
        [sys.executable, "-c", "import tinygrad_llm; tinygrad_llm.runtime.configure()"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, host_memory.ENV: "fast"},
    )
    assert "TINYGRAD_LLM_MALLOC='fast' ignored" in out.stderr


def test_importing_changes_nothing_configure_applies_the_settings():
    program = (
        "import os, tinygrad_llm\n"
        "from tinygrad_llm.runtime import host_memory, settings\n"
        "print(os.environ.get('OMP_WAIT_POLICY'), host_memory.describe(), settings._current is None, sep='|')\n"
        "tinygrad_llm.runtime.configure(threads=2)\n"
        "print(settings.current().threads, host_memory.describe(), sep='|')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", host_memory.ENV)}
    out = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, check=True)
    imported, configured = out.stdout.splitlines()
    assert imported == "None|not configured|True"  # no environment variable set, malloc untouched, nothing read
    threads, described = configured.split("|")
    assert threads == "2"
    if host_memory._glibc_mallopt() is not None:
        assert "kept for reuse" in described
