"""The embedded backend against plain `transformers` computations on the real tiny model."""

import copy
from typing import ClassVar

import pytest
import torch

from inversecoder.core import prompts
from inversecoder.core.backends import Backend, CachedModel, GenerationRequest, SamplingParams
from inversecoder.core.backends.transformers_backend import TransformersBackend, resolve_answer_token_ids
from inversecoder.core.cache import ResultCache
from inversecoder.core.errors import UserError

CODE = "```python\ndef add(a, b):\n    return a + b\n```"


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return TransformersBackend(str(tiny_model_dir), batch_tokens=4096)


def _prompts(n):
    return [
        prompts.score_prompt(f"Write a python function number {i} that adds " + "numbers " * i, CODE) for i in range(n)
    ]


def test_score_is_the_exact_yes_no_softmax_of_the_first_token(backend):
    texts = _prompts(6)  # different lengths: exercises left padding
    scores = backend.score_yes_no(texts)
    answers = backend.answer_token_ids()
    model = backend._load()
    for text, result in zip(texts, scores, strict=True):
        ids = torch.tensor([backend.tokenizer.encode(text)])
        with torch.no_grad():
            logits = model(ids).logits[0, -1].double()  # naive: unpadded, all positions, full logits
        log_probs = logits.log_softmax(-1)
        p_yes = log_probs[answers["yes"]].exp().sum()
        p_no = log_probs[answers["no"]].exp().sum()
        assert result.score == pytest.approx(float(p_yes / (p_yes + p_no)), abs=1e-5)
        assert result.yes_no_mass == pytest.approx(float(p_yes + p_no), rel=1e-4)
        assert 0.0 < result.score < 1.0


def test_answer_tokens_include_word_initial_variants(backend):
    vocab = backend.tokenizer.get_vocab()
    assert sorted({vocab["Yes"], vocab["ĠYes"]}) == backend.answer_token_ids()["yes"]
    assert sorted({vocab["No"], vocab["ĠNo"]}) == backend.answer_token_ids()["no"]


def test_single_answer_tokens_are_the_papers_one_id_per_word(backend):
    """`generator.answer_tokens: single` (`fidelity: paper`): the id the paper's code read,
    `tokenizer(word)['input_ids'][1]` on a tokenizer that puts BOS first, and the word's own token where none does."""
    from tokenizers.processors import TemplateProcessing

    tokenizer = backend.tokenizer
    vocab = tokenizer.get_vocab()
    assert resolve_answer_token_ids(tokenizer, "Yes", "single") == [vocab["Yes"]]  # the tiny tokenizer: no BOS
    with_bos = copy.deepcopy(tokenizer)
    bos = with_bos.eos_token  # a special token put first, as Llama's and DeepSeek-Coder's tokenizers put BOS
    with_bos._tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, with_bos.convert_tokens_to_ids(bos))]
    )
    for word in ("Yes", "No"):
        paper_code = with_bos(word, return_tensors="pt")["input_ids"][0][1].item()  # upstream's get_token_ids
        assert resolve_answer_token_ids(with_bos, word, "single") == [paper_code] == [vocab[word]]
        assert paper_code in resolve_answer_token_ids(with_bos, word)  # one of the summed spellings
    with pytest.raises(UserError, match=r"spells 'Affirmative' as \d+ tokens"):
        resolve_answer_token_ids(tokenizer, "Affirmative", "single")


def test_a_tokenizer_without_a_single_yes_token_is_an_error_not_a_fallback(backend):
    with pytest.raises(UserError, match="no single token for 'Affirmative'"):
        resolve_answer_token_ids(backend.tokenizer, "Affirmative")


def test_greedy_decoding_with_repetition_penalty_matches_transformers_generate(backend):
    texts = [
        prompts.summarize_prompt(CODE, "Write a python"),
        prompts.summarize_prompt("```sql\nSELECT 1;\n```", "Build a sql"),
    ]
    ours = backend.generate(
        [GenerationRequest(t) for t in texts], SamplingParams(repetition_penalty=1.1, max_new_tokens=12)
    )
    model = backend._load()
    for text, completion in zip(texts, ours, strict=True):
        ids = torch.tensor([backend.tokenizer.encode(text)])
        reference = model.generate(
            ids, max_new_tokens=12, do_sample=False, repetition_penalty=1.1, pad_token_id=backend.pad_id
        )
        expected = backend.tokenizer.decode(reference[0, ids.shape[1] :], skip_special_tokens=True)
        assert completion.text == expected
        assert completion.generated_tokens == 12 and completion.finish_reason == "length"


def test_sampling_is_seeded_per_request_whatever_shares_the_batch(backend):
    requests = [GenerationRequest(prompts.summarize_prompt(CODE + "\n" * i, "Write a"), seed=100 + i) for i in range(5)]
    params = SamplingParams(temperature=0.8, repetition_penalty=1.1, max_new_tokens=16)
    together = [c.text for c in backend.generate(requests, params)]
    alone = [backend.generate([r], params)[0].text for r in requests]
    reversed_order = [c.text for c in backend.generate(requests[::-1], params)][::-1]
    assert together == alone == reversed_order
    reseeded = backend.generate([GenerationRequest(requests[0].prompt, seed=7)], params)[0].text
    assert reseeded != together[0]


def test_stop_strings_cut_the_text(backend):
    params = SamplingParams(temperature=1.0, max_new_tokens=40, stop=("e",))
    for completion in backend.generate(
        [GenerationRequest(prompts.summarize_prompt(CODE, "Write a"), seed=s) for s in range(4)], params
    ):
        assert "e" not in completion.text
        if completion.finish_reason == "stop":
            assert completion.generated_tokens < 40


def test_overlong_prompts_become_errors_not_crashes(tiny_model_dir):
    small = TransformersBackend(str(tiny_model_dir), max_context=64)
    long_prompt = prompts.summarize_prompt("```python\n" + "x = 1\n" * 200 + "```", "Write a")
    short_prompt = "def f():"
    out = small.generate(
        [GenerationRequest(long_prompt), GenerationRequest(short_prompt)], SamplingParams(max_new_tokens=4)
    )
    assert out[0].text is None and "context (64)" in str(out[0].error) and not out[0].retryable
    assert out[1].error is None and out[1].generated_tokens > 0
    scored = small.score_yes_no([long_prompt, short_prompt])
    assert scored[0].score is None and "context is 64" in str(scored[0].error)
    assert scored[1].score is not None


def test_batches_respect_the_token_budget_and_cover_every_prompt(backend):
    texts = _prompts(40)
    batches = backend.plan_batches(texts, 8)
    assert sorted(i for b in batches for i in b) == list(range(40))
    for batch in batches:
        widest = max(len(backend.tokenizer.encode(texts[i])) for i in batch) + 8
        assert len(batch) == 1 or len(batch) * widest <= backend.batch_tokens
    assert backend.plan_batches(texts, 8) == batches


def test_cached_model_reruns_for_free_and_keeps_retryable_errors_out(backend, tmp_path):
    cache = ResultCache(tmp_path / "calls.sqlite")
    first = CachedModel(backend, cache, progress=False)
    texts = _prompts(5)
    scores = first.score_yes_no(texts)
    assert first.computed == 5
    second = CachedModel(backend, ResultCache(tmp_path / "calls.sqlite"), progress=False)
    planned: list[int] = []
    plan = backend.plan_batches

    def counted(prompts, new_tokens):  # the real planner, counted
        planned.append(len(prompts))
        return plan(prompts, new_tokens)

    backend.plan_batches = counted
    try:
        assert second.score_yes_no(texts) == scores
        assert planned == []  # a fully cached call plans (tokenizes) nothing
        assert second.score_yes_no([*texts, "one more"])[:5] == scores
        assert planned[0] == 6  # a partly cached one plans them all (the batches an uninterrupted run forms)
    finally:
        del backend.plan_batches
    assert second.computed == 1 and second.reused == 5 + 5

    class Flaky(Backend):
        calls = 0

        def info(self):
            return backend.info()

        def plan_batches(self, prompts_, new_tokens):
            return [[i] for i in range(len(prompts_))]

        def generate(self, requests, params):
            raise NotImplementedError

        def score_yes_no(self, prompts_):
            Flaky.calls += 1
            from inversecoder.core.backends import YesNoScore

            return [YesNoScore(None, error="503 from server", retryable=True)]

    flaky = CachedModel(Flaky(), cache, progress=False)
    assert flaky.score_yes_no(["never seen"])[0].error == "503 from server"
    assert flaky.score_yes_no(["never seen"])[0].error == "503 from server"
    assert Flaky.calls == 2  # a retryable failure is asked again, never served from the cache


def test_out_of_memory_batches_are_split_and_a_lone_misfit_is_recorded_not_cached(backend, tmp_path):
    from inversecoder.core.backends import YesNoScore

    class SmallMemory(Backend):
        """Runs out of memory on batches of more than 2 prompts, and always on the prompt 'huge'."""

        sizes: ClassVar[list[int]] = []

        def info(self):
            return backend.info()

        def plan_batches(self, prompts_, new_tokens):
            return [list(range(len(prompts_)))]

        def generate(self, requests, params):
            raise NotImplementedError

        def score_yes_no(self, prompts_):
            SmallMemory.sizes.append(len(prompts_))
            if len(prompts_) > 2 or "huge" in prompts_:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return [YesNoScore(0.5) for _ in prompts_]

    model = CachedModel(SmallMemory(), ResultCache(tmp_path / "c.sqlite"), progress=False)
    results = model.score_yes_no(["a", "b", "c", "d", "huge"])
    assert [r.score for r in results[:4]] == [0.5] * 4
    assert (
        results[4].score is None
        and results[4].retryable
        and str(results[4].error).startswith("out of memory: CUDA out of memory")
    )
    assert max(size for size in SmallMemory.sizes if size <= 2) == 2
    assert len(model.cache) == 4  # the failure is retried by the next run
