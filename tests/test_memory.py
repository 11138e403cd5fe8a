"""Memory checked before it is spent: the memory left (runtime.host_memory.available_memory), the one training
estimate (tinygrad_llm.memory) that info prints, and every training command refusing a job that cannot fit
before it allocates anything, naming the flag to change. The memory left is replaced by a fixed figure here, so
that the refusals do not depend on the machine the tests run on."""

from __future__ import annotations

import pytest

from tinygrad_llm.cli import main
from tinygrad_llm.memory import NotEnoughMemory, check_training_memory, training_memory
from tinygrad_llm.model import GPTConfig, estimate_memory, format_bytes
from tinygrad_llm.runtime import host_memory, settings

GIB = 1 << 30


@pytest.fixture
def available(monkeypatch):
    """Set the memory the machine has left: ``available(8 * GIB)``."""

    def set_available(n: int) -> None:
        monkeypatch.setattr(host_memory, "available_memory", lambda: (n, "a test's figure"))

    monkeypatch.delenv(settings.MEMORY_CHECK_ENV, raising=False)
    monkeypatch.setattr(settings, "_current", None)  # the environment read again
    return set_available


# ---- what is left ----------------------------------------------------------------------------------------


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_available_memory_is_memavailable_or_the_cgroup_room_when_lower(tmp_path):
    proc, cgroup = tmp_path / "proc", tmp_path / "cgroup"
    write(proc / "meminfo", "MemTotal:       24683772 kB\nMemAvailable:   20000000 kB\n")
    assert host_memory.available_memory(str(proc), str(cgroup)) == (20000000 * 1024, "MemAvailable in /proc/meminfo")
    write(cgroup / "memory.max", "max\n")  # cgroup v2 without a limit
    write(cgroup / "memory.current", "5000000000\n")
    assert host_memory.available_memory(str(proc), str(cgroup))[0] == 20000000 * 1024
    write(cgroup / "memory.max", "8000000000\n")  # a 8 GB container using 5 GB, 1 GB of it droppable page cache
    write(cgroup / "memory.stat", "anon 4000000000\ninactive_file 1000000000\n")
    room, source = host_memory.available_memory(str(proc), str(cgroup))
    assert room == 8_000_000_000 - 4_000_000_000 and "memory.max" in source
    v1 = tmp_path / "v1"  # cgroup v1: "no limit" is a number near 2**63
    write(v1 / "memory" / "memory.limit_in_bytes", "9223372036854771712\n")
    write(v1 / "memory" / "memory.usage_in_bytes", "2430185472\n")
    assert host_memory.available_memory(str(proc), str(v1))[0] == 20000000 * 1024
    write(v1 / "memory" / "memory.limit_in_bytes", "3000000000\n")
    write(v1 / "memory" / "memory.stat", "total_inactive_file 430185472\n")
    assert host_memory.available_memory(str(proc), str(v1))[0] == 3_000_000_000 - 2_000_000_000
    assert host_memory.available_memory(str(tmp_path / "none"), str(tmp_path / "none")) is None


def test_this_machine_says_what_is_left():
    found = host_memory.available_memory()
    if found is None:
        pytest.skip("this system has no /proc/meminfo")
    assert found[0] > 0


# ---- the one estimate ------------------------------------------------------------------------------------


def test_the_training_estimate_adds_to_the_models_own():
    from tinygrad_llm.finetune.lora import lora_parameter_count

    cfg = GPTConfig.preset("tiny")
    plain = training_memory(cfg, 4, 32)
    assert {key: plain[key] for key in estimate_memory(cfg, 4, 32)} == estimate_memory(cfg, 4, 32)  # info's figure
    adapters = lora_parameter_count(cfg, 8, 2)
    lora = training_memory(cfg, 4, 32, lora_rank=8, num_classes=2)
    head = estimate_memory(cfg, 4, 32, num_classes=2)
    assert lora["parameters"] == head["parameters"] + 4 * adapters  # the frozen model and the adapters
    assert lora["gradients"] == 4 * adapters and lora["optimizer"] == 8 * adapters  # only the adapters train
    assert lora["activations"] > head["activations"] and lora["lora"] == 16 * adapters
    assert head["parameters"] == 4 * (cfg.num_parameters(tied=True) + cfg.emb_dim * 2 + 2)  # the class head
    dp = training_memory(cfg, 4, 32, processes=4)
    zero = training_memory(cfg, 4, 32, processes=4, zero=True)
    assert dp["allreduce"] == plain["gradients"] and dp["total"] == plain["total"] + plain["gradients"]
    assert zero["optimizer"] == -(-plain["optimizer"] // 4) and zero["total"] < dp["total"]


def test_check_refuses_with_the_numbers_and_the_flag(available, monkeypatch):
    cfg = GPTConfig.preset("mini")
    flags = {"activations": "--batch-size", "model": "--preset", "lora": "--lora-rank"}
    needed = training_memory(cfg, 13000, 64)["total"]
    available(needed)  # exactly enough
    assert check_training_memory(cfg, 13000, 64, flags=flags)["total"] == needed
    available(needed - 1)
    with pytest.raises(NotEnoughMemory) as refused:
        check_training_memory(cfg, 13000, 64, flags=flags)
    message = str(refused.value)
    assert f"needs about {format_bytes(needed)}" in message and "53.9" in message  # info's 54 GiB
    assert f"but {format_bytes(needed - 1)} is available (a test's figure): use a smaller --batch-size" in message
    with pytest.raises(NotEnoughMemory, match="2 processes on this machine"):
        check_training_memory(cfg, 6500, 64, flags=flags, processes_here=2)
    monkeypatch.setenv(settings.MEMORY_CHECK_ENV, "off")
    monkeypatch.setattr(settings, "_current", None)
    check_training_memory(cfg, 13000, 64, flags=flags)  # skipped
    monkeypatch.setattr(settings, "_current", None)
    monkeypatch.setenv(settings.MEMORY_CHECK_ENV, "on")
    monkeypatch.setattr(host_memory, "available_memory", lambda: None)  # the system does not say
    check_training_memory(cfg, 13000, 64, flags=flags)


# ---- every training command, before it allocates ----------------------------------------------------------
# Each names a --data that does not exist: the refusal comes before the data are read, and a command that failed
# to check would stop there, at that error, instead of allocating what the machine does not have.


def test_train_refuses_a_batch_that_cannot_fit_before_anything_is_read_or_written(tmp_path, available, capsys):
    available(8 * GIB)
    out = tmp_path / "run"
    args = ["train", "--preset", "mini", "--batch-size", "13000", "--context-length", "64", "--out", str(out)]
    assert main([*args, "--data", str(tmp_path / "missing.txt")]) == 1
    err = capsys.readouterr().err
    assert "tinygrad-llm train: error: not enough memory: this training needs about 53.9" in err
    assert "but 8.00 GiB is available" in err and "use a smaller --batch-size or --context-length" in err
    assert not out.exists()  # refused before the run folder was made
    assert main(["info", "--preset", "mini", "--batch-size", "13000", "--context-length", "64"]) == 0
    assert "total          53.9" in capsys.readouterr().out  # the same estimate


def test_train_refuses_a_model_that_cannot_fit(tmp_path, available, capsys):
    available(1 * GIB)
    argv = ["train", "--preset", "gpt2-xl", "--batch-size", "1", "--data", str(tmp_path / "missing.txt")]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 1
    assert "use a smaller --preset (or --n-layers, --emb-dim)" in capsys.readouterr().err


def test_lora_rank_beyond_the_layers_width_is_refused(tmp_path, available, capsys):
    available(64 * GIB)
    out = tmp_path / "spam"
    argv = ["finetune-classifier", "--preset", "tiny", "--lora-rank", "1000000", "--data", str(tmp_path / "missing")]
    assert main([*argv, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--lora-rank 1000000: above the rank of every layer it adapts" in err
    assert "use --lora-rank 64 or less" in err
    assert not out.exists()


def test_lora_adapters_that_cannot_fit_name_lora_rank(tmp_path, available, capsys):
    available(1 << 20)  # 1 MiB: the rank-64 adapters alone take 2.3 MiB with their gradients and moments
    small = ["--preset", "tiny", "--ngram-embeddings", "none", "--batch-size", "1"]
    argv = ["finetune-classifier", *small, "--max-length", "8", "--lora-rank", "64", "--data", str(tmp_path / "no")]
    argv += ["--out", str(tmp_path / "o")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "of which the LoRA adapters of rank 64 take" in err and "use a smaller --lora-rank" in err


def test_finetuning_refuses_a_batch_that_cannot_fit(tmp_path, available, capsys):
    available(1 * GIB)
    argv = [
        "finetune-instruct",
        "--batch-size",
        "100000",
        "--data",
        str(tmp_path / "no.json"),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 1
    assert "use a smaller --batch-size or --max-length" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_max_length_beyond_the_models_context_is_refused(tmp_path, available, capsys):
    available(64 * GIB)
    argv = ["finetune-instruct", "--max-length", "1000", "--data", str(tmp_path / "no.json")]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 1
    said = capsys.readouterr().err
    assert "--max-length 1000 is longer than the model's context of 256 tokens" in said  # small-cpu's context


def test_dpo_counts_two_sequences_per_record_and_a_gpu_its_own_memory(available, monkeypatch):
    from tinygrad_llm import memory

    cfg = GPTConfig.preset("tiny")
    pairs = training_memory(cfg, 4, 32, sequences=2)  # a chosen and a rejected response per record
    assert pairs["activations"] == estimate_memory(cfg, 8, 32)["activations"]
    flags = {"activations": "--batch-size", "model": "--preset", "lora": "--lora-rank"}
    available(64 * GIB)
    monkeypatch.setattr(memory, "gpu_memory", lambda: (1 << 20, "the GPU's free memory"))
    check_training_memory(cfg, 4, 32, flags=flags, device="cpu")  # the host has room
    with pytest.raises(NotEnoughMemory, match=r"batches of 4 x 2 x 32 tokens.*the GPU's free memory"):
        check_training_memory(cfg, 4, 32, flags=flags, device="cuda", sequences=2)
