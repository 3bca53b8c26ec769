"""Cutting a response into shorter answers that still end well: at a whole sentence, or after
the first sentence's first clause. RiC cuts its offline samples this way, so that the data spans
length-sensitive objectives."""

from __future__ import annotations

import re

import numpy as np

# A sentence ends at . ! or ? followed by whitespace, unless the mark closes a list number ("1.")
# or a common abbreviation ("Dr. Smith", "e.g. this"; any case).
ABBREVIATIONS = ("Dr", "Mr", "Mrs", "Ms", "St", "vs", "etc", "e.g", "i.e")
_NOT_ABBREVIATION = "".join(rf"(?<!\b(?i:{re.escape(a)})\.)" for a in ABBREVIATIONS)
SENTENCE_END = re.compile(rf"(?<=[^\d\s][.!?]){_NOT_ABBREVIATION}\s+")
_COMPLETE = re.compile(rf"[^\d\s][.!?]{_NOT_ABBREVIATION}[\"')\]*]*$")
# A clause ends at , ; : or a spaced dash after a word ("Sure, here" -> "Sure").
CLAUSE_END = re.compile(r"(?<=\w)(?:[,;:]|\s[-\u2013\u2014])\s")


def first_clause(text: str) -> str | None:
    """The first sentence's first clause, closed with that sentence's mark ("Sure, here it is!"
    -> "Sure!"; "." unless the sentence ends with "!" or "?"), or None when it has only one."""
    text = text.strip()
    end = SENTENCE_END.search(text)
    sentence = text[: end.start()] if end else text
    clause = CLAUSE_END.search(sentence)
    if clause is None or not _COMPLETE.search(sentence):
        return None
    mark = sentence.rstrip("\"')]*")[-1]
    return sentence[: clause.start()].rstrip() + mark


def sentence_cuts(text: str, n: int, rng: np.random.Generator, clause: bool = False) -> list[str]:
    """Up to `n` different prefixes of `text` that end at a whole sentence, shortest first.

    The cut points are drawn without replacement from the sentence ends; a final fragment cut
    off by the token limit is never kept, and text without a whole sentence comes back whole.
    Several cuts of one response share their beginning and differ only in where they stop, so
    the tags are the only clue the model has for when to stop: this is what lets a small model
    learn length-sensitive objectives (brevity, length) from little data. With `clause`, the
    first sentence's first clause (`first_clause`, a prefix but for its closing mark) is one
    more candidate: an answer shorter than a sentence, without which a model's shortest answer
    is its shortest first sentence.
    """
    text = text.strip()
    ends = [m.start() for m in SENTENCE_END.finditer(text)]
    if _COMPLETE.search(text):
        ends.append(len(text))
    if not ends:
        return [text]
    candidates = [text[:i] for i in ends]
    short = first_clause(text) if clause else None
    if short is not None:
        candidates.insert(0, short)
    chosen = rng.choice(len(candidates), size=min(n, len(candidates)), replace=False)
    return [candidates[i] for i in sorted(chosen)]
