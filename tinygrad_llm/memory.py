"""Memory checked before it is spent: what a training job needs, against what this machine has left.

    from tinygrad_llm.memory import check_training_memory
    check_training_memory(config, batch_size=13000, context_length=64, flags=TRAIN_FLAGS)   # NotEnoughMemory

One estimate serves everyone: ``model.estimate_memory`` (parameters, gradients, AdamW's moments, activations)
with what a job adds to it here -- LoRA adapters (their parameters trained, the model's frozen), the Allreduce
buffer and ZeRO-1's shard of a data-parallel process. ``tinygrad-llm info``
prints it; every command that trains calls ``check_training_memory`` before it allocates a model or a batch, so
a job that cannot fit is refused with the numbers and the flag to change instead of swapping for minutes and
then failing with a bare MemoryError. The memory left is ``runtime.host_memory.available_memory()``
(MemAvailable, or a container's cgroup limit when lower). The estimate is within tens of percent:
``TINYGRAD_LLM_MEMORY_CHECK=off`` skips the check for a job known to fit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinygrad_llm.model.config import estimate_memory, format_bytes
from tinygrad_llm.runtime import host_memory, settings

if TYPE_CHECKING:
    from tinygrad_llm.model.config import GPTConfig


class NotEnoughMemory(ValueError):
    """A job would need more memory than the machine has left; the message says how much and what to change."""


def training_memory(
    config: GPTConfig,
    batch_size: int,
    context_length: int | None = None,
    *,
    num_classes: int | None = None,
    lora_rank: int | None = None,
    processes: int = 1,
    zero: bool = False,
    sequences: int = 1,
) -> dict[str, int]:
    """Bytes one process needs to train ``config`` on batches of (batch_size, context_length), float32:
    parameters, gradients, optimizer (AdamW's two moments), activations, ``allreduce`` (the flat gradient
    buffer of a data-parallel process, ``processes`` > 1) and their ``total``; ``lora``, outside the total: the
    adapters' parameters, gradients and moments, a share of it.

    ``num_classes``: a classifier's head instead of the vocabulary's. ``lora_rank``: the model frozen, adapters
    of this rank on every Linear trained (finetune.lora): their parameters, gradients and moments, and per
    token and adapter the rank-r bottleneck and the update kept for the backward pass. ``zero``: ZeRO-1 keeps
    1/processes of the moments (tinygrad_llm.dist). ``sequences``: sequences per record of the batch (DPO's
    policy reads a chosen and a rejected response: 2).
    """
    from tinygrad_llm.finetune.lora import lora_parameter_count

    batch_size *= sequences
    memory = estimate_memory(config, batch_size, context_length, num_classes=num_classes)
    memory.pop("total")
    value = 4  # float32
    lora = 0
    if lora_rank is not None:
        adapters = lora_parameter_count(config, lora_rank, num_classes)
        t = config.context_length if context_length is None else context_length
        c, head = config.emb_dim, num_classes if num_classes is not None else config.vocab_size
        # per token: each block's six adapters keep their (r) bottleneck and their update (3 x C for Q/K/V,
        # C for out_proj, 4C and C for the feed-forward); the head's adapter r and the head's width
        per_token = config.n_layers * (6 * lora_rank + 9 * c) + lora_rank + head
        trained = adapters * value
        lora = 4 * trained  # parameters, gradients, two moments
        memory["parameters"] += trained
        memory["gradients"] = trained
        memory["optimizer"] = 2 * trained
        memory["activations"] += batch_size * t * per_token * value
    if processes > 1:
        memory["allreduce"] = memory["gradients"]
        if zero:
            memory["optimizer"] = -(-memory["optimizer"] // processes)
    memory["total"] = sum(memory.values())
    memory["lora"] = lora
    return memory


def check_training_memory(
    config: GPTConfig,
    batch_size: int,
    context_length: int | None = None,
    *,
    flags: dict[str, str],
    processes_here: int = 1,
    device: str | None = None,
    **job: object,
) -> dict[str, int]:
    """``training_memory(config, batch_size, context_length, **job)`` when the ``processes_here`` processes of
    this machine fit in the memory left; else NotEnoughMemory with the estimate, the memory available and the
    flag that shrinks the largest part: ``flags["activations"]`` (batch, context), ``flags["model"]`` (the
    model's size), ``flags["lora"]`` (the adapters' rank). ``device`` "cuda": the GPU's free memory, where the
    model and the batch live, instead of the host's. Nothing is checked where the system does not say what is
    available, or with TINYGRAD_LLM_MEMORY_CHECK=off."""
    memory = training_memory(config, batch_size, context_length, **job)
    found = gpu_memory() if device == "cuda" else host_memory.available_memory()
    if found is None or not settings.current().memory_check:
        return memory
    available, source = found
    needed = memory["total"] * processes_here
    if needed <= available:
        return memory
    parts = {
        "activations": memory["activations"],
        "lora": memory["lora"],
        "model": memory["total"] - memory["activations"] - memory["lora"],
    }
    largest = max(parts, key=parts.get)
    t = config.context_length if context_length is None else context_length
    records = f"{batch_size} x {job['sequences']}" if job.get("sequences", 1) > 1 else f"{batch_size}"
    described = [f"activations {format_bytes(memory['activations'])} for batches of {records} x {t} tokens"]
    described.append(f"parameters, gradients and AdamW moments {format_bytes(memory['total'] - memory['activations'])}")
    if memory["lora"]:
        described[-1] += f", of which the LoRA adapters of rank {job['lora_rank']} take {format_bytes(memory['lora'])}"
    each = f" ({processes_here} processes on this machine, {format_bytes(memory['total'])} each)"
    raise NotEnoughMemory(
        f"not enough memory: this training needs about {format_bytes(needed)}"
        f"{each if processes_here > 1 else ''} ({'; '.join(described)}), but {format_bytes(available)} is "
        f"available ({source}): use a smaller {flags[largest]} (an estimate, within tens of percent; "
        f"{settings.MEMORY_CHECK_ENV}=off skips this check)"
    )


def gpu_memory() -> tuple[int, str] | None:
    """(free bytes of the current GPU, where the figure comes from), or None without CuPy or a GPU."""
    try:
        import cupy

        free, _ = cupy.cuda.runtime.memGetInfo()
    except Exception:  # no CuPy, no driver, no device: nothing to say (the device check names it)
        return None
    return int(free), "the GPU's free memory (cudaMemGetInfo)"
