"""A tokenizer plus BERT's special tokens: [PAD], [CLS], [SEP], [MASK] take the ids after its vocabulary.

    tok = with_bert_tokens(get_tokenizer("char", text=text))   # or "byte", "bpe", "gpt2"
    tok.encode("[CLS] a cat [SEP]")       # the four tokens are allowed specials: each is one id
    tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id, tok.n_vocab (= the base's + 4)

BERT's own WordPiece vocabulary is not needed to train an encoder: any of this library's tokenizers gives
the ordinary ids, and the four special ones are appended (their text is only ever produced by these ids).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinygrad_llm.tokenizer.base import Tokenizer, as_id_list, check_text, split_special

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tinygrad_llm.backend import Array
    from tinygrad_llm.tensor import Tensor

BERT_SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]")


class WithSpecialTokens(Tokenizer):
    """``base`` with ``tokens`` added as special tokens, ids ``base.n_vocab, base.n_vocab + 1, ...``.

    They are allowed in ``encode`` by default (with the base's own <|endoftext|>); ``decode`` writes their text.
    """

    def __init__(self, base: Tokenizer, tokens=BERT_SPECIAL_TOKENS):
        tokens = list(tokens)
        if len(set(tokens)) != len(tokens) or not tokens:
            raise ValueError(f"WithSpecialTokens: tokens must be distinct and not empty, got {tokens}")
        clash = [t for t in tokens if t in base.special_tokens]
        if clash:
            raise ValueError(f"WithSpecialTokens: {clash} already special in the {base.name} tokenizer")
        self.base = base
        self.added = {token: base.n_vocab + i for i, token in enumerate(tokens)}
        self.special_tokens = {**base.special_tokens, **self.added}
        self.name = f"{base.name}+special"

    @property
    def n_vocab(self) -> int:
        return self.base.n_vocab + len(self.added)

    @property
    def eot_id(self) -> int | None:
        return self.base.eot_id

    def _id(self, token: str) -> int | None:
        return self.added.get(token)

    pad_id = property(lambda self: self._id("[PAD]"))
    cls_id = property(lambda self: self._id("[CLS]"))
    sep_id = property(lambda self: self._id("[SEP]"))
    mask_id = property(lambda self: self._id("[MASK]"))

    def encode(
        self,
        text: str,
        *,
        allowed_special: str | Iterable[str] = "default",
        disallowed_special: str | Iterable[str] = "all",
    ) -> list[int]:
        """Ids of ``text``: the added tokens' text becomes their ids (``allowed_special`` "default": they and
        the base's <|endoftext|>); everything else is the base tokenizer's."""
        check_text(text, "WithSpecialTokens")
        if allowed_special == "default":
            allowed_special = set(self.added) | {t for t in self.base.special_tokens if t == "<|endoftext|>"}
        ids: list[int] = []
        for piece, special_id in split_special(text, self.special_tokens, allowed_special, disallowed_special):
            if special_id is not None:
                ids.append(special_id)
            elif piece:
                ids.extend(self.base.encode(piece, allowed_special=set(), disallowed_special=()))
        return ids

    def decode(self, ids: Iterable[int] | Array | Tensor) -> str:
        ids = as_id_list(ids, self.n_vocab, "WithSpecialTokens")
        names = {i: token for token, i in self.added.items()}
        out, run = [], []
        for i in ids + [None]:  # decode runs of ordinary ids with the base (multi-byte characters span ids)
            if i is None or i in names:
                if run:
                    out.append(self.base.decode(run))
                    run = []
                if i is not None:
                    out.append(names[i])
            else:
                run.append(i)
        return "".join(out)

    def files(self) -> dict[str, bytes]:
        return self.base.files()

    def to_dict(self) -> dict:
        return {"type": "special", "base": self.base.to_dict(), "tokens": list(self.added)}


def with_bert_tokens(base: Tokenizer) -> WithSpecialTokens:
    """``base`` plus [PAD], [CLS], [SEP], [MASK] (an already extended tokenizer is returned as it is)."""
    return base if isinstance(base, WithSpecialTokens) else WithSpecialTokens(base, BERT_SPECIAL_TOKENS)
