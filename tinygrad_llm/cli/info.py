"""``tinygrad-llm info``: a model's configuration, parameter count and training memory estimate."""
from __future__ import annotations

from tinygrad_llm.cli.common import positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="parameters and memory of a preset or a saved model",
                       description="Print the configuration, parameter count and an estimate of the memory "
                                   "training needs (parameters, gradients, AdamW moments, activations).")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--preset", default=None, help="a preset name (default gpt2-small)")
    which.add_argument("--checkpoint", metavar="DIR", default=None,
                       help="a run folder or a Hugging Face GPT-2 folder (its config.json)")
    which.add_argument("--list", action="store_true", help="list the presets")
    which.add_argument("--threads", action="store_true", dest="threads_only",
                       help="only the thread policy: how many CPU threads the math would use now, and why")
    p.add_argument("--batch-size", type=positive_int, default=8, help="batch size for the memory estimate")
    p.add_argument("--context-length", type=positive_int, default=None,
                   help="tokens per window for the memory estimate (default: the model's context)")
    p.set_defaults(run=run_info)


def run_info(args) -> int:
    import json
    from pathlib import Path

    from tinygrad_llm.model import PRESETS, GPTConfig, count_parameters, estimate_memory, format_bytes
    from tinygrad_llm.model.pretrained import config_from_hf, is_hf_config

    if args.threads_only:
        print_threads()
        return 0
    if args.list:
        for name, cfg in PRESETS.items():
            print(f"{name:12s} {count_parameters(cfg):>14,} parameters  {cfg.n_layers:>2} layers "
                  f"{cfg.n_heads:>2} heads {cfg.emb_dim:>5} wide  context {cfg.context_length}")
        return 0
    if args.checkpoint:
        path = Path(args.checkpoint) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (expected a run folder with config.json)")
        try:
            data = json.loads(path.read_text())
            config = config_from_hf(data, path) if is_hf_config(data) else GPTConfig.from_dict(data)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{path}: not a model configuration ({exc})") from None
        title = str(args.checkpoint)
    else:
        name = args.preset or "gpt2-small"
        config = GPTConfig.preset(name)
        title = name
    print(f"{title}")
    for key, value in config.to_dict().items():
        print(f"  {key:16s} {value}")
    untied, tied = count_parameters(config, tied=False), count_parameters(config, tied=True)
    print(f"  parameters       {count_parameters(config):,} (untied {untied:,}; with the output head tied to "
          f"the token embedding {tied:,})")
    ctx = args.context_length or config.context_length
    memory = estimate_memory(config, args.batch_size, ctx)
    print(f"  training memory, float32, batch {args.batch_size} x context {ctx}:")
    for key, value in memory.items():
        print(f"    {key:14s} {format_bytes(value)}")
    print_threads()
    return 0


def print_threads() -> None:
    from tinygrad_llm import threads

    print("threads (CPU)")
    for line in threads.describe():
        print(f"  {line}")
