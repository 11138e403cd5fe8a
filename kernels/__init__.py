"""Compiled kernels, shipped as ``tinygrad_llm.kernels``: Numba on the CPU, CuPy on CUDA.

Each kernel is a faster implementation of a ``forward``/``backward`` pair in ``tinygrad_llm.functional``,
which is the only module that calls into here. ``TINYGRAD_LLM_KERNELS=numpy`` forces the NumPy reference.
"""
