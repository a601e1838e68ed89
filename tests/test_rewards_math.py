"""Tests for `rewards.math`: the hand-labelled case table, TRL integration, fast/symbolic agreement, time bounds."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import pickle
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewards import make_math_answer_reward, math_answer_reward
from rewards.math import (
    DEFAULT_TIMEOUT_S,
    MathAnswerReward,
    _compare,
    _fast_leaf_equal,
    _symbolic_leaf_equal,
    _value,
    extract_answer,
    gold_answer,
    is_equivalent,
)

DATA = Path(__file__).parent / "data"
GSM8K_SAMPLE = DATA / "gsm8k" / "test_head200.jsonl"  # the first rows of GSM8K's test split (MIT)
SLOW_SYMBOLIC = r"\sum_{k=1}^{999} k^{999}"  # passes the guards; sympy needs ~15 s for it
# Where a deadline is the behaviour under test, the wall-clock bound is the timeout plus this: an item that misses its
# deadline runs for the ~15 s sympy needs (or forever, when stuck), while one that keeps it returns at the timeout, so
# a bound this far above the timeout cannot fail on a loaded machine and still tells the two apart.
DEADLINE_SLACK_S = 5.0


def _load_cases() -> list[tuple]:
    spec = importlib.util.spec_from_file_location("math_cases", DATA / "math_cases.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CASES


CASES = _load_cases()


def _score(kind: str, text, gold: str) -> float | None:
    if kind == "pred":
        return float(is_equivalent(text, gold))
    return math_answer_reward([text], **{kind: [gold]})[0]


@pytest.fixture(scope="module")
def warm_pool() -> None:
    """Starts the symbolic worker once, so that per-call timings measure checking, not interpreter start-up."""
    from rewards.math import _POOL

    assert is_equivalent(r"\sqrt{7}", r"\sqrt{7}+0")
    assert all(worker.wait_ready(time.monotonic() + 60) for worker in _POOL._idle)  # the spare has started too


def test_case_table_is_large_and_labelled() -> None:
    assert len(CASES) >= 300
    assert {kind for kind, *_ in CASES} == {"pred", "answer", "solution"}
    assert all(label in (0, 1) for *_, label, _ in CASES)
    assert 0.3 < sum(label for *_, label, _ in CASES) / len(CASES) < 0.8


def test_case_table_accuracy() -> None:
    """Per-item times are figures, not verdicts: bench/rewards_math.py prints the slowest item."""
    wrong = []
    for kind, text, gold, label, category in CASES:
        score = _score(kind, text, gold)
        if score != label:
            wrong.append((category, str(text)[:80], gold[-40:], score, label))
    accuracy = 1 - len(wrong) / len(CASES)
    assert accuracy >= 0.995, f"accuracy {accuracy:.4f}; wrong: {wrong}"


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("so 9 * 2 = 18\n#### 18", "18"),
        ("The answer is 5 apples.", "5 apples"),
        (r"The final answer is $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"\boxed{2} and \boxed{3}", "2, 3"),
        ("<think>maybe 3</think><answer>5</answer>", "5"),
        ("<think>\\boxed{3}</think> The answer is 4.", "4"),
        ("He has 12 - 4 = 8 marbles left.", "8"),
        ("#### 1\n#### 2", "2"),
        ("The answer is 12. Then 3 more arrive.", "12"),
        (r"Thus $x = \frac{1}{2}$.", r"x = \frac{1}{2}"),
        ("no numbers here", None),
    ],
)
def test_extract_answer(text: str, answer: str | None) -> None:
    assert extract_answer(text) == answer


def test_strict_mode_needs_a_marker() -> None:
    assert extract_answer("She has 18 apples.", strict=True) is None
    assert extract_answer("She has 18 apples.\n#### 18", strict=True) == "18"
    strict_reward = make_math_answer_reward(strict=True)
    assert strict_reward(["She has 18 apples."], answer=["#### 18"]) == [0.0]
    assert math_answer_reward(["She has 18 apples."], answer=["#### 18"]) == [1.0]


def test_gold_answer_sources() -> None:
    assert gold_answer(answer="She makes 9 * 2 = $18.\n#### 18") == "18"
    assert gold_answer(solution=r"Hence $\boxed{\frac{14}{3}}$.") == r"\frac{14}{3}"
    assert gold_answer(solution=r"$x^2+1$") == "$x^2+1$"
    assert gold_answer(answer=None, solution=None) is None
    assert gold_answer(answer="  ") is None


def test_reward_signature_used_by_the_grpo_recipe() -> None:
    completions = ["9 * 2 = 18\n#### 18", "#### 17", "no answer", "#### 5"]
    golds = ["#### 18", "#### 18", "#### 18", None]
    assert math_answer_reward(completions, answer=golds) == [1.0, 0.0, 0.0, None]


def test_reward_accepts_trl_keyword_arguments() -> None:
    logged = {}
    rewards = math_answer_reward(
        prompts=["q1", "q2"],
        completions=[[{"role": "assistant", "content": r"\boxed{3}"}], [{"role": "assistant", "content": "4"}]],
        completion_ids=[[1, 2], [3]],
        solution=["3", "5"],
        question=["q1", "q2"],
        trainer_state=object(),
        log_extra=lambda name, values: logged.setdefault(name, values),
        log_metric=lambda name, value: None,
    )
    assert rewards == [1.0, 0.0]


def test_reward_prefers_answer_column_then_solution() -> None:
    assert math_answer_reward(["#### 7", "#### 7"], answer=["#### 7", None], solution=["8", "7"]) == [1.0, 1.0]
    assert math_answer_reward(["#### 7", "#### 7"], answer=[float("nan"), ""], solution=["7", None]) == [1.0, None]


def test_named_gold_column_factory() -> None:
    reward = make_math_answer_reward(gold_column="final_answer")
    assert reward.__name__ == "math_answer_reward_final_answer"
    assert reward(["The answer is 0.5"], final_answer=[r"\frac{1}{2}"], answer=["#### 9"]) == [1.0]
    assert reward(["The answer is 0.5"], answer=["#### 0.5"]) == [None]
    assert make_math_answer_reward(name="acc").__name__ == "acc"


def test_reward_functions_work_with_trl_naming_and_pickling() -> None:
    from trl.trainer.utils import get_callable_name

    reward = make_math_answer_reward(gold_column="target", strict=True)
    assert get_callable_name(math_answer_reward) == "math_answer_reward"
    assert get_callable_name(reward) == "math_answer_reward_target_strict"
    restored = pickle.loads(pickle.dumps(reward))
    assert isinstance(restored, MathAnswerReward) and restored.__name__ == reward.__name__
    assert restored(["#### 4"], target=["4"]) == [1.0]
    assert pickle.loads(pickle.dumps(math_answer_reward)) is math_answer_reward


def test_reward_never_raises_on_odd_inputs() -> None:
    completions = [None, 12, {"content": None}, [], [{"role": "assistant"}], b"#### 3", "#### 3"]
    rewards = math_answer_reward(completions, answer=["#### 3"] * len(completions))
    # read as "None", "12", "", "", "" (no number 3), then "b'#### 3'" and "#### 3" (both mark a 3)
    assert rewards == [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]


def _gsm8k_pairs(limit: int) -> list[tuple[str, str]]:
    """GSM8K golds and plausible predictions: the same number spelled differently, and off-by-one."""
    pairs = []
    with GSM8K_SAMPLE.open() as lines:
        for line in list(lines)[:limit]:
            gold = json.loads(line)["answer"].rsplit("####", 1)[1].strip()
            number = int(gold.replace(",", ""))
            pairs += [(f"{number:,}", gold), (f"${number}.00", gold), (f"{number + 1}", gold), (f"{number}%", gold)]
    return pairs


def test_fast_path_agrees_with_symbolic_path() -> None:
    """Wherever the fast path decides, comparing every leaf with sympy instead gives the same verdict."""
    pairs = [(text, gold) for kind, text, gold, *_ in CASES if kind == "pred"] + _gsm8k_pairs(150)
    decided = 0
    for pred, gold in pairs:
        pred_value, gold_value = _value(pred), _value(gold)
        fast = _compare(pred_value, gold_value, _fast_leaf_equal)
        if fast is None:
            continue
        decided += 1
        symbolic = _compare(pred_value, gold_value, _symbolic_leaf_equal)
        assert bool(symbolic) == fast, (pred, gold, fast, symbolic)
    assert decided > 700


def _clock_reading(monkeypatch, *readings: float) -> None:
    """`rewards.math` reads its clock exactly these times (one more read fails the test)."""
    import rewards.math as rewards_math

    clock = iter(readings)
    monkeypatch.setattr(rewards_math, "time", SimpleNamespace(monotonic=lambda: next(clock)))


def _pool_recording(monkeypatch, verdict: bool) -> list[tuple[str, str, float]]:
    """Stands in for the symbolic worker pool (and empties the verdict cache): records each request and its budget."""
    import rewards.math as rewards_math

    requests = []
    monkeypatch.setattr(rewards_math, "_SYMBOLIC_CACHE", {})
    monkeypatch.setattr(rewards_math._POOL, "compare", lambda *request: requests.append(request) or verdict)
    return requests


def test_the_symbolic_worker_gets_the_time_left_after_extraction(monkeypatch) -> None:
    requests = _pool_recording(monkeypatch, verdict=True)
    _clock_reading(monkeypatch, 100.0, 101.5)  # the deadline is set (100 + 2), then read after extraction (101.5)
    reward = make_math_answer_reward(timeout=2.0)
    assert reward([r"\boxed{\sqrt{5}}"], solution=[r"\sqrt{5}+0"]) == [1.0]
    assert requests == [(r"\sqrt{5}", r"\sqrt{5}+0", 0.5)]
    _clock_reading(monkeypatch, 7.0)  # a cached verdict needs no worker and no time
    assert reward([r"\boxed{\sqrt{5}}"], solution=[r"\sqrt{5}+0"]) == [1.0] and len(requests) == 1
    _clock_reading(monkeypatch, 0.0, 0.25)
    assert is_equivalent(r"\sqrt{6}", r"\sqrt{6}+0", timeout=1.0)
    assert requests[-1] == (r"\sqrt{6}", r"\sqrt{6}+0", 0.75)


def test_an_item_out_of_time_scores_zero_without_asking_a_worker_and_is_not_cached(monkeypatch) -> None:
    requests = _pool_recording(monkeypatch, verdict=True)
    _clock_reading(monkeypatch, 100.0, 101.99)  # 10 ms left: below what a worker needs to reply
    reward = make_math_answer_reward(timeout=2.0)
    assert reward([r"\boxed{\sqrt{5}}"], solution=[r"\sqrt{5}+0"]) == [0.0] and requests == []
    _clock_reading(monkeypatch, 100.0, 100.0)  # the same item with its whole budget: asked, since 0.0 was no verdict
    assert reward([r"\boxed{\sqrt{5}}"], solution=[r"\sqrt{5}+0"]) == [1.0]
    assert requests == [(r"\sqrt{5}", r"\sqrt{5}+0", 2.0)]


def test_a_worker_out_of_time_scores_zero_and_the_item_is_asked_again(monkeypatch) -> None:
    requests = _pool_recording(monkeypatch, verdict=None)  # the worker ran out of time (or was killed)
    _clock_reading(monkeypatch, 0.0, 0.0, 0.0, 0.0)
    assert is_equivalent(r"\sqrt{5}", r"\sqrt{5}+0") is False
    assert is_equivalent(r"\sqrt{5}", r"\sqrt{5}+0") is False
    assert [budget for *_, budget in requests] == [DEFAULT_TIMEOUT_S, DEFAULT_TIMEOUT_S]


def test_symbolic_timeout_in_main_thread(warm_pool) -> None:
    for timeout in (0.5, 1.0):
        start = time.perf_counter()
        assert is_equivalent(SLOW_SYMBOLIC, "1", timeout=timeout) is False
        assert time.perf_counter() - start < timeout + DEADLINE_SLACK_S
    from rewards.math import _POOL

    survivors = list(_POOL._idle)
    assert is_equivalent(r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}")
    assert [worker.process.poll() for worker in survivors] == [None] * len(survivors)  # it interrupted itself


def test_timeout_in_worker_threads(warm_pool) -> None:
    reward = make_math_answer_reward(timeout=1.0)

    def check(index: int) -> tuple[float | None, float]:
        start = time.perf_counter()
        if index % 2:
            score = reward([rf"\boxed{{{SLOW_SYMBOLIC}}}"], solution=["1"])[0]
        else:
            score = reward([rf"\boxed{{\sqrt{{{index + 2}}}}}"], solution=[rf"\sqrt{{{index + 2}}}+0"])[0]
        return score, time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=3) as threads:
        list(threads.map(check, [1, 3, 5]))  # three slow items at once: starts one worker per thread
        results = list(threads.map(check, range(6)))
    assert [score for score, _ in results] == [1.0, 0.0] * 3
    assert max(elapsed for _, elapsed in results) < 1.0 + DEADLINE_SLACK_S


def test_worker_stuck_past_the_deadline_is_killed_and_replaced(warm_pool) -> None:
    """A worker that cannot even run its own timer (stuck in C code; here: SIGSTOP) is killed at the deadline."""
    from rewards.math import _POOL

    idle = list(_POOL._idle)
    for worker in idle:
        assert worker.wait_ready(time.monotonic() + 60)
        os.kill(worker.process.pid, signal.SIGSTOP)
    try:
        start = time.perf_counter()
        assert _POOL.compare(r"\sqrt{2}", r"\sqrt{2}+0", 0.5) is None
        assert time.perf_counter() - start < 0.5 + DEADLINE_SLACK_S  # a stopped worker never answers by itself
    finally:
        for worker in idle:
            if worker.process.poll() is None:
                os.kill(worker.process.pid, signal.SIGCONT)
    assert sum(worker.process.poll() is not None for worker in idle) == 1
    assert is_equivalent(r"\sqrt{11}", r"\sqrt{11}+0")
    assert is_equivalent(r"\sqrt{13}", r"\sqrt{12}") is False


def _check_in_child(queue) -> None:
    queue.put(
        (
            is_equivalent(r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}"),
            math_answer_reward(["#### 1,000", r"\boxed{\frac12}"], answer=["#### 1000", None], solution=[None, "0.5"]),
        )
    )


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_works_in_daemonic_worker_processes(warm_pool, start_method: str) -> None:
    """Like a DataLoader worker: a daemonic child (forked ones inherit the parent's pool) still checks symbolically."""
    context = multiprocessing.get_context(start_method)
    queue = context.Queue()
    child = context.Process(target=_check_in_child, args=(queue,), daemon=True)
    child.start()
    result = queue.get(timeout=60)
    child.join(timeout=10)
    assert result == (True, [1.0, 1.0])


def test_works_in_a_process_pool() -> None:
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(
            math_answer_reward, [(["#### 18"], ["#### 18"]), ([r"\boxed{2\sqrt{2}}"], None, [r"\sqrt{8}"])]
        )
    assert results == [[1.0], [1.0]]


@pytest.mark.parametrize(
    "text",
    [
        "\\[" * 25_000,
        "\\(" * 25_000,
        "\\boxed{" * 7_000,
        "<answer>" * 6_000,
        "answer is " * 5_000,
        "$" * 50_000,
        "{" * 50_000,
        "#### " * 10_000,
        "1 000 " * 8_000,
        "\\boxed{" * 3_000 + "1" + "}" * 3_000,
        "x = " * 10_000,
        "1 \\pm " * 5_000,
    ],
    ids=lambda text: repr(text[:12]),
)
def test_long_pathological_completions_take_linear_time(text: str) -> None:
    """Unclosed delimiters repeated thousands of times must not make extraction quadratic.

    Measured in this process's CPU time, which other processes' load does not inflate: linear work on these 50k
    characters takes about 20 ms, quadratic work takes seconds. bench/rewards_math.py prints the figures at 1x and 4x.
    """
    start = time.process_time()
    assert math_answer_reward([text], answer=["#### 7"]) == [0.0]
    assert is_equivalent(text[:5_000], "7", timeout=1.0) is False
    assert time.process_time() - start < 1.0


_MATH_PIECES = st.sampled_from(
    ["0", "7", "42", "1,000", ".", "-", "+", "/", "^", "{", "}", "(", ")", "[", "]", " ", "$", "%", "=", ",", "x", "!"]
    + [r"\frac", r"\boxed{", r"\sqrt", r"\pi", r"\pm", r"\infty", r"\cup", r"\{", r"\}", "####", "answer is ", "e"]
)
_MATHY_TEXT = st.lists(_MATH_PIECES, max_size=40).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=300), _MATHY_TEXT), gold=st.one_of(st.text(max_size=40), _MATHY_TEXT))
def test_never_raises_and_stays_within_time_bound(warm_pool, text: str, gold: str) -> None:
    answer = extract_answer(text)
    assert answer is None or isinstance(answer, str)
    start = time.perf_counter()
    assert isinstance(is_equivalent(text, gold, timeout=1.0), bool)
    assert time.perf_counter() - start < 1.0 + DEADLINE_SLACK_S
    start = time.perf_counter()
    score = math_answer_reward([text], answer=[gold])[0]
    assert score in (0.0, 1.0, None) and (score is None) == (gold_answer(answer=gold) is None)  # None: no gold
    assert time.perf_counter() - start < DEFAULT_TIMEOUT_S + DEADLINE_SLACK_S
