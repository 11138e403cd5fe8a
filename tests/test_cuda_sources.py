"""The CUDA kernels without a GPU: every source compiled with NVRTC, and the embedding gradient's index
arithmetic replayed in NumPy.

``kernels/cuda.py`` hands CuPy one CUDA C text per dtype (``source(dtype)``) with ``OPTIONS``; CuPy adds only
the GPU's architecture. The test here compiles that same text with the same options for sm_80 (A100) and
sm_90 (H100), in every dtype the kernels are built for, with NVRTC alone (``pip install cupy-cuda13x
nvidia-cuda-nvrtc``, the ``cuda-compile`` extra): no driver and no GPU needed. Where NVRTC is missing the
test skips with the reason; CI sets ``TINYGRAD_LLM_REQUIRE_NVRTC=1``, which turns that skip into a failure.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

ARCHITECTURES = ("sm_80", "sm_90")  # A100, H100: CuPy asks NVRTC for the GPU's own code (a cubin), as here
# What CuPy's compiler adds to a RawModule's options on CUDA (cupy/cuda/compiler.py, CuPy 13 and 14), besides
# the architecture and include folders (our source includes nothing): flush denormals, and device code by
# default. test_cupy_still_adds_these_options checks them against the installed CuPy's source.
CUPY_ADDS = ("-ftz=true", "--device-as-default-execution-space")
CUDA_PY = Path(__file__).resolve().parent.parent / "kernels" / "cuda.py"  # the launches


def _nvrtc():
    """NVRTC through CuPy's bindings, or a skip (a failure where TINYGRAD_LLM_REQUIRE_NVRTC=1, as in CI)."""
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.destroyProgram(nvrtc.createProgram("", "probe.cu", [], []))
    except Exception as exc:  # CuPy missing (ImportError), or NVRTC's library missing
        reason = f"needs CuPy and NVRTC (pip install -e '.[cuda-compile]'): {type(exc).__name__}: {exc}"
        if os.environ.get("TINYGRAD_LLM_REQUIRE_NVRTC") == "1":
            pytest.fail(f"TINYGRAD_LLM_REQUIRE_NVRTC=1 but {reason}")
        pytest.skip(reason)
    return nvrtc


def compile_for(nvrtc, source: str, arch: str) -> bytes:
    """``source`` compiled as CuPy compiles a RawModule for a GPU of architecture ``arch``: the GPU's code."""
    from tinygrad_llm.kernels import cuda_source

    program = nvrtc.createProgram(source, "tinygrad_llm_kernels.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(program, [*cuda_source.OPTIONS, *CUPY_ADDS, f"-arch={arch}"])
        except Exception as exc:
            pytest.fail(f"NVRTC -arch={arch}: {exc}\n{nvrtc.getProgramLog(program)}")
        return nvrtc.getCUBIN(program)
    finally:
        nvrtc.destroyProgram(program)


def launched_kernels() -> set[str]:
    """Every kernel name kernels/cuda.py launches: the first argument of each ``_kernel("...", ...)``."""
    return set(re.findall(r'_kernel\(\s*"(\w+)"', CUDA_PY.read_text(encoding="utf-8")))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_cuda_kernel_compiles_with_nvrtc(arch):
    """The exact text CuPy compiles, for each dtype, for this architecture (through ptxas: register and
    shared-memory limits included); and every kernel that cuda.py launches is in the result (a misspelt name
    would fail only at the first launch on a GPU)."""
    nvrtc = _nvrtc()
    from tinygrad_llm.kernels import cuda_source

    names = launched_kernels()
    assert len(names) >= 12, names  # softmax, layer norm, cross-entropy (each both ways), embedding, GELU, AdamW
    from tinygrad_llm.kernels import dispatch

    assert set(cuda_source.C_TYPES) == set(dispatch.FLOAT_DTYPES)  # every dtype dispatch sends the kernels
    for dtype in cuda_source.C_TYPES:
        cubin = compile_for(nvrtc, cuda_source.source(dtype), arch)
        missing = sorted(name for name in names if name.encode() + b"\0" not in cubin)
        assert not missing, f"{dtype}: launched but not compiled: {missing}"


def test_every_cuda_source_is_the_one_compiled_here():
    """No CUDA C anywhere else: the package's only CuPy compilation is cuda.py's RawModule of source(dtype), so
    the test above compiles every kernel there is (a RawKernel or ElementwiseKernel elsewhere would not be)."""
    root = CUDA_PY.parent.parent
    package = [p for p in root.joinpath("tinygrad_llm").rglob("*.py") if "kernels" not in p.parts]  # (a link)
    found = []
    for path in sorted([*package, *root.joinpath("kernels").glob("*.py")]):
        for text in path.read_text(encoding="utf-8").splitlines():
            if re.search(r"\b(RawKernel|RawModule|ElementwiseKernel|ReductionKernel|fuse)\(", text):
                found.append(f"{path.relative_to(root)}: {text.strip()}")
    assert found == ["kernels/cuda.py: module = _modules[dtype] = cupy.RawModule(code=source(dtype), options=OPTIONS)"]


def test_a_compile_error_fails_the_test():
    """The check above can fail: a source with an error does not compile."""
    nvrtc = _nvrtc()
    from tinygrad_llm.kernels import cuda_source

    good = cuda_source.source(np.float32)
    broken = good.replace("T inv = (T)(1.0 / block_sum(s, sbuf));", "T inv = undefined_name;")
    assert broken != good
    with pytest.raises(pytest.fail.Exception, match="undefined_name"):
        compile_for(nvrtc, broken, "sm_90")


def test_cupy_still_adds_these_options():
    """CUPY_ADDS is what the installed CuPy's compiler adds (read from its source: it cannot run without a GPU)."""
    _nvrtc()
    import inspect

    from cupy.cuda import compiler

    text = inspect.getsource(compiler)
    for option in CUPY_ADDS:
        assert f"options += ('{option}',)" in text, option


# ---- the embedding gradient's two passes, replayed in NumPy ---------------------------------------------


def embedding_gradient_as_the_kernels_do(ids, gy, num_embeddings, chunk):
    """kernels/cuda.py's embedding_backward, block by block, with the kernels' index arithmetic: pass 1 (one
    block per chunk of sorted positions) writes each run piece's sum at the piece's first position; pass 2
    (one block per run start) adds the run's pieces. Columns are the threads (vectorised here)."""
    dim = gy.shape[-1]
    gy2 = gy.reshape(-1, dim)
    flat = ids.reshape(-1).astype(np.int64)
    order = np.argsort(flat, kind="stable")
    sorted_ids = flat[order]
    n = flat.size
    parts = np.full((n, dim), np.nan)  # NaN: a part read but never written shows in the result
    for block in range(-(-n // chunk)):  # embedding_backward_chunks
        first = block * chunk
        last = min(first + chunk, n)
        s = np.zeros(dim)
        piece = first
        for k in range(first, last):
            s = s + gy2[order[k]]
            if k + 1 == last or sorted_ids[k + 1] != sorted_ids[k]:
                parts[piece] = s
                s = np.zeros(dim)
                piece = k + 1
    gw = np.zeros((num_embeddings, dim), gy.dtype)
    for i in range(n):  # embedding_backward_runs
        run_id = sorted_ids[i]
        if i > 0 and sorted_ids[i - 1] == run_id:
            continue
        s = parts[i].copy()
        k = (i // chunk + 1) * chunk
        while k < n and sorted_ids[k] == run_id:
            s += parts[k]
            k += chunk
        gw[run_id] = s.astype(gy.dtype)
    return gw


@pytest.mark.parametrize(
    "ids",
    [
        np.zeros(200, np.int64),  # one run over four chunks (a padding id)
        np.array([3]),
        np.arange(64) % 2,  # n = one chunk exactly; runs of 32
        np.r_[np.zeros(64, np.int64), np.ones(64, np.int64)],  # runs that end exactly at a chunk's end
        np.r_[np.full(63, 5), np.full(2, 1), np.full(130, 7)],  # runs across one and two chunk boundaries
        np.random.default_rng(0).integers(0, 9, (4, 37)),  # many short runs, a 2-D batch
    ],
    ids=["one-long-run", "single", "one-chunk", "chunk-aligned", "across-boundaries", "random"],
)
def test_embedding_gradient_two_passes_sum_every_row_once(ids):
    """The replay equals np.add.at (every row of gy added once into its id's row), for runs shorter than,
    equal to, and spanning several chunks, starting and ending on and off chunk boundaries."""
    from tinygrad_llm.kernels import cuda_source

    num_embeddings = int(ids.max()) + 3  # ids never used: rows of zeros
    gy = np.random.default_rng(1).standard_normal(ids.shape + (5,))
    want = np.zeros((num_embeddings, 5))
    np.add.at(want, ids.reshape(-1), gy.reshape(-1, 5))
    for chunk in (cuda_source.EMB_CHUNK, 4):  # 4: many chunks even for the short cases
        got = embedding_gradient_as_the_kernels_do(ids, gy, num_embeddings, chunk)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=f"chunk {chunk}")


def test_the_replay_follows_the_kernel_source():
    """The replay above mirrors these lines of the CUDA source; if the kernel's index arithmetic changes,
    this fails until the replay is brought along."""
    from tinygrad_llm.kernels import cuda_source

    text = cuda_source.source(np.float32)
    for line in (
        "long long first = (long long)blockIdx.x * EMB_CHUNK;",
        "long long last = min(first + EMB_CHUNK, n);",
        "if (k + 1 == last || sorted_ids[k + 1] != sorted_ids[k]) {",
        "parts[piece * dim + j] = s;",
        "if (i > 0 && sorted_ids[i - 1] == id) return;",
        "long long next_chunk = (i / EMB_CHUNK + 1) * EMB_CHUNK;",
        "for (long long k = next_chunk; k < n && sorted_ids[k] == id; k += EMB_CHUNK) s += parts[k * dim + j];",
    ):
        assert line in text, line
