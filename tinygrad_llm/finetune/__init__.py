"""Fine-tuning: a spam classifier (chapter 6), an instruction follower and preference tuning with DPO
(chapter 7), LoRA (appendix E).

    from tinygrad_llm.finetune import (SpamDataset, add_classification_head, set_trainable,
                                       train_classifier_simple, calc_accuracy_loader, classify_review,
                                       plot_values, InstructionDataset, custom_collate_fn, format_input,
                                       PreferenceDataset, compute_dpo_loss, train_model_dpo_simple,
                                       LinearWithLoRA, replace_linear_with_lora, merge_lora)

Modules:
    spam_data     the SMS Spam Collection: download/read, balance, split, SpamDataset
    classifier    classification head, freezing recipes, loss/accuracy, training loop, classify_text,
                  class_probabilities
    recipe        the classifier's recipes (the book's, the measured from-scratch one) and the loop that trains,
                  scores and saves one classifier: finetune_classifier(ClassifierRecipe(...), out)
    instruction   Alpaca formatting, InstructionDataset, custom_collate_fn, test-set responses
    preference    chosen/rejected records, PreferenceDataset, the DPO collate (response-only masks)
    dpo           DPO: response log-probabilities, the loss and rewards, the reference, the training loop
    judge         offline metrics (exact match, token F1, ROUGE-L) and an Ollama-compatible LLM judge
    lora          LoRALayer, LinearWithLoRA, replace_linear_with_lora, merge_lora, parameter counts
    io            saving and loading fine-tuned models (model + tokenizer + metadata)
"""

from tinygrad_llm.finetune.classifier import (
    add_classification_head,
    calc_accuracy_loader,
    calc_loss_batch,
    calc_loss_loader,
    class_probabilities,
    classify_review,
    classify_text,
    evaluate_model,
    set_trainable,
    train_classifier,
    train_classifier_simple,
    trainable_parameters,
)
from tinygrad_llm.finetune.dpo import (
    compute_dpo_loss,
    compute_dpo_loss_batch,
    compute_dpo_loss_loader,
    compute_logprobs,
    evaluate_dpo_loss_loader,
    precompute_reference_logprobs,
    train_model_dpo_simple,
)
from tinygrad_llm.finetune.instruction import (
    InstructionDataset,
    custom_collate_fn,
    format_input,
    generate_response,
    generate_test_responses,
    load_instruction_data,
    save_responses,
    split_instruction_data,
)
from tinygrad_llm.finetune.judge import JudgeError, OllamaJudge, exact_match, rouge_l, score_responses, token_f1
from tinygrad_llm.finetune.lora import (
    LinearWithLoRA,
    LoRALayer,
    count_trainable_parameters,
    freeze,
    lora_parameter_count,
    merge_lora,
    replace_linear_with_lora,
)
from tinygrad_llm.finetune.preference import PreferenceDataset, load_preference_data, preference_collate_fn
from tinygrad_llm.finetune.recipe import ClassifierRecipe, finetune_classifier
from tinygrad_llm.finetune.spam_data import (
    SpamDataset,
    create_balanced_dataset,
    download_and_unzip_spam_data,
    find_spam_file,
    random_split,
    read_sms_spam,
)
from tinygrad_llm.train.plot import plot_values

__all__ = [
    "ClassifierRecipe",
    "InstructionDataset",
    "JudgeError",
    "LinearWithLoRA",
    "LoRALayer",
    "OllamaJudge",
    "PreferenceDataset",
    "SpamDataset",
    "add_classification_head",
    "calc_accuracy_loader",
    "calc_loss_batch",
    "calc_loss_loader",
    "class_probabilities",
    "classify_review",
    "classify_text",
    "compute_dpo_loss",
    "compute_dpo_loss_batch",
    "compute_dpo_loss_loader",
    "compute_logprobs",
    "count_trainable_parameters",
    "create_balanced_dataset",
    "custom_collate_fn",
    "download_and_unzip_spam_data",
    "evaluate_dpo_loss_loader",
    "evaluate_model",
    "exact_match",
    "find_spam_file",
    "finetune_classifier",
    "format_input",
    "freeze",
    "generate_response",
    "generate_test_responses",
    "load_instruction_data",
    "load_preference_data",
    "lora_parameter_count",
    "merge_lora",
    "plot_values",
    "precompute_reference_logprobs",
    "preference_collate_fn",
    "random_split",
    "read_sms_spam",
    "replace_linear_with_lora",
    "rouge_l",
    "save_responses",
    "score_responses",
    "set_trainable",
    "split_instruction_data",
    "token_f1",
    "train_classifier",
    "train_classifier_simple",
    "train_model_dpo_simple",
    "trainable_parameters",
]
