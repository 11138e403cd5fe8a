"""Scoring instruction responses: offline metrics against the reference outputs, and an LLM judge.

    scores = score_responses(entries)                    # no server: exact match, token F1, ROUGE-L (0..1)
    judge = OllamaJudge(model="llama3", url="http://localhost:11434/api/chat")
    judge.check()                                        # JudgeError at once when nothing answers there
    result = judge.score_entries(entries)                # the book's method: 0..100 per response

The judge sends the book's prompt to an Ollama-compatible ``/api/chat`` endpoint with ``urllib`` (no extra
dependency), reads the streamed JSON lines, and parses the integer it answers. Any client with ``score``
taking (entry, response) can replace it: the judge is pluggable.
"""

from __future__ import annotations

import json
import re
import string
import urllib.error
import urllib.request
from collections.abc import Sequence

from tinygrad_llm.finetune.instruction import RESPONSE_KEY, format_input

DEFAULT_JUDGE_URL = "http://localhost:11434/api/chat"
DEFAULT_JUDGE_MODEL = "llama3"


class JudgeError(RuntimeError):
    """The judge endpoint cannot be reached or answered something unusable."""


# ---- offline metrics ----------------------------------------------------------------------------------

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_text(text: str) -> list[str]:
    """Lower-case words without punctuation (SQuAD's normalisation, without removing articles)."""
    return _PUNCTUATION.sub(" ", text.lower()).split()


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised words are identical, else 0.0."""
    return float(normalize_text(prediction) == normalize_text(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of word precision and recall, counting shared words with multiplicity (SQuAD's F1)."""
    pred, ref = normalize_text(prediction), normalize_text(reference)
    if not pred or not ref:
        return float(pred == ref)
    counts: dict[str, int] = {}
    for word in ref:
        counts[word] = counts.get(word, 0) + 1
    common = 0
    for word in pred:
        if counts.get(word, 0) > 0:
            counts[word] -= 1
            common += 1
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: list, b: list) -> int:
    """Length of the longest common subsequence, one row of the dynamic programme at a time."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1: precision and recall of the longest common word subsequence."""
    pred, ref = normalize_text(prediction), normalize_text(reference)
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def score_responses(entries: Sequence[dict], response_key: str = RESPONSE_KEY) -> dict:
    """Mean exact match, token F1 and ROUGE-L of ``entry[response_key]`` against ``entry["output"]``."""
    entries = list(entries)
    if not entries:
        raise ValueError("score_responses: no entries to score")
    for index, entry in enumerate(entries):
        if response_key not in entry:
            raise ValueError(f"score_responses: entry {index} has no {response_key!r}")
    metrics = {"exact_match": exact_match, "token_f1": token_f1, "rouge_l": rouge_l}
    result = {
        name: sum(fn(e[response_key], e["output"]) for e in entries) / len(entries) for name, fn in metrics.items()
    }
    result["n"] = len(entries)
    return result


# ---- the LLM judge (the book's method) ----------------------------------------------------------------


def judge_prompt(entry: dict, response_key: str = RESPONSE_KEY) -> str:
    """The book's scoring prompt for one record."""
    return (
        f"Given the input `{format_input(entry)}` "
        f"and correct output `{entry['output']}`, "
        f"score the model response `{entry[response_key]}`"
        f" on a scale from 0 to 100, where 100 is the best score. "
        f"Respond with the integer number only."
    )


class OllamaJudge:
    """Scores responses with a model served by Ollama (or anything speaking its ``/api/chat``)."""

    def __init__(
        self,
        model: str = DEFAULT_JUDGE_MODEL,
        url: str = DEFAULT_JUDGE_URL,
        timeout: float = 60.0,
        seed: int = 123,
        num_ctx: int = 2048,
    ):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"judge url must start with http:// or https://, got {url!r}")
        self.model, self.url, self.timeout, self.seed, self.num_ctx = model, url, float(timeout), seed, num_ctx

    def query(self, prompt: str) -> str:
        """The judge's whole answer to ``prompt`` (greedy, seeded, as the book's ``query_model``)."""
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "options": {"seed": self.seed, "temperature": 0, "num_ctx": self.num_ctx},
        }
        request = urllib.request.Request(
            self.url,
            data=json.dumps(payload).encode("utf-8"),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = []
                for line in response:  # Ollama streams one JSON object per line
                    line = line.strip()
                    if not line:
                        continue
                    message = json.loads(line.decode("utf-8"))
                    if "error" in message:
                        raise JudgeError(f"judge at {self.url} answered an error: {message['error']}")
                    answer.append(message.get("message", {}).get("content", ""))
                return "".join(answer)
        except urllib.error.HTTPError as exc:
            raise JudgeError(
                f"judge at {self.url} answered HTTP {exc.code} ({exc.reason}); is model "
                f"{self.model!r} available there (ollama pull {self.model})?"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise JudgeError(
                f"cannot reach the judge at {self.url} ({reason}); start an Ollama server "
                "('ollama serve') or score offline without a judge"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise JudgeError(f"judge at {self.url} did not answer JSON lines ({exc})") from None

    def check(self) -> None:
        """Raise JudgeError now if the endpoint does not answer (before any long work)."""
        self.query("Respond with the number 1 only.")

    def score(self, entry: dict, response_key: str = RESPONSE_KEY) -> int | None:
        """0..100 for one record, or None when the judge's answer is not an integer (as the book skips it)."""
        answer = self.query(judge_prompt(entry, response_key)).strip()
        match = re.fullmatch(r"\s*(\d{1,3})\s*\.?\s*", answer)
        return int(match.group(1)) if match else None

    def score_entries(self, entries: Sequence[dict], response_key: str = RESPONSE_KEY) -> dict:
        """{"scores": [int | None per entry], "average": mean of the integers, "n_scored": how many}."""
        scores = [self.score(entry, response_key) for entry in entries]
        valid = [s for s in scores if s is not None]
        return {
            "judge_model": self.model,
            "scores": scores,
            "n_scored": len(valid),
            "average": sum(valid) / len(valid) if valid else float("nan"),
        }
