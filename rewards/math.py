r"""Math-answer checking for verifiable rewards: extract a completion's final answer and compare it with the gold.

The reward is the only supervision RL gets, so this module aims for few false negatives, few false positives and a
hard time bound per item, in any thread or process.

How a check runs:

1. Extraction (`extract_answer`): `<answer>...</answer>`, then `\boxed{}`/`\fbox{}`, then `#### N`, then "the
   (final) answer is ...", then (lenient mode only) the last number or math block. After a `</think>`, only the text
   after it is searched.
2. Canonicalisation and parsing: unicode (minus signs, digits, superscripts, symbols), LaTeX spacing and styling,
   `\text{}`, thousands separators, currency, unit words, percent and degree signs, then a small structure: numbers,
   text, intervals, sets, tuples, lists, `\pm`, equations, with leaves that are numbers, text or expressions.
3. Fast path: numbers compare exactly as `Fraction`s in pure Python; most GSM8K-style checks end here.
4. Symbolic path: leaves that need algebra (radicals, pi, variables, matrices, inequalities) are compared with
   math-verify/sympy in a persistent worker process (see `_SymbolicPool`).

Time bound (`timeout`, default `DEFAULT_TIMEOUT_S`): extraction and the fast path are linear-time regex and string
work on at most the last 50k characters. Inputs that could stall sympy (huge or stacked powers, big factorials, deep
nesting, long expressions) are refused before any symbolic work. The symbolic comparison runs in a worker process,
so the bound holds in any thread and process, without signals in the caller: the worker interrupts itself with a
timer at 85% of the remaining budget (and stays usable), and a worker that still has not answered at 95%, being
stuck in C code, is killed and replaced by a spare. Out of time scores 0.0. Starting a worker (about a second,
once per process) is not charged to the item, so a cold start never costs a right answer.

Policies (deliberate choices):

- Markers are tried in the order above and the last occurrence of the first kind found wins (`#### 17 ... #### 18`
  reads 18); a marked answer beats any number after it ("The answer is 12. Then 3 more" reads 12); several `\boxed{}`
  next to each other ("\boxed{2} and \boxed{3}") form one list answer.
- Hedges are wrong: "5 or 6" is the list {5, 6}, which equals only a gold list {5, 6}.
- `x = 5` equals `5` when the left side is a plain variable (or the gold is not an equation); chains `x = 2+3 = 5`
  take the last value before any `\approx`.
- A percentage `p%` stands for both `p` and `p/100`: `50%` equals `50` and `0.5`, but `0.5` does not equal `50`.
- A decimal with at least 3 places equals a fraction or irrational it correctly rounds (`0.333` = `1/3`,
  `1.414` = `\sqrt2`); otherwise decimals compare exactly (`0.33` != `1/3`).
- Units, currency and degree signs are dropped (`5 cm` = `5`, `$1,000` = `1000`, `90^\circ` = `90`); degrees are not
  converted to radians.
- Sets and bare lists are order-insensitive; tuples and intervals are order- and bracket-sensitive; a tuple equals a
  bare list written in the same order.
- Text answers compare case-, article- and `\text{}`-insensitively; "(B) 12" answers both a gold "B" and a gold 12.
- `1,5` (a decimal comma or a list) equals both `1.5` and the list {1, 5}; `1,500` is fifteen hundred.
- `is_equivalent(pred, gold)` is not symmetric where the gold decides: a gold equation that is not an assignment
  (`2x + z = 1`) is not equal to a bare number.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import re
import select
import subprocess
import sys
import threading
import time
import unicodedata
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

from rewards.utils import completion_text

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 2.0
"""Bound on the time one item may take, extraction and symbolic work included (worker start-up excluded)."""

_MAX_TEXT_CHARS = 1_000_000  # longer completions are searched in their last million characters (linear-time work)
_MAX_ANSWER_CHARS = 1_000  # longer extracted answers are compared as text only
_MAX_SYMBOLIC_CHARS = 400
_MAX_NESTING = 12
_MAX_EXPONENT_DIGITS = 400  # 10**400 is instant; a user-written 10**(10**9) is not
_MAX_SEQUENCE_ITEMS = 32


# ---------------------------------------------------------------------------------------------------------------------
# Values: what an answer parses into.


@dataclass(frozen=True, slots=True)
class Number:
    """An exact number; `latex` is the form handed to sympy, `decimals` the places of a written decimal."""

    value: Fraction
    latex: str
    decimals: int | None = None


@dataclass(frozen=True, slots=True)
class Infinite:
    sign: int


@dataclass(frozen=True, slots=True)
class Based:
    """A numeral in another base (`101_2`): equal to one with the same value, or to the same digits written bare."""

    digits: str
    base: int
    value: int


@dataclass(frozen=True, slots=True)
class Tower:
    """A power tower too large to expand (`3^{3^{3^{3}}}`), right-associative: compared exactly without expanding."""

    levels: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Text:
    """A word answer ("Monday", "(C)"), compared case- and article-insensitively."""

    text: str


@dataclass(frozen=True, slots=True)
class Expr:
    """Anything that needs algebra to compare: radicals, pi, variables, matrices, inequalities.

    Compared with math-verify/sympy in a worker process (`_SymbolicPool`), within the item's time bound.
    """

    latex: str


@dataclass(frozen=True, slots=True)
class Percent:
    """`p%`: equal to `p` and to `p/100`.

    So `50%` equals a gold `50` and a gold `0.5`, while a plain `0.5` does not equal `50`.
    """

    plain: Any
    scaled: Any


@dataclass(frozen=True, slots=True)
class Either:
    """An ambiguous spelling such as `1,5` (a decimal comma or a list): equal when any reading is."""

    options: tuple


@dataclass(frozen=True, slots=True)
class Sequence:
    """Brackets and their items: `(1, 2)`, `[0, 1)`, `\\{1, 2\\}`, a bare list `1, 2`, or a union of intervals."""

    opening: str  # "(", "[", "{" (a set), "" (a bare list), "cup" (a union)
    closing: str
    items: tuple

    @property
    def ordered(self) -> bool:
        return self.opening not in ("", "{", "cup")


@dataclass(frozen=True, slots=True)
class Relation:
    """An equation chain `lhs = ... = value`; `assignment` when `lhs` is a plain variable such as `x` or `f(3)`."""

    lhs: str
    value: Any
    assignment: bool
    latex: str


# ---------------------------------------------------------------------------------------------------------------------
# Extraction.

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox|framebox)\s*")
_BRACE_OR_ESCAPE = re.compile(r"\\.|[{}]", re.DOTALL)
_BOX_TOKEN = re.compile(r"[^\s${}]+")
_BOX_SEPARATOR = (
    re.compile(  # what may stand between the boxes of one answer: "and", "$y_2 =", "\text{ for part (b) }"
        r"(?:\s|[,;&$()]|\\[()\[\]]|\\q?quad|\\text\s*\{[A-Za-z\s,()]*\}|[A-Za-z]+|\\,|\\;|\\ |"
        r"[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?\s*=)*"
    )
)
_MAX_BOX_GAP = 80
_ANSWER_MARKER = re.compile(
    r"answer\s*(?:\*\*)?\s*(?:\([^)\n]{0,20}\))?\s*"
    r"(?:is\s*:?|:|=|will\s+be|would\s+be|should\s+be|comes\s+(?:out\s+)?to)\s*(?:\*\*)?\s*:?",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.!?;](?=\s|$)|\n")
_SIMPLE_SPAN = re.compile(r"[ \t]*(\$?-?\d[\d,]*(?:\.\d+)?)[ \t]*(?:[.!;](?=\s|$)|\n|$)")
_EXPLANATION = re.compile(  # a reason after the answer ("34, since ..."), or a closing remark in brackets, not a hedge
    r",?\s+(?:since|because|as\s+(?:shown|computed|calculated)|which|so\s+that|where|given|but|therefore|thus|hence|"
    r"i\.e\.|that\s+is|I\s+hope|not|rather\s+than|instead\s+of)\b"
    r"|\s+\((?!(?:or|and|maybe|perhaps|possibly|alternatively|either|otherwise)\b)(?=[A-Za-z]{2,}[\s)])[^()]*\)\s*$",
    re.IGNORECASE,
)
_LEADING_PROSE = re.compile(r"^(?:(?!negative\b|minus\b)[A-Za-z][a-z']+\s+)+(?=[-+\d(\[$\\])")
_PROSE_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")
_COPULA = re.compile(
    r"\s(?:is|are|was|were|equals|be)\s+(?:equal\s+to\s+|exactly\s+|approximately\s+)?", re.IGNORECASE
)
_NUMBER_TOKEN = (
    r"(?:-|\u2212|negative\s+|minus\s+)?\$?\s?(?:\d{1,3}(?: \d{3})+(?![\d,])|\d[\d,]*)"
    r"(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?"
    r"(?:\s*(?:%|\\%|percent\b|thousand\b|million\b|billion\b|trillion\b))?"
)
_LAST_NUMBER = re.compile(  # after any non-Latin text too: "答案是18"
    r"(?s:.*)(?<![A-Za-z\d_.,/\-\u2212])(?<!\d )(?<!negative )(?<!minus )(" + _NUMBER_TOKEN + ")"
)
_MATH_DELIMITERS = re.compile(r"\$\$|\\\[|\\\]|\\\(|\\\)|(?<!\\)\$")


def _closing_braces(text: str) -> dict[int, int]:
    """Index of each `{` -> index of its `}`, in one pass (escaped `\\{`/`\\}` skipped); unclosed ones are absent."""
    pairs, stack = {}, []
    if "{" not in text:
        return pairs
    for match in _BRACE_OR_ESCAPE.finditer(text):
        char = match.group()
        if char == "{":
            stack.append(match.start())
        elif char == "}" and stack:
            pairs[stack.pop()] = match.start()
    return pairs


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every `\\boxed{...}`/`\\fbox{...}` (and `\\boxed 5`) in `text`."""
    found: list[tuple[int, int, str]] = []
    closing = _closing_braces(text)
    for match in _BOX_COMMAND.finditer(text):
        start = match.end()
        if found and match.start() < found[-1][1]:
            continue  # a box inside the previous box is part of its content
        if start < len(text) and text[start] == "{":
            if start in closing:
                found.append((match.start(), closing[start] + 1, text[start + 1 : closing[start]]))
            elif (escaped := text.find("\\}", start, start + _MAX_ANSWER_CHARS)) > 0 and "{" not in text[
                start + 1 : escaped
            ]:
                found.append((match.start(), escaped + 2, text[start + 1 : escaped]))  # `\boxed{185\}`
        elif token := _BOX_TOKEN.match(text, start):  # `\boxed 5`
            found.append((match.start(), token.end(), token.group()))
    return found


def _last_boxed(text: str, boxes: list[tuple[int, int, str]] | None = None) -> str | None:
    """The last boxed answer; boxes separated only by "and", commas or spacing join into one list answer."""
    boxes = _boxes(text) if boxes is None else boxes
    if not boxes:
        return None
    group = [boxes[-1]]
    for previous in reversed(boxes[:-1]):
        between = text[previous[1] : group[0][0]]
        if len(between) > _MAX_BOX_GAP or _BOX_SEPARATOR.fullmatch(between) is None:
            break
        if len(group) >= _MAX_SEQUENCE_ITEMS:
            break
        group.insert(0, previous)
    contents = list(dict.fromkeys(content.strip() for _, _, content in group))  # the same box repeated is one answer
    return ", ".join(contents) if len(contents) > 1 else contents[0]


def _cut_sentence(span: str) -> str:
    """The span up to the end of its first sentence, keeping a leading display-math block whole."""
    stripped = span.lstrip(" \t:*\n")
    for opening, closing in (("$$", "$$"), ("\\[", "\\]")):
        if stripped.startswith(opening):
            end = stripped.find(closing, len(opening))
            if end > 0:
                return stripped[len(opening) : end]
    first_line = stripped.split("\n", 1)[0]
    if "$" not in first_line and "{" not in first_line:
        end = _SENTENCE_END.search(first_line)
        return first_line[: end.start()] if end else first_line
    depth = 0
    in_math = False
    dollars_delimit_math = first_line.count("$") % 2 == 0  # an odd count means currency
    for index, char in enumerate(stripped):
        if char == "$" and dollars_delimit_math and stripped[index - 1 : index] != "\\":
            in_math = not in_math
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif not in_math and depth <= 0 and _SENTENCE_END.match(stripped, index):
            return stripped[:index]
    return stripped


def _reduce_span(span: str) -> str | None:
    """The answer inside the text that follows a final-answer marker ("... is 34 apples. I hope" -> "34 apples")."""
    if simple := _SIMPLE_SPAN.match(span):  # the common "#### 18" / "is 18." in one step
        return simple.group(1)
    span = _cut_sentence(span[: 4 * _MAX_ANSWER_CHARS])
    boxed = _last_boxed(span) if "box" in span else None
    if boxed is not None:
        return boxed
    span = _EXPLANATION.split(span, maxsplit=1)[0]
    span = _strip_edges(_MATH_DELIMITERS.sub(" ", span).replace("**", "").replace('\\"', '"').strip(" \t\n*`"))
    if not span:
        return None
    if span[:1].isalpha():  # prose first: "the largest n is 34", "7 apples and 11 oranges = 18 fruits"
        copulas = list(_COPULA.finditer(span))
        if copulas and span[copulas[-1].end() :].strip():
            span = span[copulas[-1].end() :]
    if "=" in span and _PROSE_WORD.search(span.split("=", 1)[0]):
        span = span.rsplit("=", 1)[1]
    prose = _LEADING_PROSE.match(span)
    if prose:
        span = span[prose.end() :]
    return span.strip() or None


def _fallback_answer(text: str) -> str | None:
    """Lenient mode: the whole text when it is a bare answer; else the last math block when it ends after the last
    number and holds more than a number; else the answer in the last sentence that has a number."""
    bare = _bare_answer(text)
    if bare is not None:
        return bare
    if "```" in text and (after_tool := _after_tool_output(text)) is not None:
        return after_tool
    number = _LAST_NUMBER.match(text)
    number_end = number.end(1) if number else -1
    if "$" in text or "\\" in text:
        block = _last_math_block(text)
        if block is not None and block[0] > number_end:
            content = block[1].strip()
            if "\\" in content or (re.search(r"\d", content) and _NUMBER_ONLY.fullmatch(content) is None):
                return content
    if number is None:
        words = _NUMBER_PHRASE.findall(text[-300:])
        return words[-1].strip() if words else None
    start = number.start(1)
    opening = text[start - 1 : start]
    if opening in ("(", "["):  # inside an interval or a tuple: the whole bracket, `[0, 9)`
        closing = re.compile(r"[^()\[\]\n]{0,200}?[)\]]").match(text, start)
        if closing is not None:
            return text[start - 1 : closing.end()]
    return _last_sentence_answer(text, number) or number.group(1).strip()


_NUMBER_PHRASE = re.compile(  # "two dozen", "twenty-one", "three hundred"
    r"\b(?:(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|"
    r"sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand|"
    r"dozen|a\s+dozen)[\s-]*)+\b",
    re.IGNORECASE,
)
_NUMBER_ONLY = re.compile(r"\s*-?\d[\d,]*(?:\.\d+)?\s*")
_HEDGE = re.compile(r"\b(?:or|maybe|perhaps|possibly|either|alternatively)\b", re.IGNORECASE)
_COMPARISON = re.compile(
    r"\b(?:(?:more|less|fewer|greater|higher|lower|larger|smaller|bigger|older|younger|longer|shorter)\s+than|"
    r"compared\s+(?:to|with)|instead\s+of|rather\s+than|as\s+opposed\s+to)\b",
    re.IGNORECASE,
)
_TRAILING_NUMBER = re.compile(r"(?:\$?\d[\d,.]*\s+(?:[A-Za-z]+\s+)?)$")
_CONCLUSION = re.compile(r"\b(?:so|thus|therefore|hence|total|altogether)\b|=", re.IGNORECASE)
_ALL_NUMBERS = re.compile(r"(?<![\w.,/])" + _NUMBER_TOKEN)


def _numbers(text: str, start: int = 0, end: int | None = None) -> list[str]:
    return [
        match.group().strip().rstrip(",")
        for match in _ALL_NUMBERS.finditer(text, start, len(text) if end is None else end)
    ]


def _last_sentence_answer(text: str, number: re.Match) -> str | None:
    """The answer in the sentence of the last number: a hedge between two numbers ("40, or maybe 45") is both (so
    it equals no single gold); "18 apples, 6 more than the 12 she had" is the number before the comparison."""
    start = max(text.rfind(". ", 0, number.start(1)), text.rfind("\n", 0, number.start(1))) + 1
    end = _SENTENCE_END.search(text, number.end(1))
    sentence = text[start : end.start() if end else len(text)]
    numbers = _numbers(sentence)
    if len(set(numbers)) >= 2 and _HEDGE.search(sentence):
        hedge = _HEDGE.search(sentence)
        before, after = _numbers(sentence, 0, hedge.start()), _numbers(sentence, hedge.end())
        if before and after and before[-1] != after[0]:
            return f"{before[-1]}, {after[0]}"
    comparison = _COMPARISON.search(sentence)
    if comparison is not None and not _CONCLUSION.search(sentence, comparison.end()):
        prefix = sentence[: comparison.start()]
        before = _numbers(prefix)
        if len(before) >= 2 and _TRAILING_NUMBER.search(prefix):  # "18 apples, 6 more than": the 6 is the gap
            return before[-2]
        if before:
            return before[-1]
    return None


_TOOL_OUTPUT = re.compile(r"```output\b.*?```", re.DOTALL)


def _after_tool_output(text: str) -> str | None:
    """After a tool's ```output block, the closing sentence states the answer ("Charmaine will be $8$ years old 4
    years from now"): its one math-mode number, else its first number."""
    blocks = list(_TOOL_OUTPUT.finditer(text[-20_000:]))
    if not blocks:
        return None
    tail = text[-20_000:][blocks[-1].end() :].strip()
    if not tail or "```" in tail:
        return None
    end = _SENTENCE_END.search(tail.replace("$.", "$ ."))
    sentence = tail[: end.start() if end else 400][:400]
    in_math = [content for content in re.findall(r"\$([^$]+)\$", sentence) if re.search(r"\d", content)]
    if len(in_math) == 1:
        return in_math[0].strip()
    numbers = _numbers(sentence)
    return numbers[0] if numbers else None


_WHOLE_MATH = re.compile(r"\s*(?:\$\$(.+)\$\$|\$(.+)\$|\\\[(.+)\\\]|\\\((.+)\\\))[\s.]*", re.DOTALL)


def _bare_answer(text: str) -> str | None:
    """A completion that is only an answer (`$[0,1)$`, `.4`, `x \\geq 5`): short, one math block or no prose."""
    if len(text) > 300:
        return None
    whole = _WHOLE_MATH.fullmatch(text)
    if whole is not None:
        content = next(group for group in whole.groups() if group is not None)
        if "$" not in content and "\\[" not in content and "\\(" not in content:
            return content.strip()
    stripped = text.strip()
    if not stripped or "\n" in stripped or "box" in stripped or not stripped.isascii():
        return None
    words = _BARE_WORD.findall(_TEXT_COMMAND.sub("", stripped))
    if not set(words) - {"or", "and", "pi", "ln"}:
        return stripped
    return None


_BARE_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_TEXT_COMMAND = re.compile(r"\\[A-Za-z]+|\\text\s*\{[^{}]*\}")


def _last_math_block(text: str) -> tuple[int, str] | None:
    """(end, content) of the math block (`$...$`, `$$...$$`, `\\(...\\)`, `\\[...\\]`) that ends last, found with
    `rfind` from the end so that unclosed delimiters cost linear time."""
    best = None
    for opening, closing in (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)")):
        end = text.rfind(closing)
        start = text.rfind(opening, 0, end) if end > 0 else -1
        if start >= 0 and (best is None or end + len(closing) > best[0]):
            best = (end + len(closing), text[start + len(opening) : end])
    end = text.rfind("$")
    start = text.rfind("$", 0, end) if end > 0 else -1
    if start >= 0 and text[start - 1 : start] != "$" and text[end + 1 : end + 2] != "$":
        content = text[start + 1 : end]
        if "\n" not in content and content.strip() and (best is None or end + 1 > best[0]):
            best = (end + 1, content)
    return best


def _last_answer_tag(text: str) -> str:
    """The content of the last `<answer>...</answer>` (or of a last, unclosed `<answer>`), stripped."""
    lowered = text.lower()
    close = lowered.rfind("</answer>")
    opening = lowered.rfind("<answer>")
    if close > opening >= 0:
        return text[opening + len("<answer>") : close].strip()
    if opening >= 0 and text[opening + len("<answer>") :].strip():
        return text[opening + len("<answer>") :].strip()
    opening = lowered.rfind("<answer>", 0, close) if close >= 0 else -1
    return text[opening + len("<answer>") : close].strip() if opening >= 0 else ""


def _after_last_marker(text: str) -> str | None:
    """The answer after the last "answer is"/"answer:" ("final answer is" included); occurrences are scanned from the
    end so that long completions cost one `lower()` and a few anchored matches."""
    lowered = text.lower()
    end = len(lowered)
    while (position := lowered.rfind("answer", 0, end)) >= 0:
        marker = _ANSWER_MARKER.match(text, position)
        if marker is not None and (position == 0 or not lowered[position - 1].isalpha()):
            return _reduce_span(text[marker.end() :])
        end = position
    return None


_END_OF_TURN = re.compile(r"<\|(?:im_end|im_start|endoftext|eot_id|end_of_text|end|user|assistant)\|>|</s>")


def _response(text: str) -> str:
    """The response up to its first end-of-turn token (`<|im_end|>`, `<|im_start|>user`, ...): what follows is not
    the model's answer. A token at the very start (a chat template's opening) is skipped."""
    if "<|" not in text and "</s>" not in text:
        return text
    for match in _END_OF_TURN.finditer(text):
        if text[: match.start()].strip():
            return text[: match.start()]
    return _END_OF_TURN.sub(" ", text)


def _extract(text: str, strict: bool) -> str | None:
    if "<answer>" in text or "<ANSWER>" in text:
        content = _last_answer_tag(text)
        if content:
            return _extract(content, strict=True) or _reduce_span(content) or content
    if "box" in text:
        boxes = _boxes(text)
        if boxes:
            tail = text[boxes[-1][1] :]
            if "nswer" in tail or "NSWER" in tail:  # "\boxed{255} ... Final Answer: the final answer is 10,455"
                marked = _after_last_marker(tail)
                if marked and re.search(r"\d", marked):
                    return marked
            return _last_boxed(text, boxes)
    hashes = text.rfind("####")
    if hashes >= 0:
        answer = _reduce_span(text[hashes + 4 :])
        if answer:
            return answer
    if "nswer" in text or "NSWER" in text:
        answer = _after_last_marker(text)
        if answer:
            return answer
    return None if strict else _fallback_answer(text)


def extract_answer(text: str, strict: bool = False) -> str | None:
    r"""The final answer in `text`, or None when there is none.

    Looks for `<answer>` tags, `\boxed{}`, `#### N` and "the answer is ..." in that order; in lenient mode
    (`strict=False`) falls back to the last number or math block. After a closing `</think>`, only the response
    after it counts: an answer that appears only inside the reasoning is no answer.
    """
    try:
        text = text if isinstance(text, str) else str(text)
        text = _response(text[-_MAX_TEXT_CHARS:])
        think_end = text.rfind("</think>")
        if think_end >= 0:  # reasoning is closed: the answer must be in the response after it
            return _extract(text[think_end + len("</think>") :], strict)
        return _extract(text, strict)
    except Exception:  # a reward must never crash a training step
        logger.debug("answer extraction failed", exc_info=True)
        return None


def _gold_text(gold: str) -> str | None:
    """The gold answer: a marked answer if there is one, else the text itself when short, else its last number."""
    marked = extract_answer(gold, strict=True)
    if marked is not None:
        return marked
    gold = gold.strip()
    if len(gold) <= 200 and not re.search(r"[.!?]\s+[A-Z]", gold):
        return gold or None
    return extract_answer(gold, strict=False)


def gold_answer(answer: str | None = None, solution: str | None = None) -> str | None:
    """The gold answer from a GSM8K rationale (`... #### N`), a LaTeX solution (`\\boxed{}`) or a plain answer."""
    for source in (answer, solution):
        if source is not None and str(source).strip():
            return _gold_text(str(source))
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Canonicalisation: one spelling per answer, so that most comparisons are string or number equality.

_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")
_SUPERSCRIPT_RUN = re.compile(r"[⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺]+")
_SYMBOLS = str.maketrans(
    {
        "\u2212": "-",
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\ufe63": "-",
        "\u00d7": r" \times ",
        "\u22c5": r" \cdot ",
        "\u00b7": r" \cdot ",
        "\u2219": r" \cdot ",
        "\u00f7": "/",
        "\u2044": "/",
        "\u2215": "/",
        "\u221a": r"\sqrt",
        "\u03c0": r"\pi ",
        "\u221e": r"\infty ",
        "\u2264": r" \leq ",
        "\u2265": r" \geq ",
        "\u2260": r" \neq ",
        "\u2248": r" \approx ",
        "\u00b0": r"^\circ ",
        "\u00b1": r" \pm ",
        "\u2213": r" \mp ",
        "\u222a": r" \cup ",
        "\u2229": r" \cap ",
        "\u2208": r" \in ",
        "\u2205": r"\emptyset ",
        "\u27e8": "(",
        "\u27e9": ")",
        "\u2019": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u20ac": " ",
        "\u00a3": " ",
        "\u00a5": " ",
        "\u20b9": " ",
        "\u200b": "",
        "\ufeff": "",
    }
)
_NON_ASCII = re.compile(r"[^\x00-\x7f]")

_LATEX_REWRITES = [
    (
        re.compile(r"\\\\(?=(?:[dtc]?frac|sqrt|left|right|boxed|text|mathrm|pi|cdot|times|infty|pm)(?![a-zA-Z]))"),
        r"\\",
    ),
    (re.compile(r"\\(?:left|right)\s*\."), r""),
    (re.compile(r"\\(?:left|right|[bB]igg?[lr]?|displaystyle|textstyle|scriptstyle|limits)(?![a-zA-Z])"), r""),
    (re.compile(r"\\[dtc]frac(?![a-zA-Z])"), r"\\frac"),
    (re.compile(r"\\langle(?![a-zA-Z])"), r"("),
    (re.compile(r"\\rangle(?![a-zA-Z])"), r")"),
    (re.compile(r"\{,\}|,\s*\\!\s*"), r","),
    (re.compile(r"(?<!\\)\\!"), r""),
    (re.compile(r"(?<!\\)\\(?:[,;: ]|q?quad(?![a-zA-Z]))|~"), r" "),
    (re.compile(r"\\%|\s*\b(?:percent(?:age)?|per\s+cent|pct)\b"), r"%"),
    (re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])"), r" degrees"),
    (re.compile(r"\\(?:dots|ldots|cdots)(?![a-zA-Z])|\.\.\.+"), r" \\ldots "),
    (re.compile(r"\\(?:le|leqslant|leqq)(?![a-zA-Z])|<="), r" \\leq "),
    (re.compile(r"\\(?:ge|geqslant|geqq)(?![a-zA-Z])|>="), r" \\geq "),
    (re.compile(r"\\ne(?![a-zA-Z])|!="), r" \\neq "),
    (re.compile(r"\\lt(?![a-zA-Z])"), r" < "),
    (re.compile(r"\\gt(?![a-zA-Z])"), r" > "),
    (re.compile(r"\\(?:varnothing|emptyset)(?![a-zA-Z])|\\\{\s*\\\}"), r"\\emptyset"),
    (re.compile(r"(?<![A-Za-z\\])sqrt\s*\(([^()]*)\)"), r"\\sqrt{\1}"),
    (re.compile(r"(?<![A-Za-z\\])pi(?![A-Za-z])"), r"\\pi "),
    (re.compile(r"(?<![a-zA-Z\\])(?:infinity|inf|oo)(?![a-zA-Z])|\\infty(?![a-zA-Z])"), r"\\infty"),
    (re.compile(r"\s*\\(?:pmod\s*\{[^{}]*\}|bmod\s*\d+|mod\s*\d+)|^\s*\\equiv"), r""),
    (re.compile(r"(?<=[)\]])\s*(?:U|\\cup)\s*(?=[(\[])"), r" \\cup "),
    (re.compile(r"\\\$|(?<!\\)\$"), r" "),
    (re.compile(r"\*\*|`"), r""),
    (re.compile(r"\b(?:negative|minus)\s+(?=\d)", re.IGNORECASE), r"-"),
    (re.compile(r"\s*\^\s*"), r"^"),
    (
        re.compile(r"(?<![\d.(\[{])(-?[1-9]\d{0,2})((?:,\d{3})+)(?![\d,])"),
        lambda m: m.group(1) + m.group(2).replace(",", r""),
    ),
    (
        re.compile(r"(?<![\d.,])([1-9]\d{0,2})((?: \d{3})+)(?![\d,/])"),
        lambda m: m.group(1) + m.group(2).replace(" ", r""),
    ),
    (re.compile(r"\s+"), r" "),
    (re.compile(r"(?<!\\)\{ | (?<!\\)(?=\})"), lambda m: m.group().strip()),
]
_TEXT_WRAPPER = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|textsf|texttt|mathrm|mathbf|mathit|mathsf|mathtt|mathcal|mathbb|"
    r"boldsymbol|bm|mbox|hbox|emph|operatorname)\s*\{([^{}]*)\}"
)
_OUTER_BOX = re.compile(r"^\\(?:boxed|fbox)\s*\{(.*)\}$", re.DOTALL)
_EDGE_PUNCTUATION = " \t\n.,;:?'\""  # not "!": `5!` is a factorial


def _clean_unicode(text: str) -> str:
    text = _SUPERSCRIPT_RUN.sub(lambda m: "^{" + m.group().translate(_SUPERSCRIPTS) + "}", text)
    text = unicodedata.normalize("NFKC", text).translate(_SYMBOLS)
    return _NON_ASCII.sub(lambda m: str(unicodedata.decimal(m.group(), "")) or m.group(), text)


def _strip_edges(text: str) -> str:
    """Drops surrounding punctuation and quotes (and a stray trailing `\\`), keeping the point of a leading decimal."""
    text = text.rstrip(_EDGE_PUNCTUATION + "\\").rstrip(_EDGE_PUNCTUATION)
    stripped = text.lstrip(_EDGE_PUNCTUATION)
    if stripped[:1].isdigit() and text[len(text) - len(stripped) - 1 : len(text) - len(stripped)] == ".":
        return "." + stripped
    return stripped


def _canonical(answer: str) -> str:
    """One spelling for an answer: unicode, LaTeX spacing and styling, `$`, thousands separators, punctuation."""
    text = answer if answer.isascii() else _clean_unicode(answer)
    for _ in range(3):
        unwrapped = _TEXT_WRAPPER.sub(r" \1", text)
        if unwrapped == text:
            break
        text = unwrapped
    for pattern, replacement in _LATEX_REWRITES:
        text = pattern.sub(replacement, text)
    text = _strip_edges(text)
    outer = _OUTER_BOX.match(text)
    if outer and _closing_braces(text).get(text.index("{")) == len(text) - 1:
        text = _strip_edges(outer.group(1))
    return re.sub(r"^(?:=|:|\\approx)\s*", "", text)


# ---------------------------------------------------------------------------------------------------------------------
# Parsing: canonical answer -> value.

_SEPARATOR_WORDS = re.compile(
    r"\s+(?:or|and|&)\s+|\s*,\s*(?:and|or)\s+|(?<=[)\]])\s*(?:or|and)\s*(?=[(\[])", re.IGNORECASE
)
_SEMICOLON = re.compile(r"\s*;\s*")
_RELATION_OPS = re.compile(r"\\(?:leq|geq|neq)(?![a-zA-Z])|(?<![\\{])[<>]")
_EQUATION_OPS = re.compile(r"=|\\approx(?![a-zA-Z])")
_ASSIGNABLE = re.compile(
    r"(?:\\?[A-Za-z]+(?:_\{?[A-Za-z0-9]+\}?)?'*(?:\([A-Za-z0-9, ]*\))?|\([A-Za-z](?:\s*,\s*[A-Za-z])+\))"
    r"|(?:\\angle|m\\angle)\s*[A-Z]{1,3}"
    r"|\|[A-Z]{1,3}\||\\overline\{[A-Z]{2}\}|\\frac\{[A-Z]{1,3}\}\{[A-Z]{1,3}\}"  # |PQ|, NO/BO
    r"|(?:[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?)(?::[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?)+"  # a:b, V_1:V_2
)
_DECIMAL_COMMA = re.compile(r"([+-]?\d+),(\d+)")
_CHOICE = re.compile(r"\(([A-Ea-e])\)\s*(\S.*)|([A-E])[.:)]\s+(\S.*)")
_BASED = re.compile(r"([0-9A-Za-z]+)_\{?\(?(\d{1,2})\)?\}?")
_COMMA = re.compile(r",")
_UNION = re.compile(r"\\cup(?![a-zA-Z])")
_MEMBERSHIP = re.compile(r"\\in(?![a-zA-Z])")
_PLUS_MINUS = re.compile(r"\\(?:pm|mp)(?![a-zA-Z])")
_SIGN = r"([+-])?\s*"
_UNSIGNED = r"(\d+(?:\.\d*)?|\.\d+)"
_SIGNED = r"([+-]?\s*(?:\d+(?:\.\d*)?|\.\d+))"
_ARG = r"(?:\{\s*" + _SIGNED + r"\s*\}|(\d))"
_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+)")
_SLASH_FRACTION = re.compile(_SIGN + r"\(?\s*" + _SIGNED + r"\s*\)?\s*/\s*\(?\s*" + _SIGNED + r"\s*\)?")
_LATEX_FRACTION = re.compile(_SIGN + r"\\frac\s*" + _ARG + r"\s*" + _ARG)
_MIXED = re.compile(
    _SIGN + r"(\d+)\s*(?:\\frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}|\s(\d+)\s*/\s*(\d+)|\\frac(\d)(\d))"
)
_SCIENTIFIC = re.compile(
    _SIGN
    + _UNSIGNED
    + r"\s*(?:[eE]\s*|(?:\\times|\\cdot|\*|x)\s*10\s*\^\s*|(?:\\times|\\cdot|\*|x)\s*10\s*\*\*\s*)"
    + r"(?:\{\s*([+-]?\d+)\s*\}|\(\s*([+-]?\d+)\s*\)|([+-]?\d+))"
)
_REPEATING = re.compile(_SIGN + r"(\d*)\.(\d*)\\overline\s*\{\s*(\d+)\s*\}")
_POWER = re.compile(_SIGN + r"(\d+)\s*\^\s*(?:\{\s*(\d+)\s*\}|(\d)(?!\d))")
_LEADING_WORDS = re.compile(
    r"^(?:(?:approximately|approx\.?|about|around|roughly|nearly|almost|exactly|only|just|a\s+total\s+of|total\s+of|"
    r"total|usd|us|eur|gbp|inr|rs\.?|\\approx|\\sim)\s*)+",
    re.IGNORECASE,
)
_SCALE_WORDS = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_SCALE = re.compile(r"^(.*?\d)\s*(thousand|million|billion|trillion)\b\s*(.*)$", re.IGNORECASE)
_UNIT_WORD = r"[A-Za-z][A-Za-z.'/-]*(?:\^\{?[23]\}?)?"
_SPACED_UNITS = re.compile(r"^(.*?[\d}%])\s+(" + _UNIT_WORD + r"(?:\s+" + _UNIT_WORD + r")*)$")
_ATTACHED_UNITS = re.compile(
    r"^(.*?\d)\s*((?:cm|mm|km|m|kg|mg|g|lbs?|oz|ft|in|mi|mph|kph|kmh|km/h|m/s|hrs?|h|mins?|s|secs?|ml|l|L|"
    r"yds?|sq|sqft|dollars?|cents?|euros?|pounds?|yen|rupees?|degrees?|units?|pcs|days?|years?|weeks?|months?)"
    r"(?:\^\{?[23]\}?|[23])?\.?)$"
)
_NOT_UNITS = set("pi e i x y z n k a b c d t r dx dy dz dt sqrt ldots infty or and".split())  # math words, not units
_SIGN_SPACE = re.compile(r"^([+-])\s+")
_NUMBER_WORDS = {
    word: value
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen".split()
    )
} | {
    word: 10 * (index + 2)
    for index, word in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())
}
_WORDS_ONLY = re.compile(r"[A-Za-z][A-Za-z\s'.-]*")
_CLOCK_TIME = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\s*([ap])\.?\s*m\.?)?", re.IGNORECASE)
_ARTICLES = re.compile(r"^(?:the|a|an)\s+")
_BIG_EXPONENT = re.compile(r"\^\s*[{(]?\s*[+-]?\d{4,}")
_STACKED_POWER = re.compile(r"\^\s*(?:[\w.]+|\\[A-Za-z]+)\s*\^")
_FACTORIAL = re.compile(r"(\d+|[)}])\s*!")
_LONG_NUMBER = re.compile(r"\d{200,}|\d\s*[eE]\s*[+-]?\d{4,}")


def _fraction(text: str) -> Fraction:
    return Fraction(text.replace(" ", ""))


def _decimals(text: str) -> int | None:
    return len(text) - text.index(".") - 1 if "." in text else None


def _number(text: str) -> Number | None:
    """Exact numbers in their usual spellings; None for anything else (including `1/0` and 5000-digit integers)."""
    try:
        return _parse_number(text)
    except (ZeroDivisionError, ValueError):
        return None


def _parse_number(text: str) -> Number | None:
    if _INTEGER.fullmatch(text):
        return Number(Fraction(int(text)), text)
    if _DECIMAL.fullmatch(text):
        return Number(Fraction(text), text, _decimals(text))
    if match := _LATEX_FRACTION.fullmatch(text):
        sign, numerator, numerator_digit, denominator, denominator_digit = match.groups()
        value = _fraction(numerator or numerator_digit) / _fraction(denominator or denominator_digit)
        latex = f"{sign or ''}\\frac{{{numerator or numerator_digit}}}{{{denominator or denominator_digit}}}"
        return Number(-value if sign == "-" else value, latex)
    if match := _SLASH_FRACTION.fullmatch(text):
        sign, numerator, denominator = match.groups()
        value = _fraction(numerator) / _fraction(denominator)
        return Number(-value if sign == "-" else value, f"{sign or ''}\\frac{{{numerator}}}{{{denominator}}}")
    if match := _MIXED.fullmatch(text):
        sign, whole, *parts = match.groups()
        numerator, denominator = [part for part in parts if part is not None]
        if int(numerator) >= int(denominator):
            return None
        value = int(whole) + Fraction(int(numerator), int(denominator))
        latex = f"{sign or ''}({whole}+\\frac{{{numerator}}}{{{denominator}}})"
        return Number(-value if sign == "-" else value, latex)
    if match := _SCIENTIFIC.fullmatch(text):
        sign, mantissa, *exponents = match.groups()
        exponent = next(part for part in exponents if part is not None)
        if len(exponent.lstrip("+-")) > 3 or abs(int(exponent)) > _MAX_EXPONENT_DIGITS:
            return None
        value = Fraction(mantissa) * Fraction(10) ** int(exponent)
        places = _decimals(mantissa)
        return Number(
            -value if sign == "-" else value,
            f"{sign or ''}{mantissa}\\times10^{{{exponent}}}",
            None if places is None else places - int(exponent),
        )
    if match := _REPEATING.fullmatch(text):  # 0.1\overline{6} = 1/6
        sign, whole, fixed, repeated = match.groups()
        shift = 10 ** len(fixed)
        value = int(whole or 0) + Fraction(int(fixed or 0), shift)
        value += Fraction(int(repeated), (10 ** len(repeated) - 1) * shift)
        return Number(
            -value if sign == "-" else value, f"{sign or ''}\\frac{{{value.numerator}}}{{{value.denominator}}}"
        )
    if match := _POWER.fullmatch(text):
        sign, base, exponent, exponent_digit = match.groups()
        exponent = exponent or exponent_digit
        if len(exponent) > 4 or int(exponent) * len(base) > _MAX_EXPONENT_DIGITS:
            return None
        value = Fraction(int(base) ** int(exponent))
        return Number(-value if sign == "-" else value, f"{sign or ''}{base}^{{{exponent}}}")
    return None


def _number_words(text: str) -> Number | None:
    """ "five", "twenty-one", "negative three", "two hundred and five", "three thousand"."""
    words = [word for word in re.split(r"[\s-]+", text.lower().strip()) if word != "and"]
    sign = -1 if words and words[0] in ("negative", "minus") else 1
    words = words[1:] if sign < 0 else words
    total = current = 0
    for word in words:
        if word in _NUMBER_WORDS:
            current += _NUMBER_WORDS[word]
        elif word == "hundred" and current:
            current *= 100
        elif word == "dozen":
            current = (current or 1) * 12
        elif word in _SCALE_WORDS and current:
            total, current = total + current * _SCALE_WORDS[word], 0
        else:
            return None
    if not words:
        return None
    value = sign * (total + current)
    return Number(Fraction(value), str(value))


def _strip_trailing_units(text: str) -> str:
    """ "18 apples" -> "18", "15 cm^2" -> "15", "12kg" -> "12"; words that may be math ("2 pi") stay."""
    for pattern in (_SPACED_UNITS, _ATTACHED_UNITS):
        match = pattern.match(text)
        if match and not ({re.sub(r"\^.*", "", word) for word in match.group(2).lower().split()} & _NOT_UNITS):
            return match.group(1).strip()
    return text


def _leaf(text: str) -> Any:
    """A number (possibly a percentage), infinity, text, or an expression for sympy."""
    core = _LEADING_WORDS.sub("", text).strip()
    scale = 1
    if (match := _SCALE.match(core)) and (not match.group(3) or _strip_trailing_units("1 " + match.group(3)) == "1"):
        core, scale = match.group(1).strip(), _SCALE_WORDS[match.group(2).lower()]
    else:
        core = _strip_trailing_units(core)
    percent = core.endswith("%")
    if percent:
        core = _strip_trailing_units(core[:-1].strip())
    core = _SIGN_SPACE.sub(r"\1", core)
    number = _number(core)
    if number is None and _WORDS_ONLY.fullmatch(core):
        number = _number_words(core)
    if number is not None:
        if scale != 1:
            number = Number(number.value * scale, f"{number.latex}\\times{scale}")
        if percent:
            return Percent(number, Number(number.value / 100, f"\\frac{{{number.latex}}}{{100}}"))
        return number
    if core in ("\\infty", "+\\infty", "-\\infty"):
        return Infinite(-1 if core.startswith("-") else 1)
    if (tower := _tower(core)) is not None:
        return tower
    if (based := _BASED.fullmatch(core)) and core[0].isdigit() and 2 <= int(based.group(2)) <= 36:
        try:
            return Based(based.group(1).lower(), int(based.group(2)), int(based.group(1), int(based.group(2))))
        except ValueError:  # a digit the base does not have: `129_8`
            return Text(core.lower())
    if clock := _CLOCK_TIME.fullmatch(text.strip()):
        return _clock(clock)
    if _WORDS_ONLY.fullmatch(text):
        return Text(_ARTICLES.sub("", text.lower().strip(" .'")))
    if percent and core and scale == 1:
        return Percent(Expr(core), Expr(f"\\frac{{{core}}}{{100}}"))
    return Expr(core if core and scale == 1 else text)  # units dropped: `12\sqrt{2} cm` -> `12\sqrt{2}`


_TOWER = re.compile(r"\d+(?:\^\{?\d+)+\}*")
_MAX_EXPANDED_DIGITS = 10_000


def _tower(text: str) -> Number | Tower | None:
    """`3^3^3`, `3^{3^{3}}`: expanded to a Number when it has at most 10k digits, else a `Tower`."""
    squashed = re.sub(r"\s*([\^{}])\s*", r"\1", text)  # a space elsewhere is a product: `2^6 3^5`
    if "^" not in squashed or _TOWER.fullmatch(squashed) is None:
        return None
    if squashed.count("{") != squashed.count("}") or re.search(r"\}[^}]", squashed):
        return None
    levels = tuple(int(level.strip("{}")) for level in squashed.split("^"))
    value = _expand_tower(levels, _MAX_EXPANDED_DIGITS)
    return Tower(levels) if value is None else Number(Fraction(value), f"{value}")


def _expand_tower(levels: tuple[int, ...], max_digits: int) -> int | None:
    """The value of a right-associative tower, or None when it has more than `max_digits` digits."""
    value = levels[-1]
    for base in reversed(levels[:-1]):
        if base in (0, 1) or value == 0:
            value = 1 if value == 0 else base
            continue
        if value * math.log10(base) > max_digits:
            return None
        value = base**value
    return value


def _perfect_power(number: int) -> tuple[int, int]:
    """(root, k) with root**k == number and root as small as possible."""
    for k in range(max(number.bit_length(), 1), 1, -1):
        root = round(number ** (1 / k)) if number.bit_length() < 1000 else _integer_root(number, k)
        for candidate in (root - 1, root, root + 1):
            if candidate > 1 and candidate**k == number:
                return _perfect_power(candidate)[0], k * _perfect_power(candidate)[1]
    return number, 1


def _integer_root(number: int, k: int) -> int:
    low, high = 1, 1 << (number.bit_length() // k + 1)
    while low < high:
        middle = (low + high + 1) // 2
        if middle**k <= number:
            low = middle
        else:
            high = middle - 1
    return low


def _towers_equal(pred: Tower | Number, gold: Tower | Number) -> bool:
    """Exact equality of towers: each is root**exponent with a minimal root, exponents expanded only when small."""
    forms = []
    for value in (pred, gold):
        if isinstance(value, Number):
            if value.value.denominator != 1 or value.value < 2:
                return False
            forms.append(_perfect_power(int(value.value)))
            continue
        root, k = _perfect_power(value.levels[0])
        exponent = _expand_tower(value.levels[1:], 100_000)
        forms.append((root, None if exponent is None else k * exponent))
    if forms[0][1] is None or forms[1][1] is None:  # too large even for the exponents: only the same tower
        return isinstance(pred, Tower) and isinstance(gold, Tower) and pred.levels == gold.levels
    return forms[0] == forms[1]


def _clock(match: re.Match) -> Text:
    """A clock time in one spelling: `9:05 P.M.` = `21:05` = `21:05:00`."""
    hours, minutes, seconds, half = match.groups()
    hours = int(hours)
    if half is not None:
        hours = hours % 12 + (12 if half.lower() == "p" else 0)
    return Text(f"{hours:02d}:{minutes}:{seconds or '00'}")


def _split_top_level(text: str, separators: re.Pattern) -> list[str]:
    """Splits at separators outside any brackets."""
    parts, depth, start, index = [], 0, 0, 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text) and text[index + 1] in "{}":
            depth += 1 if text[index + 1] == "{" else -1
            index += 2
            continue
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            match = separators.match(text, index)
            if match and match.end() > index:
                parts.append(text[start:index])
                start = index = match.end()
                continue
        index += 1
    parts.append(text[start:])
    return parts


def _enclosing(text: str) -> tuple[str, str, str] | None:
    """(opening, inner, closing) when one bracket pair encloses all of `text`: `(1, 2]`, `\\{1\\}`."""
    if text.startswith("\\{") and text.endswith("\\}"):
        opening, inner, closing = "{", text[2:-2], "}"
    elif text[:1] in "([" and text[-1:] in ")]":
        opening, inner, closing = text[0], text[1:-1], text[-1]
    elif text[:1] == "{" and text[-1:] == "}":
        opening, inner, closing = "", text[1:-1], ""
    else:
        return None
    depth = 0
    for char in inner:
        depth += char in "([{"
        depth -= char in ")]}"
        if depth < 0:
            return None
    return (opening, inner, closing) if depth == 0 else None


def _plus_minus(text: str) -> Any:
    """`a \\pm b` -> the unordered pair {a + b, a - b}."""
    parts = _split_top_level(text, _PLUS_MINUS)
    if len(parts) != 2:
        return Expr(text)
    base, offset = parts[0].strip(), parts[1].strip()
    base_value, offset_value = _leaf(base or "0"), _leaf(offset)
    if isinstance(base_value, Number) and isinstance(offset_value, Number):
        items = (
            Number(base_value.value + offset_value.value, f"{base_value.latex}+{offset_value.latex}"),
            Number(base_value.value - offset_value.value, f"{base_value.latex}-({offset_value.latex})"),
        )
    else:
        term = offset if re.fullmatch(r"[^+\-]*", offset) else f"({offset})"
        items = (Expr(f"{base}+{term}" if base else term), Expr(f"{base}-{term}" if base else f"-{term}"))
    return Sequence("", "", items)


def _relation(text: str, depth: int) -> Any:
    """`x = 5`, `x = 2 + 3 = 5`, `x \\approx 1.41`, `2x + 3 = 7` (kept whole for sympy)."""
    parts = _split_top_level(text, _EQUATION_OPS)
    if len(parts) < 2:
        return None
    operators = _EQUATION_OPS.findall(text)
    lhs = parts[0].strip()
    if not lhs:
        return _parse(parts[-1], depth + 1)
    assignment = _assignable(lhs)
    approximate = [index for index, operator in enumerate(operators) if operator != "="]
    if approximate and approximate[0] == 0 and not assignment:  # `\frac{\sqrt3}{3} \approx 0.577` is its exact value
        return _parse(lhs, depth + 1)
    if approximate:  # `x = 1/3 \approx 0.33`: the exact value before it
        value_index = max(approximate[0], 1)
    else:
        value_index = len(parts) - 1
    rhs = parts[-1].strip()
    if not assignment and len(parts) == 2 and _assignable(rhs):  # `5 = x`, `2x + 3 = y`
        return Relation(rhs.replace(" ", ""), _parse(lhs, depth + 1), True, text)
    return Relation(lhs.replace(" ", ""), _parse(parts[value_index], depth + 1), assignment, text)


def _assignable(side: str) -> bool:
    """A plain variable (`x`, `x_1`, `\\theta`, `f(3)`, `(p, q)`) that an equation can assign a value to."""
    return len(side) <= 24 and _ASSIGNABLE.fullmatch(side) is not None


def _parse(text: str, depth: int = 0) -> Any:
    text = _strip_edges(text) if depth else text
    if depth > _MAX_NESTING or len(text) > _MAX_ANSWER_CHARS:
        return Text(text)
    if not text:
        return Text("")
    if "\\begin{" in text:  # matrices and arrays: `&` and `\\\\` are not list separators
        return Expr(text)
    if text == "\\emptyset":
        return Sequence("{", "}", ())
    if (decimal_comma := _DECIMAL_COMMA.fullmatch(text)) and not text.startswith(("+", "-")):
        whole, fraction_digits = decimal_comma.groups()
        decimal = _number(f"{whole}.{fraction_digits}")
        return Either((decimal, Sequence("", "", (_leaf(whole), _leaf(fraction_digits)))))
    parts = _split_top_level(text, _SEPARATOR_WORDS)
    if len(parts) == 1 and len(groups := _split_top_level(text, _SEMICOLON)) > 1:  # `p=5,q=2; p=7,q=2`
        return Sequence("", "", tuple(_parse_group(group, depth + 1) for group in groups[:_MAX_SEQUENCE_ITEMS]))
    if len(parts) == 1:
        parts = _split_top_level(text, _COMMA)
    parts = [part for part in parts if part.strip()]
    if len(parts) > 1:
        items = tuple(_parse(part, depth + 1) for part in parts[:_MAX_SEQUENCE_ITEMS])
        return Sequence("", "", _flatten(items))
    if len(unions := _split_top_level(text, _UNION)) > 1:
        return Sequence("cup", "cup", tuple(_parse(part, depth + 1) for part in unions[:_MAX_SEQUENCE_ITEMS]))
    membership = _split_top_level(text, _MEMBERSHIP)
    if len(membership) == 2:
        return _parse(membership[1], depth + 1)
    if _split_top_level(text, _RELATION_OPS)[1:]:
        return Expr(text)
    if (relation := _relation(text, depth)) is not None:
        return relation
    if len(_split_top_level(text, _PLUS_MINUS)) > 1:
        return _plus_minus(text)
    if choice := _CHOICE.fullmatch(text):  # "(B) 12", "B. 12" answer a multiple-choice gold "B" and a gold "12"
        letter, content = choice.group(1) or choice.group(3), choice.group(2) or choice.group(4)
        return Either((Text(letter.lower()), _parse(content, depth + 1)))
    if enclosed := _enclosing(text):
        opening, inner, closing = enclosed
        items = [part for part in _split_top_level(inner, _COMMA) if part.strip()]
        if len(items) == 1 and ";" in inner:  # `(0;-2;6)`
            items = [part for part in _split_top_level(inner, _SEMICOLON) if part.strip()]
        if opening in ("(", "") and len(items) == 1:
            return _parse(inner, depth + 1)
        parsed = tuple(_parse(item, depth + 1) for item in items[:_MAX_SEQUENCE_ITEMS])
        return Sequence(opening, closing, _flatten(parsed) if opening in ("{", "") else parsed)
    return _leaf(text)


def _parse_group(text: str, depth: int) -> Any:
    """One `;`-separated group: several comma-separated values form a tuple (`p=5, q=2` -> (5, 2))."""
    items = [part for part in _split_top_level(text, _COMMA) if part.strip()]
    if len(items) == 1:
        return _parse(text, depth)
    values = tuple(_parse(item, depth + 1) for item in items[:_MAX_SEQUENCE_ITEMS])
    return Sequence("(", ")", tuple(value.value if isinstance(value, Relation) else value for value in values))


def _flatten(items: tuple) -> tuple:
    """Unordered lists absorb nested bare lists: `x = \\pm 2, 3` -> {2, -2, 3}."""
    flat = []
    for item in items:
        if isinstance(item, Relation) and item.assignment:
            item = item.value
        if isinstance(item, Either) and isinstance(item.options[-1], Sequence):  # `21,16 or 11`: a list, not 21.16
            item = item.options[-1]
        if isinstance(item, Sequence) and item.opening == "":
            flat.extend(item.items)
        else:
            flat.append(item)
    return tuple(flat)


@lru_cache(maxsize=1 << 16)
def _value(answer: str) -> Any:
    return _parse(_canonical(answer[:_MAX_ANSWER_CHARS]))


@lru_cache(maxsize=1 << 14)
def _gold_value(gold: str) -> tuple[str | None, Any]:
    answer = _gold_text(gold)
    return answer, (_value(answer) if answer is not None else None)


# ---------------------------------------------------------------------------------------------------------------------
# Comparison. Results are True, False, or None ("undecided": needs the symbolic path).


def _squash(text: str) -> str:
    return re.sub(r"\s+|\\(?=[{}])", "", text).lower()


def _symbolic_safe(latex: str) -> bool:
    """Refuses what can stall sympy: long input, deep nesting, huge or stacked powers, big factorials."""
    if len(latex) > _MAX_SYMBOLIC_CHARS or _BIG_EXPONENT.search(latex) or _STACKED_POWER.search(latex):
        return False
    depth = 0
    for char in latex:
        depth += char in "({["
        depth -= char in ")}]"
        if depth > _MAX_NESTING:
            return False
    closing_braces = _closing_braces(latex)
    for index, char in enumerate(latex):
        if char == "^" and (opening := latex[index + 1 : index + 2]) in ("{", "("):
            closing = closing_braces.get(index + 1, -1) if opening == "{" else latex.find(")", index)
            if closing < 0 or "^" in latex[index + 1 : closing] or "!" in latex[index + 1 : closing]:
                return False
    for match in _FACTORIAL.finditer(latex):
        if match.group(1).isdigit():
            if int(match.group(1)) > 500:
                return False
        elif not re.search(r"[A-Za-z]", latex[max(0, match.start() - 30) : match.start()]):
            return False  # `(10^6)!`; a symbolic `(x + 1)!` is cheap
    return not _LONG_NUMBER.search(latex)


def _leaf_latex(value: Any) -> str | None:
    if isinstance(value, Number):
        return value.latex
    if isinstance(value, Expr):
        return value.latex
    return None


def _numbers_equal(pred: Number, gold: Number) -> bool:
    if pred.value == gold.value:
        return True
    for approximate, exact in ((pred, gold), (gold, pred)):
        if approximate.decimals is not None and approximate.decimals >= 3 and exact.decimals is None:
            if abs(exact.value - approximate.value) * 2 * 10**approximate.decimals <= 1:
                return True
    return False


def _fast_leaf_equal(pred: Any, gold: Any) -> bool | None:
    if isinstance(pred, Number) and isinstance(gold, Number):
        return _numbers_equal(pred, gold)
    if isinstance(pred, Based) or isinstance(gold, Based):
        return _based_equal(pred, gold)
    if isinstance(pred, Tower) or isinstance(gold, Tower):
        return isinstance(pred, Tower | Number) and isinstance(gold, Tower | Number) and _towers_equal(pred, gold)
    if isinstance(pred, Infinite) or isinstance(gold, Infinite):
        return isinstance(pred, Infinite) and isinstance(gold, Infinite) and pred.sign == gold.sign
    if (letter := _single_letter(pred, gold)) is not None:  # `b` against `a + b - a`: a variable, not a word
        pred, gold = letter
    if isinstance(pred, Text) or isinstance(gold, Text):
        pred_text = pred.text if isinstance(pred, Text) else _leaf_latex(pred) or ""
        gold_text = gold.text if isinstance(gold, Text) else _leaf_latex(gold) or ""
        return _squash(pred_text) == _squash(gold_text)
    pred_latex, gold_latex = _leaf_latex(pred), _leaf_latex(gold)
    if pred_latex is None or gold_latex is None:
        return False
    if _squash(pred_latex) == _squash(gold_latex):
        return True
    if not (_symbolic_safe(pred_latex) and _symbolic_safe(gold_latex)):
        return False
    return None


def _single_letter(pred: Any, gold: Any) -> tuple[Any, Any] | None:
    """A one-letter Text as an expression when the other side is one (`e` against `\\sum 1/n!`)."""
    pair = []
    for value, other in ((pred, gold), (gold, pred)):
        if isinstance(value, Text) and len(value.text) == 1 and isinstance(other, Expr):
            value = Expr(value.text)
        pair.append(value)
    return (pair[0], pair[1]) if pair != [pred, gold] else None


def _based_equal(pred: Any, gold: Any) -> bool:
    """`101_2` = `5_{10}` = `101_2`; against a bare number only the same digits (the base left out) or base 10."""
    if isinstance(pred, Based) and isinstance(gold, Based):
        return pred.value == gold.value
    based, other = (pred, gold) if isinstance(pred, Based) else (gold, pred)
    if not isinstance(other, Number) or other.value.denominator != 1:
        return False
    return other.latex.lstrip("+") == based.digits or (based.base == 10 and other.value == based.value)


def _all(results: list[bool | None]) -> bool | None:
    if any(result is False for result in results):
        return False
    return None if any(result is None for result in results) else True


def _any(results: list[bool | None]) -> bool | None:
    if any(result is True for result in results):
        return True
    return None if any(result is None for result in results) else False


def _match_unordered(pred: tuple, gold: tuple, leaf_equal) -> bool | None:
    """Multiset equality under `_compare`; a perfect matching is searched by augmenting paths."""
    if len(pred) != len(gold):
        return False
    table = [[_compare(p, g, leaf_equal) for g in gold] for p in pred]

    def perfect(accept_undecided: bool) -> bool:
        owner: dict[int, int] = {}

        def augment(row: int, seen: set[int]) -> bool:
            for column, result in enumerate(table[row]):
                if column in seen or not (result is True or (accept_undecided and result is None)):
                    continue
                seen.add(column)
                if column not in owner or augment(owner[column], seen):
                    owner[column] = row
                    return True
            return False

        return all(augment(row, set()) for row in range(len(pred)))

    if perfect(accept_undecided=False):
        return True
    return None if perfect(accept_undecided=True) else False


def _compare(pred: Any, gold: Any, leaf_equal) -> bool | None:
    """Structural equality; `leaf_equal` compares leaves (fast: numbers only; symbolic: sympy too)."""
    if type(pred) is Number and type(gold) is Number:  # the common case, first
        return leaf_equal(pred, gold)
    if isinstance(gold, Either):
        return _any([_compare(pred, option, leaf_equal) for option in gold.options])
    if isinstance(pred, Either):
        return _any([_compare(option, gold, leaf_equal) for option in pred.options])
    if isinstance(gold, Percent) and isinstance(pred, Percent):
        return _compare(pred.plain, gold.plain, leaf_equal)
    if isinstance(gold, Percent):
        return _any([_compare(pred, gold.plain, leaf_equal), _compare(pred, gold.scaled, leaf_equal)])
    if isinstance(pred, Percent):
        return _any([_compare(pred.plain, gold, leaf_equal), _compare(pred.scaled, gold, leaf_equal)])
    if isinstance(pred, Relation) and isinstance(gold, Relation):
        if pred.assignment and gold.assignment:
            if pred.lhs != gold.lhs and (pred := _as_function_of(pred, gold)) is None:
                return False
            return _compare(pred.value, gold.value, leaf_equal)
        if _squash(pred.latex) == _squash(gold.latex):
            return True
        return leaf_equal(Expr(pred.latex), Expr(gold.latex))
    if isinstance(pred, Relation):
        return _compare(pred.value, gold, leaf_equal)
    if isinstance(gold, Relation):
        return _compare(pred, gold.value, leaf_equal) if gold.assignment else False
    if isinstance(pred, Sequence) or isinstance(gold, Sequence):
        inequality = pred if isinstance(pred, Expr) else gold if isinstance(gold, Expr) else None
        if inequality is not None and _split_top_level(inequality.latex, _RELATION_OPS)[1:]:
            # `1 < x < 3` against `(1, 3)`: sympy turns the inequality into a set
            return leaf_equal(Expr(_latex_of(pred)), Expr(_latex_of(gold)))
        return _compare_sequences(pred, gold, leaf_equal)
    return leaf_equal(pred, gold)


_FUNCTION_HEAD = re.compile(r"([A-Za-z])(?:\(([a-z])\))?")


def _function_variable(lhs: str) -> str | None:
    """The variable of a function written `f(t)` (or `y`, a function of x); None for a plain unknown like `x`."""
    head = _FUNCTION_HEAD.fullmatch(lhs)
    if head is None:
        return None
    return head.group(2) or ("x" if head.group(1) == "y" else None)


def _as_function_of(pred: Relation, gold: Relation) -> Relation | None:
    """`g(t) = 3t + 1` read as an answer to `y = ...` or `f(x) = ...`: the same function with x for t."""
    pred_variable, gold_variable = _function_variable(pred.lhs), _function_variable(gold.lhs)
    if pred_variable is None or gold_variable is None:
        return None
    body = _split_top_level(pred.latex, _EQUATION_OPS)[-1]
    if pred_variable != gold_variable:
        if re.search(rf"(?<![A-Za-z\\]){gold_variable}(?![A-Za-z])", body):
            return None
        body = re.sub(rf"(?<![A-Za-z\\]){pred_variable}(?![A-Za-z])", gold_variable, body)
    return Relation(gold.lhs, _value(body), True, f"{gold.lhs}={body}")


def _latex_of(value: Any) -> str:
    """LaTeX for a parsed value, for handing a whole structure to sympy."""
    if isinstance(value, Sequence):
        items = ", ".join(_latex_of(item) for item in value.items)
        if value.opening == "cup":
            return " \\cup ".join(_latex_of(item) for item in value.items)
        if value.opening == "{":
            return f"\\{{{items}\\}}"
        return f"{value.opening}{items}{value.closing}"
    if isinstance(value, Infinite):
        return "\\infty" if value.sign > 0 else "-\\infty"
    if isinstance(value, Text):
        return f"\\text{{{value.text}}}"
    return getattr(value, "latex", "")


def _all_inequalities(items: tuple) -> bool:
    return all(isinstance(item, Expr) and _split_top_level(item.latex, _RELATION_OPS)[1:] for item in items)


def _compare_sequences(pred: Any, gold: Any, leaf_equal) -> bool | None:
    if not isinstance(pred, Sequence):
        pred, gold = gold, pred
    if not isinstance(gold, Sequence):
        if pred.opening in ("", "{") and len(pred.items) == 1:
            return _compare(pred.items[0], gold, leaf_equal)
        return False
    if not pred.ordered and not gold.ordered:  # sets: the same item twice is once
        pred = Sequence(pred.opening, pred.closing, tuple(dict.fromkeys(pred.items)))
        gold = Sequence(gold.opening, gold.closing, tuple(dict.fromkeys(gold.items)))
    if len(pred.items) != len(gold.items):
        return False
    if not pred.ordered and not gold.ordered:
        if (pred.opening == "cup") != (gold.opening == "cup") and not (
            _all_inequalities(pred.items) or _all_inequalities(gold.items)
        ):  # a union equals a list of inequalities ("x < -2 or x > 3"), not a list of numbers
            return False
        return _match_unordered(pred.items, gold.items, leaf_equal)
    if pred.ordered and gold.ordered:
        if (pred.opening, pred.closing) != (gold.opening, gold.closing):
            return False
    elif {pred.opening, gold.opening} != {"(", ""}:
        return False
    return _all([_compare(p, g, leaf_equal) for p, g in zip(pred.items, gold.items, strict=True)])


def _symbolic_leaf_equal(pred: Any, gold: Any) -> bool:
    """Leaf equality with sympy (through math-verify's LaTeX parser), under the same policies as the fast path."""
    if (letter := _single_letter(pred, gold)) is not None:
        pred, gold = letter
    if isinstance(pred, Text | Infinite | Based | Tower) or isinstance(gold, Text | Infinite | Based | Tower):
        return bool(_fast_leaf_equal(pred, gold))
    pred_latex, gold_latex = _leaf_latex(pred), _leaf_latex(gold)
    if pred_latex is None or gold_latex is None or not (_symbolic_safe(pred_latex) and _symbolic_safe(gold_latex)):
        return False
    if _squash(pred_latex) == _squash(gold_latex):
        return True
    import sympy

    pred_expr, gold_expr = _sympy_parse(pred_latex), _sympy_parse(gold_latex)
    if pred_expr is None or gold_expr is None:
        return False
    for approximate, approximate_latex, exact in (
        (pred_expr, pred_latex, gold_expr),
        (gold_expr, gold_latex, pred_expr),
    ):
        places = _decimals(approximate_latex) if _DECIMAL.fullmatch(approximate_latex) else None
        other_is_decimal = _DECIMAL.fullmatch(gold_latex if exact is gold_expr else pred_latex) is not None
        if places is not None and places >= 3 and not other_is_decimal and getattr(exact, "is_number", False):
            error = sympy.Abs(sympy.N(exact - approximate, 30))
            if error.is_number and 2 * error * 10**places <= 1 + sympy.Rational(1, 10**12):
                return True
    pred_expr, gold_expr = _exact_forms(pred_expr, gold_expr)
    return _sympy_equal(pred_expr, gold_expr)


def _exact_forms(pred: Any, gold: Any) -> tuple[Any, Any]:
    """Decimals inside expressions as exact rationals, and `i` as the imaginary unit where it is the only symbol."""
    import sympy

    forms = []
    for expr in (pred, gold):
        floats = expr.atoms(sympy.Float) if hasattr(expr, "atoms") else set()
        forms.append(expr.xreplace({value: sympy.Rational(str(value)) for value in floats}) if floats else expr)
    symbols = set().union(*(getattr(expr, "free_symbols", set()) for expr in forms))
    if {symbol.name for symbol in symbols} == {"i"}:
        forms = [expr.subs({symbol: sympy.I for symbol in symbols}) for expr in forms]
    return forms[0], forms[1]


def _sympy_equal(pred: Any, gold: Any) -> bool:
    """Exact equality of two sympy objects: no floating-point tolerance (`1/3^120` is not `1/3^121`), and anything
    sympy cannot prove equal is unequal."""
    import sympy
    from sympy.matrices import MatrixBase
    from sympy.matrices.expressions import MatrixExpr

    if isinstance(pred, MatrixBase | MatrixExpr) or isinstance(gold, MatrixBase | MatrixExpr):
        pred, gold = (value.doit() if isinstance(value, MatrixExpr) else value for value in (pred, gold))
        if not (isinstance(pred, MatrixBase) and isinstance(gold, MatrixBase)) or pred.shape != gold.shape:
            return False
        return all(_scalar_equal(p, g) for p, g in zip(pred, gold, strict=True))
    relational = (sympy.core.relational.Relational, sympy.And)
    if isinstance(pred, sympy.Set) or isinstance(gold, sympy.Set):
        pred_set, gold_set = _as_set(pred), _as_set(gold)
        if pred_set is None or gold_set is None:
            return False
        return pred_set == gold_set or (
            sympy.Complement(pred_set, gold_set) == sympy.S.EmptySet
            and sympy.Complement(gold_set, pred_set) == sympy.S.EmptySet
        )
    if isinstance(pred, relational) or isinstance(gold, relational):
        return isinstance(pred, relational) and isinstance(gold, relational) and _relations_equal(pred, gold)
    if not (isinstance(pred, sympy.Expr) and isinstance(gold, sympy.Expr)):
        return pred == gold
    return _scalar_equal(pred, gold)


def _scalar_equal(pred: Any, gold: Any) -> bool:
    import sympy

    pred, gold = pred.doit(), gold.doit()  # sums, integrals, limits written out
    difference = pred - gold
    if difference == 0:
        return True
    if not difference.free_symbols:
        value = sympy.N(difference, 50)
        if not value.is_number or (value.is_comparable and abs(value) > sympy.Rational(1, 10**40)):
            return False
    return sympy.simplify(difference) == 0 or difference.equals(0) is True


def _as_set(value: Any) -> Any:
    """An interval, union or finite set; a one-variable inequality as its solution set over the reals."""
    import sympy

    if isinstance(value, sympy.Set):
        return value
    if isinstance(value, sympy.core.relational.Relational | sympy.And) and len(value.free_symbols) == 1:
        return value.as_set()
    return None


def _relations_equal(pred: Any, gold: Any) -> bool:
    """Equations are equal when one side-difference is a nonzero constant multiple of the other (`3y = 9x - 6` is
    `y = 3x - 2`); inequalities when they have the same solution set (one variable) or one normalised side-difference
    is a positive multiple of the other (`-2x > -4` is `x < 2`)."""
    import sympy
    from sympy.core.relational import Equality, GreaterThan, LessThan, StrictGreaterThan, StrictLessThan, Unequality

    if isinstance(pred, Equality | Unequality) or isinstance(gold, Equality | Unequality):
        if type(pred) is not type(gold):
            return False
        pred_side, gold_side = pred.lhs - pred.rhs, gold.lhs - gold.rhs
        if pred_side == 0 or gold_side == 0:
            return pred_side == gold_side
        ratio = sympy.simplify(pred_side / gold_side)
        return bool(ratio.is_number and ratio.is_nonzero and ratio.is_finite)
    if len(pred.free_symbols | gold.free_symbols) == 1 and pred.free_symbols == gold.free_symbols:
        return _sympy_equal(_as_set(pred), _as_set(gold))
    forms = []
    for relation in (pred, gold):
        if isinstance(relation, LessThan | StrictLessThan):
            forms.append((relation.lhs - relation.rhs, isinstance(relation, StrictLessThan)))
        elif isinstance(relation, GreaterThan | StrictGreaterThan):
            forms.append((relation.rhs - relation.lhs, isinstance(relation, StrictGreaterThan)))
        else:
            return False
    (pred_side, pred_strict), (gold_side, gold_strict) = forms
    if pred_strict != gold_strict or gold_side == 0:
        return False
    ratio = sympy.simplify(pred_side / gold_side)
    return bool(ratio.is_number and ratio.is_positive)


def _alphanumerics(text: str) -> list[str]:
    """The letters and digits of a LaTeX string, for checking that a parse read all of it (math-verify rewrites
    `\\sqrt2` as `\\sqrt{2}`, so the strings themselves differ)."""
    return sorted(char for char in text if char.isalnum())


@lru_cache(maxsize=4096)
def _sympy_parse(latex: str) -> Any:
    """sympy form of a leaf, or None: written decimals stay exact rationals; the rest goes through math-verify's
    parser, which must read the whole leaf (a parse of only its first part would compare the wrong thing)."""
    import sympy
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    if _DECIMAL.fullmatch(latex) or _INTEGER.fullmatch(latex):
        return sympy.Rational(latex)
    configs = [LatexExtractionConfig()] if "\\" in latex else [LatexExtractionConfig(), ExprExtractionConfig()]
    for config in configs:
        parsed = parse(
            f"${latex}$" if "\\" in latex or not isinstance(config, ExprExtractionConfig) else latex,
            [config],
            parsing_timeout=None,
        )
        if len(parsed) == 2 and not isinstance(parsed[0], str) and _alphanumerics(parsed[1]) == _alphanumerics(latex):
            return None if parsed[0].has(sympy.zoo, sympy.nan) else parsed[0]
    return None


def _symbolic_equivalent(pred: str, gold: str) -> bool:
    """The full comparison with sympy for undecided leaves; runs inside a worker process."""

    def leaf_equal(p: Any, g: Any) -> bool:
        fast = _fast_leaf_equal(p, g)
        return fast if fast is not None else _symbolic_leaf_equal(p, g)

    return bool(_compare(_value(pred), _value(gold), leaf_equal))


# ---------------------------------------------------------------------------------------------------------------------
# The symbolic worker pool: a hard deadline in any thread or process, without signals.


class _SymbolicWorker:
    """A `python` child that imports sympy/math-verify once and answers one comparison per line of stdin."""

    def __init__(self) -> None:
        # This package first on the path, so the worker runs this very code; importing `rewards` itself is cheap
        # (its exports load lazily), so the worker imports only this module, sympy and math-verify.
        packages_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        boot = (
            f"import sys; sys.path.insert(0, {packages_dir!r})\n"
            "from rewards.math import _serve_symbolic_requests\n"
            "_serve_symbolic_requests()\n"
        )
        # A fresh interpreter (not a fork of a large trainer); its own session keeps Ctrl-C and job control away.
        self.process = subprocess.Popen(
            [sys.executable, "-c", boot],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,
        )
        self.ready = False
        self._buffer = b""

    def _read_line(self, deadline: float) -> bytes | None:
        stdout = self.process.stdout
        assert stdout is not None
        poller = select.poll()
        poller.register(stdout.fileno(), select.POLLIN)
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                return None
            chunk = os.read(stdout.fileno(), 1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def wait_ready(self, deadline: float) -> bool:
        if not self.ready:
            self.ready = self._read_line(deadline) == b"ready"
        return self.ready

    def compare(self, pred: str, gold: str, timeout: float) -> tuple[bool | None, bool]:
        """(verdict or None when out of time, whether the worker is still usable).

        The worker interrupts its own computation a little before `timeout` and answers None; if it has not answered
        by `timeout` (stuck in C code, or dead), it is unusable and the caller kills it.
        """
        stdin = self.process.stdin
        assert stdin is not None
        deadline = time.monotonic() + timeout * _KILL_SHARE
        try:
            stdin.write(json.dumps([pred, gold, timeout * _WORKER_TIMEOUT_SHARE]).encode() + b"\n")
            stdin.flush()
        except OSError:
            return None, False
        line = self._read_line(deadline)
        try:
            return (None, False) if line is None else (json.loads(line), True)
        except ValueError:  # not our protocol: treat the worker as broken
            return None, False

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL; reaped at once when possible, else later by `subprocess`'s own clean-up of finished children."""
        try:
            self.process.kill()
            self.process.wait(timeout=0.05)
        except Exception:  # already gone, or not reaped yet
            logger.debug("symbolic worker not reaped yet", exc_info=True)


class _SymbolicPool:
    """Idle workers shared by all threads of this process; a worker that misses a deadline is killed and replaced.

    Started lazily on the first comparison that needs sympy; one worker per concurrently comparing thread, plus one
    spare. After a fork (dataloader workers) the child starts its own workers instead of sharing the parent's pipes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_SymbolicWorker] = []
        self._pid = os.getpid()
        self._warned = False
        self._failed_starts = 0

    def _reset_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._idle = []
        self._pid = os.getpid()

    def _acquire(self) -> _SymbolicWorker:
        """An idle worker (the one started longest ago), leaving a spare behind: when a worker is killed for a
        timeout, the next item then finds one already started instead of waiting for an interpreter to boot."""
        with self._lock:
            if self._pid != os.getpid():
                self._reset_after_fork()
            worker = None
            while self._idle and worker is None:
                worker = self._idle.pop(0)
                if not worker.alive():
                    worker.kill()
                    worker = None
            needs_spare = not self._idle
        if needs_spare:
            self._release(_SymbolicWorker())
        return worker if worker is not None else _SymbolicWorker()

    def _release(self, worker: _SymbolicWorker) -> None:
        with self._lock:
            if self._pid == os.getpid():
                self._idle.append(worker)

    def _replace(self, worker: _SymbolicWorker) -> None:
        worker.kill()
        with self._lock:
            needs_spare = not self._idle
        if needs_spare:
            self._release(_SymbolicWorker())

    def compare(self, pred: str, gold: str, timeout: float) -> bool | None:
        """The verdict, or None when the comparison ran out of time or no worker could start.

        `timeout` bounds the comparison itself; waiting for a worker to start (about a second, the first time in a
        process and after a timeout, when the replacement is not ready yet) is not charged to it, so that a cold
        start never turns a right answer into a 0.0.
        """
        if self._failed_starts >= _MAX_FAILED_STARTS:
            return None
        worker = self._acquire()
        if not worker.wait_ready(time.monotonic() + _STARTUP_TIMEOUT_S):
            worker.kill()
            self._failed_starts += 1
            self._warn("a symbolic worker failed to start (is math-verify installed?); such items score 0.0")
            return None
        self._failed_starts = 0
        verdict, usable = worker.compare(pred, gold, timeout)
        if usable:
            self._release(worker)
        else:
            self._replace(worker)
        return verdict

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            logger.warning(message)

    def close(self) -> None:
        with self._lock:
            workers, self._idle = self._idle, []
        if self._pid == os.getpid():
            for worker in workers:
                worker.kill()


_MAX_FAILED_STARTS = 3
_WORKER_TIMEOUT_SHARE = 0.85  # the worker stops itself at 85% of the budget, leaving time for its reply,
_KILL_SHARE = 0.95  # and is killed at 95% if it has not replied, leaving time for the kill
_STARTUP_TIMEOUT_S = 60.0
_POOL = _SymbolicPool()
atexit.register(_POOL.close)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOL._reset_after_fork)


class _Interrupted(BaseException):
    """Raised by the worker's own timer; a BaseException, so that `except Exception` in libraries cannot swallow it."""


def _interrupt(signum: int, frame: Any) -> None:
    raise _Interrupted


def _serve_symbolic_requests() -> None:
    """Worker main loop: one JSON `[pred, gold, seconds]` per line in, one JSON verdict (`null`: out of time) out.

    The worker runs in its own process's main thread, so a `setitimer` alarm can interrupt sympy between bytecodes;
    the parent's kill is left for computations stuck in C code. Memory is capped so a runaway expression fails alone.
    """
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = 4 << 30
        if hard == resource.RLIM_INFINITY or hard > limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass
    import signal

    # Replies go to a private copy of stdout; anything a library prints goes where stderr goes (nowhere).
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    logging.disable(logging.WARNING)
    import math_verify  # noqa: F401  (import once, before announcing readiness)

    _sympy_parse("1")
    signal.signal(signal.SIGALRM, _interrupt)
    replies.write("ready\n")
    replies.flush()
    for line in sys.stdin:
        verdict: bool | None = False
        try:
            try:
                pred, gold, seconds = json.loads(line)
                signal.setitimer(signal.ITIMER_REAL, max(float(seconds), 1e-3))
                verdict = _symbolic_equivalent(pred, gold)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Interrupted:
            verdict = None
        except Exception:
            verdict = False
        replies.write(json.dumps(verdict) + "\n")
        replies.flush()


# ---------------------------------------------------------------------------------------------------------------------
# Public API.

_SYMBOLIC_CACHE: dict[tuple[str, str], bool] = {}
_MIN_SYMBOLIC_BUDGET_S = 0.02  # less than this left: no worker could reply in time, so do not make it try


def _as_answer(text: str) -> str:
    """Accepts a bare answer or a text holding a marked one ("The answer is 5", `\\boxed{5}`)."""
    if any(marker in text for marker in ("box", "####", "<answer>", "nswer")):
        return extract_answer(text, strict=True) or text
    return text


def _equivalent(pred: str, gold: str, gold_value: Any, deadline: float) -> bool:
    verdict = _compare(_value(pred), gold_value, _fast_leaf_equal)
    if verdict is not None:
        return verdict
    key = (pred[:_MAX_ANSWER_CHARS], gold[:_MAX_ANSWER_CHARS])
    if key in _SYMBOLIC_CACHE:
        return _SYMBOLIC_CACHE[key]
    remaining = deadline - time.monotonic()
    verdict = _POOL.compare(key[0], key[1], remaining) if remaining > _MIN_SYMBOLIC_BUDGET_S else None
    if verdict is None:  # out of time: 0.0, and not cached, since it is no verdict
        return False
    if len(_SYMBOLIC_CACHE) > 1 << 16:
        _SYMBOLIC_CACHE.clear()
    _SYMBOLIC_CACHE[key] = verdict
    return verdict


def is_equivalent(pred: str, gold: str, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    r"""True when `pred` and `gold` denote the same answer (`0.5` = `\frac12` = `50%`, `x = 5` = `5`, ...).

    Never raises; returns False when the comparison needs longer than `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    try:
        pred, gold = _as_answer(str(pred)), _as_answer(str(gold))
        return _equivalent(pred, gold, _value(gold), deadline)
    except Exception:
        logger.debug("answer comparison failed", exc_info=True)
        return False


class MathAnswerReward:
    """A picklable TRL reward function: 1.0 when the completion's final answer equals the gold, 0.0 when not, None
    for rows without a gold answer.

    TRL passes every dataset column as a keyword argument; the gold comes from `gold_column`, or, when that is None,
    from `answer` (a GSM8K rationale ending in `#### N`) and then `solution` (LaTeX or plain). Completions may be
    strings or chat messages.
    """

    def __init__(
        self,
        gold_column: str | None = None,
        strict: bool = False,
        timeout: float = DEFAULT_TIMEOUT_S,
        name: str = "math_answer_reward",
    ) -> None:
        self.gold_column = gold_column
        self.strict = strict
        self.timeout = timeout
        self.__name__ = name

    def _golds(self, count: int, columns: dict) -> list:
        names = [self.gold_column] if self.gold_column else ["answer", "solution"]
        checked = {name: _column(name, columns.get(name), count) for name in names}
        golds = []
        for index in range(count):
            gold = None
            for name in names:
                column = checked[name]
                value = column[index] if column is not None else None
                if value is not None and value == value:  # `value == value`: not NaN
                    text = _as_text(value, f"{name}[{index}]")
                    if text.strip():
                        gold = text
                        break
            golds.append(gold)
        return golds

    def score(self, completion: Any, gold: str | None) -> float | None:
        """The reward for one completion."""
        if gold is None:
            return None
        deadline = time.monotonic() + self.timeout
        try:
            gold_text, gold_value = _gold_value(gold)
            if gold_text is None:
                return None
            pred = extract_answer(completion_text(completion), strict=self.strict)
            if pred is None:
                return 0.0
            return 1.0 if _equivalent(pred, gold_text, gold_value, deadline) else 0.0
        except Exception:
            logger.debug("math reward failed on one item", exc_info=True)
            return 0.0

    def __call__(self, completions: list, **kwargs) -> list[float | None]:
        if not _is_column(completions):
            raise TypeError(
                f"completions must be a list of completions (strings or chat-message lists), as TRL passes them; "
                f"got {type(completions).__name__}"
            )
        texts = [_completion(completion, index) for index, completion in enumerate(completions)]
        golds = self._golds(len(completions), kwargs)
        return [self.score(text, gold) for text, gold in zip(texts, golds, strict=True)]


def make_math_answer_reward(
    gold_column: str | None = None,
    strict: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
    name: str | None = None,
) -> MathAnswerReward:
    """A math reward reading the gold from `gold_column`; `strict` turns off the last-number fallback.

    The returned object is picklable and carries a `__name__` (default `math_answer_reward[_<column>][_strict]`), which
    TRL uses to label its logs.
    """
    if name is None:
        name = "math_answer_reward" + (f"_{gold_column}" if gold_column else "") + ("_strict" if strict else "")
    return MathAnswerReward(gold_column=gold_column, strict=strict, timeout=timeout, name=name)


def _is_column(values: Any) -> bool:
    """A sequence of per-completion values: a list or tuple, or a `datasets` column; not a string or a mapping."""
    sized = hasattr(values, "__len__") and hasattr(values, "__getitem__")
    return sized and not isinstance(values, str | bytes | dict)


def _column(name: str, column: Any, count: int) -> Any:
    """A gold column as TRL passes it: a sequence (a list, or a `datasets` column) with one value per completion."""
    if column is None:
        return None
    if not _is_column(column):
        raise TypeError(
            f"{name} must be a list with one gold answer per completion (a dataset column, as TRL passes it); "
            f"got {type(column).__name__}"
        )
    if len(column) != count:
        raise ValueError(f"{name} has {len(column)} values for {count} completions; pass one gold per completion")
    return column


def _as_text(value: Any, name: str) -> str:
    try:
        return value if isinstance(value, str) else str(value)
    except Exception as error:
        raise TypeError(f"{name} is a {type(value).__name__} whose str() fails ({error}); pass a string") from error


def _completion(completion: Any, index: int) -> str:
    try:
        return completion_text(completion)
    except Exception as error:
        raise TypeError(
            f"completions[{index}] is a {type(completion).__name__} that cannot be read as text ({error}); pass a "
            f"string or a list of chat messages"
        ) from error


_DEFAULT_REWARD = MathAnswerReward()


def math_answer_reward(completions: list, answer: list | None = None, solution: list | None = None, **kwargs):
    """1.0 when the completion's final answer equals the gold answer, 0.0 when not, None for rows with no gold.

    TRL reward-function signature: `completions` are strings or chat-message lists; the gold comes from the
    `answer` (GSM8K rationale ending in `#### N`) or `solution` (LaTeX or plain) dataset column. Extra keyword
    arguments (other columns, `trainer_state`, ...) are ignored.
    """
    return _DEFAULT_REWARD(completions, answer=answer, solution=solution)
