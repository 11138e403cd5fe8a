"""The mutation check: plant known bugs one at a time in a copy of the checkout and see the tests catch each.

    python tests/tools/mutation.py            # every mutation; a table; exit 1 if any is not caught
    python tests/tools/mutation.py --list     # what each mutation breaks, and the tests named to catch it
    python tests/tools/mutation.py --only dpo-beta-book-loop

Each mutation replaces one exact piece of text in one file with a planted bug, then runs the tests named
for it (``pytest -x -q``, with a timeout). It is caught when those tests fail (pytest's exit status 1); an
import error, a collection error or a timeout is reported as an error, not as caught. The checkout is
copied into a temporary folder first and only the copy is edited, so an interrupted run leaves the working
tree as it was. Before the mutations, the named tests run once on the unchanged copy: they must pass there,
or a failure under a mutation would prove nothing.

A mutation whose original text is not found exactly once in today's code is refused with a message naming
it (tests/test_mutation_list.py checks the same in the suite), so the list cannot silently drift from the
code. Hypothesis runs with the suite's "ci" profile (derandomized): caught here means caught in CI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600  # per mutation: the slowest named tests take about a minute on a busy 2-core machine


@dataclass(frozen=True)
class Mutation:
    id: str
    file: str  # relative to the repository root
    original: str  # exact text, present exactly once in the file
    replacement: str
    tests: tuple[str, ...]  # test files or node ids, relative to the repository root
    breaks: str  # one line: what the planted bug breaks


M = Mutation
MUTATIONS = [
    # ---- the planted bugs of issue 25 ----------------------------------------------------------------
    M(
        "grad-accum-scale",
        "tinygrad_llm/train/step.py",
        "    scale = 1.0 / len(batches)\n",
        "    scale = 1.0\n",
        ("tests/test_train.py::test_grad_accum_steps_on_the_gradient_of_the_whole_batch",),
        "the Trainer's loss scale without 1/grad_accum (k times the gradient)",
    ),
    M(
        "dpo-beta-book-loop",
        "tinygrad_llm/finetune/dpo.py",
        "loss, _, _ = dpo_loss_batch_on_device(batch, policy_model, reference_model, beta, average, device)",
        "loss, _, _ = dpo_loss_batch_on_device(batch, policy_model, reference_model, 0.1, average, device)",
        ("tests/test_finetune_dpo.py::test_both_loops_train_with_the_beta_they_are_given",),
        "the book's DPO loop trains with beta 0.1 whatever beta it is given",
    ),
    M(
        "dpo-beta-cli-loop",
        "tinygrad_llm/finetune/dpo.py",
        "return dpo_loss_batch_on_device(batch, model, reference_model, beta, average, device)[0]",
        "return dpo_loss_batch_on_device(batch, model, reference_model, 0.1, average, device)[0]",
        ("tests/test_finetune_dpo.py::test_both_loops_train_with_the_beta_they_are_given",),
        "the command line's DPO loop (finetune-dpo --beta) trains with beta 0.1 whatever it is given",
    ),
    M(
        "dpo-beta-cli-flag",
        "tinygrad_llm/cli/dpo.py",
        "            args.epochs,\n            args.beta,\n",
        "            args.epochs,\n            0.1,\n",
        ("tests/test_finetune_dpo.py::test_cli_sum_logprobs_max_train_and_beta_change_what_dpo_trains_on",),
        "finetune-dpo --beta never reaches the training loop (it trains with 0.1)",
    ),
    M(
        "dpo-beta-loss",
        "tinygrad_llm/finetune/dpo.py",
        "losses = -F.logsigmoid(logits * beta)",
        "losses = -F.logsigmoid(logits)",
        ("tests/test_finetune_dpo.py::test_loss_rewards_and_logprobs_equal_pytorch",),
        "compute_dpo_loss ignores beta (the loss of beta 1)",
    ),
    M(
        "safetensors-trailing-bytes",
        "tinygrad_llm/safetensors_file.py",
        "        if position != data_size:\n",
        "        if position > data_size:\n",
        ("tests/test_strict_loading.py::test_a_weights_file_that_lies_is_refused_naming_file_and_tensor",),
        "the safetensors reader accepts bytes after the last tensor",
    ),
    M(
        "safetensors-gap",
        "tinygrad_llm/safetensors_file.py",
        "            if begin != position:\n",
        "            if begin < position:\n",
        ("tests/test_strict_loading.py::test_a_weights_file_that_lies_is_refused_naming_file_and_tensor",),
        "the safetensors reader accepts a gap between tensors",
    ),
    M(
        "gpu-step-float-per-micro-batch",
        "tinygrad_llm/train/step.py",
        "total = total + backward_in_parts(loss_batch, inputs, targets, model, device, amp, scale=scale)",
        "total = total + float(backward_in_parts(loss_batch, inputs, targets, model, device, amp, scale=scale))",
        ("tests/test_gpu_path.py::test_a_training_step_copies_to_the_host_once",),
        "a training step waits for the GPU once per micro-batch (float of each micro-batch's loss)",
    ),
    M(
        "gpu-step-tolist-per-micro-batch",
        "tinygrad_llm/train/step.py",
        "total = total + backward_in_parts(loss_batch, inputs, targets, model, device, amp, scale=scale)",
        "total = total + backward_in_parts(loss_batch, inputs, targets, model, device, amp, scale=scale).tolist()",
        ("tests/test_gpu_path.py::test_a_training_step_copies_to_the_host_once",),
        "a training step waits for the GPU once per micro-batch (.tolist() of each micro-batch's loss)",
    ),
    M(
        "gpu-step-asarray-per-micro-batch",
        "tinygrad_llm/runtime/batch_parts.py",
        '        return loss.data.astype("float64")\n',
        "        if not np.isfinite(np.asarray(loss.data)).all():\n"
        '            raise FloatingPointError("the loss is not finite")\n'
        '        return loss.data.astype("float64")\n',
        ("tests/test_gpu_path.py::test_a_training_step_copies_to_the_host_once",),
        "a training step waits for the GPU once per micro-batch (each micro-batch's loss checked on the host)",
    ),
    M(
        "classify-wrong-class",
        "tinygrad_llm/cli/classify.py",
        "label = _name(class_names, int(probs.argmax()))",
        "label = _name(class_names, int(probs.argmin()))",
        ("tests/test_classify_cli.py::test_classify_prints_the_label_the_model_predicts",),
        "tinygrad-llm classify prints the least likely class",
    ),
    M(
        "classify-probs-order",
        "tinygrad_llm/cli/classify.py",
        "for k in probs.argsort()[::-1])",
        "for k in probs.argsort())",
        ("tests/test_classify_cli.py::test_classify_prints_the_label_the_model_predicts",),
        "classify --probs lists the classes least likely first",
    ),
    # ---- the engine's hand-written backward passes ---------------------------------------------------
    M(
        "matmul-grad-untransposed",
        "tinygrad_llm/functional/arithmetic.py",
        "ga = runtime.matmul(g2, xp.swapaxes(b2, -1, -2))  # dL/dA = dL/dY B^T",
        "ga = runtime.matmul(g2, b2)  # dL/dA = dL/dY B^T",
        ("tests/test_ops_arithmetic.py::test_matmul",),
        "matmul's gradient for A uses B instead of B^T",
    ),
    M(
        "softmax-backward-no-sum-term",
        "tinygrad_llm/functional/activation.py",
        "gx = y * (gy - (gy * y).sum(axis=self.axis, keepdims=True))",
        "gx = y * gy",
        ("tests/test_ops_nn.py::test_softmax_log_softmax",),
        "softmax's backward drops the -sum_j gy_j y_j term (the NumPy reference path)",
    ),
    M(
        "layernorm-backward-no-mean-term",
        "tinygrad_llm/functional/layers.py",
        "gx = rstd * (gxhat - gxhat.mean(axis=-1, keepdims=True) - xhat",
        "gx = rstd * (gxhat - xhat",
        ("tests/test_ops_nn.py::test_layer_norm",),
        "layer_norm's backward drops the mean term (the NumPy reference path)",
    ),
    M(
        "gelu-derivative",
        "tinygrad_llm/functional/activation.py",
        "gx = gy * (s + 2 * x * s * (1 - s) * GELU_C * (1 + 3 * 0.044715 * x * x))",
        "gx = gy * (s + 2 * x * s * (1 - s) * GELU_C * (1 + 0.044715 * x * x))",
        ("tests/test_ops_nn.py::test_gelu",),
        "GELU's derivative of the cubic term loses its factor 3 (the NumPy reference path)",
    ),
    M(
        "sum-to-averages",
        "tinygrad_llm/functional/_common.py",
        "    y = x.sum(axis=axes, keepdims=True)\n",
        "    y = x.mean(axis=axes, keepdims=True)\n",
        ("tests/test_ops_arithmetic.py::test_add_sub_mul_broadcast",),
        "sum_to averages over the broadcast axes instead of summing them",
    ),
    M(
        "embedding-grad-overwrites-repeats",
        "tinygrad_llm/functional/layers.py",
        "backend.scatter_add(gw, self.ids.reshape(-1), gy.reshape(-1, self.weight_shape[1]))",
        "gw[self.ids.reshape(-1)] = gy.reshape(-1, self.weight_shape[1])",
        (
            "tests/test_ops_nn.py::test_embedding_repeated_ids",
            "tests/test_ops_nn.py::test_embedding_gradient_counts_repeats",
        ),
        "the embedding's gradient keeps one of a repeated id's rows instead of their sum (NumPy path)",
    ),
    M(
        "causal-softmax-backward-no-scale",
        "tinygrad_llm/functional/activation.py",
        "gx = scale * y * (gy - (gy * y).sum(axis=-1, keepdims=True))",
        "gx = y * (gy - (gy * y).sum(axis=-1, keepdims=True))",
        ("tests/test_ops_attention.py::test_matches_the_reference_and_finite_differences",),
        "attention's causal softmax forgets the 1/sqrt(head_dim) scale in backward (the NumPy reference path)",
    ),
    M(
        "masked-softmax-backward-no-scale",
        "tinygrad_llm/functional/activation.py",
        "return self.scale * y * (gy - (gy * y).sum(axis=-1, keepdims=True))",
        "return y * (gy - (gy * y).sum(axis=-1, keepdims=True))",
        ("tests/test_bert.py::test_masked_softmax_is_masked_fill_then_softmax_and_gradchecks",),
        "the padding-masked softmax (BERT, padded GPT batches) forgets its scale in backward",
    ),
    M(
        "attention-dropout-backward-unmasked",
        "tinygrad_llm/functional/attention.py",
        "gw = self.dropped(self.product(gout, xp.swapaxes(v, -1, -2)))",
        "gw = self.product(gout, xp.swapaxes(v, -1, -2))",
        ("tests/test_ops_attention.py",),
        "attention's backward passes the gradient through the dropped weights unmasked",
    ),
    M(
        "dropout-backward-unmasked",
        "tinygrad_llm/functional/activation.py",
        "return gy * self.scaled_mask  # the same mask and scale as forward",
        "return gy  # the same mask and scale as forward",
        ("tests/test_ops_nn.py::test_dropout_seeded",),
        "dropout's backward lets the gradient through the dropped elements",
    ),
    M(
        "cross-entropy-ignore-index-backward",
        "tinygrad_llm/functional/loss.py",
        'scale = self.valid * (gy / self.count if self.reduction == "mean" and self.count else gy)',
        'scale = xp.ones(self.valid.shape) * (gy / self.count if self.reduction == "mean" and self.count else gy)',
        ("tests/test_ops_nn.py::test_cross_entropy",),
        "cross-entropy's backward gives a gradient to the rows whose target is ignore_index",
    ),
    M(
        "adamw-no-bias-correction",
        "tinygrad_llm/functional/optim_update.py",
        "bias_correction1 = 1.0 - beta1**step",
        "bias_correction1 = 1.0",
        ("tests/test_optim.py::test_adamw_matches_torch",),
        "AdamW without the first moment's bias correction (a first step 10 times too small)",
    ),
    M(
        "adamw-no-weight-decay",
        "tinygrad_llm/functional/optim_update.py",
        "decay, beta1_c, beta2_t, beta2_c = t(1.0 - lr * weight_decay),",
        "decay, beta1_c, beta2_t, beta2_c = t(1.0),",
        ("tests/test_optim.py::test_adamw_matches_torch",),
        "AdamW ignores its weight decay",
    ),
    M(
        "engine-second-use-overwrites",
        "tinygrad_llm/tensor.py",
        "            self.pending[key] = previous + gx\n",
        "            self.pending[key] = gx\n",
        ("tests/test_engine.py::test_tensor_used_twice_accumulates", "tests/test_engine.py::test_diamond_graph"),
        "a tensor used twice gets the gradient of its last use only, not their sum",
    ),
    M(
        "linear-bias-grad-mean",
        "tinygrad_llm/functional/layers.py",
        "gy.reshape(g2.shape).sum(axis=0) if len(self.needs_grad) > 2",
        "gy.reshape(g2.shape).mean(axis=0) if len(self.needs_grad) > 2",
        ("tests/test_ops_nn.py::test_linear", "tests/test_ops_nn.py::test_linear_bias_gradient_sums_every_row"),
        "linear's bias gradient is the mean of the rows' gradients, not their sum",
    ),
    # ---- the compiled kernels' backward passes (what runs by default on a CPU) ---------------------------
    M(
        "kernel-layernorm-backward-no-mean-term",
        "kernels/numba_layers.py",
        "gxr[j] = s * (g - a - xhat * c)",
        "gxr[j] = s * (g - xhat * c)",
        ("tests/test_kernels.py::test_layer_norm_matches_reference",),
        "the Numba layer_norm backward drops the mean term",
    ),
    M(
        "kernel-softmax-backward-no-sum-term",
        "kernels/numba_softmax.py",
        "gxr[j] = scale * yr[j] * (gyr[j] - dot)",
        "gxr[j] = scale * yr[j] * gyr[j]",
        ("tests/test_kernels.py::test_softmax_matches_reference",),
        "the Numba softmax backward drops the -sum_j gy_j y_j term",
    ),
    M(
        "kernel-cross-entropy-onehot-unscaled",
        "kernels/numba_softmax.py",
        "gr[targets[r]] -= c\n",
        "gr[targets[r]] -= 1\n",
        ("tests/test_kernels.py::test_cross_entropy_matches_reference",),
        "the Numba cross-entropy backward subtracts the one-hot target without the row's weight (1/count)",
    ),
    M(
        "kernel-embedding-overwrites-repeats",
        "kernels/numba_layers.py",
        "dst[j] += src[j]",
        "dst[j] = src[j]",
        ("tests/test_ops_nn.py::test_embedding_gradient_counts_repeats",),
        "the Numba embedding backward keeps a repeated id's last row instead of the sum",
    ),
    M(
        "kernel-gelu-derivative",
        "kernels/numba_layers.py",
        "(two * v * c * (one + a3 * v * v))",
        "(two * v * c * (one + a * v * v))",
        ("tests/test_kernels.py::test_gelu_matches_reference",),
        "the Numba GELU derivative of the cubic term loses its factor 3",
    ),
    M(
        "kernel-adamw-no-weight-decay",
        "kernels/numba_layers.py",
        "p = p_[i] * decay  # decoupled weight decay",
        "p = p_[i]  # decoupled weight decay",
        ("tests/test_kernels.py::test_adamw_matches_torch_over_20_steps",),
        "the Numba AdamW update ignores the weight decay",
    ),
    # ---- the flags and the masked-LM pretraining tested by their effect -------------------------------
    M(
        "train-grad-clip-ignored",
        "tinygrad_llm/train/run.py",
        "        grad_clip=s.grad_clip or None,\n",
        "        grad_clip=None,\n",
        ("tests/test_train_flags.py::test_grad_clip_bounds_the_gradient_the_optimizer_steps_with",),
        "train --grad-clip never reaches the Trainer (no clipping)",
    ),
    M(
        "train-weight-decay-fixed",
        "tinygrad_llm/train/run.py",
        "        weight_decay=s.weight_decay,\n",
        "        weight_decay=0.1,\n",
        ("tests/test_train_flags.py::test_weight_decay_moves_the_weight_matrices_by_exactly_the_decay_term",),
        "train --weight-decay is ignored (always 0.1)",
    ),
    M(
        "train-val-fraction-fixed",
        "tinygrad_llm/train/run.py",
        "    split = int(n_chars * (1 - settings.val_fraction))",
        "    split = int(n_chars * (1 - 0.1))",
        ("tests/test_train_flags.py::test_val_fraction_sets_how_much_of_the_text_goes_to_val_bin",),
        "train --val-fraction is ignored (always a tenth)",
    ),
    M(
        "train-zero-dropped",
        "tinygrad_llm/train/run.py",
        "        zero=s.zero,\n",
        "        zero=False,\n",
        ("tests/test_dist.py::test_train_zero_from_the_command_line_shards_the_moments_and_trains_the_same",),
        "train --zero under mpiexec never reaches the Trainer (every process keeps all of AdamW's moments)",
    ),
    M(
        "generate-top-k-dropped",
        "tinygrad_llm/cli/generate.py",
        "                top_k=args.top_k,\n",
        "                top_k=None,\n",
        ("tests/test_generate.py::test_cli_top_k_and_top_p_keep_to_the_likeliest_tokens",),
        "generate --top-k never reaches the sampler",
    ),
    M(
        "mlm-inputs-never-masked",
        "tinygrad_llm/data/mlm.py",
        "    inputs[to_mask] = mask_id\n",
        "",
        ("tests/test_bert_train.py::test_masked_lm_learns_from_the_context_what_letter_frequencies_cannot_tell",),
        "masked-LM pretraining never writes [MASK] into its inputs (it learns to copy what it sees)",
    ),
]


def find_problems(root: Path = ROOT) -> list[str]:
    """What is wrong with the list against the code under ``root``: a duplicate id, an original text not
    present exactly once, a replacement equal to it, a named test file that does not exist."""
    problems, seen = [], set()
    for m in MUTATIONS:
        if m.id in seen:
            problems.append(f"{m.id}: the id is used twice")
        seen.add(m.id)
        path = root / m.file
        if not path.is_file():
            problems.append(f"{m.id}: {m.file} does not exist")
            continue
        count = path.read_text(encoding="utf-8").count(m.original)
        if count != 1:
            problems.append(f"{m.id}: its original text is found {count} times in {m.file}, expected once")
        if m.replacement == m.original:
            problems.append(f"{m.id}: the replacement is the original text")
        for test in m.tests:
            if not (root / test.split("::")[0]).is_file():
                problems.append(f"{m.id}: test file {test.split('::')[0]} does not exist")
    return problems


def copy_checkout(dest: Path) -> None:
    """The files git knows (tracked, and untracked ones it does not ignore) into ``dest``, with their times,
    and Numba's cached kernels, whose index checks the kernel file's time (no recompiling in the copy)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    names = [n for n in listed.split("\0") if n]
    names += [str(p.relative_to(ROOT)) for p in (ROOT / "kernels" / "__pycache__").glob("*.nb[ic]")]
    for name in names:
        source, target = ROOT / name, dest / name
        if not source.exists() and not source.is_symlink():  # deleted in the work tree, not yet in git
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)


def numba_cache(path: Path) -> dict[Path, bytes]:
    """The kernels Numba compiled from ``path`` and cached beside it (index and data files, by path). A
    mutated kernel file is compiled again and its cache rewritten; restoring it keeps later runs from
    compiling the original again."""
    return {p: p.read_bytes() for p in (path.parent / "__pycache__").glob(f"{path.stem}.*.nb[ic]")}


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int | None, str]:
    """pytest on ``tests`` in ``copy``: (exit status or None on timeout, the output's last lines)."""
    env = dict(os.environ, PYTHONPATH=str(copy), HYPOTHESIS_PROFILE="ci", PYTHONDONTWRITEBYTECODE="1")
    shared = ROOT.parent / "shared" / "data"  # as tests/conftest.py finds it beside the checkout
    if "TINYGRAD_LLM_DATA" not in env and shared.is_dir():
        env["TINYGRAD_LLM_DATA"] = str(shared)
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, ""
    tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
    return done.returncode, "\n".join(tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutations and the tests named for each")
    parser.add_argument("--only", metavar="ID", action="append", help="run this mutation only (repeatable)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help=f"seconds per test run (default {TIMEOUT_S})")
    parser.add_argument("--no-baseline", action="store_true", help="skip running the named tests unmutated first")
    parser.add_argument("-v", "--verbose", action="store_true", help="print pytest's last lines for each run")
    args = parser.parse_args(argv)

    problems = find_problems()
    if problems:
        print("mutation list out of date with the code:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    chosen = MUTATIONS
    if args.only:
        known = {m.id for m in MUTATIONS}
        unknown = [i for i in args.only if i not in known]
        if unknown:
            print(f"--only: no mutation {', '.join(unknown)} (--list lists them)", file=sys.stderr)
            return 2
        chosen = [m for m in MUTATIONS if m.id in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.id}\n  {m.file}: {m.breaks}\n  tests: {' '.join(m.tests)}")
        return 0

    with tempfile.TemporaryDirectory(prefix="tinygrad-llm-mutation-") as folder:
        copy = Path(folder)
        copy_checkout(copy)
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            start = time.perf_counter()
            status, tail = run_tests(copy, tests, args.timeout * 2)
            print(f"baseline: the {len(tests)} named tests on the unchanged code, {time.perf_counter() - start:.0f} s")
            if status != 0:
                print(f"they do not pass there (exit status {status}); nothing to measure:\n{tail}", file=sys.stderr)
                return 2
        rows = []
        for m in chosen:
            path = copy / m.file
            original = path.read_text(encoding="utf-8")
            stat = path.stat()
            compiled = numba_cache(path)
            path.write_text(original.replace(m.original, m.replacement), encoding="utf-8")
            start = time.perf_counter()
            try:
                status, tail = run_tests(copy, m.tests, args.timeout)
            finally:  # the file, its time and its compiled kernels as they were: no recompiling afterwards
                path.write_text(original, encoding="utf-8")
                os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
                for cached in numba_cache(path):
                    cached.unlink()
                for cached, data in compiled.items():
                    cached.write_bytes(data)
            seconds = time.perf_counter() - start
            verdict = {1: "caught", 0: "NOT caught", None: "timed out"}.get(status, f"error (pytest {status})")
            rows.append((m.id, m.file, m.breaks, verdict, seconds))
            print(f"{verdict:>10}  {seconds:6.1f} s  {m.id}", flush=True)
            if args.verbose or verdict != "caught":
                print("    " + tail.replace("\n", "\n    "))
    print()
    print("| mutation | file | what it breaks | result | s |")
    print("| --- | --- | --- | --- | ---: |")
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} | {row[3]} | {row[4]:.1f} |")
    missed = [row[0] for row in rows if row[3] != "caught"]
    print(
        f"\n{len(rows) - len(missed)} of {len(rows)} caught" + (f"; not caught: {', '.join(missed)}" if missed else "")
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
