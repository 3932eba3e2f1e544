"""The constrained decoder: same top-k as transformers.generate, exclusions, scores; and base-model loading."""

from __future__ import annotations

import random

import pytest
import torch

from face_app import llm
from face_app.decoder import ItemGenerator
from face_app.index import ItemIndex
from face_app.prompts import recommend_prompt


@pytest.fixture(scope="module")
def generator(face_app_cache) -> ItemGenerator:
    """The tiny random Llama with 200 items of a 3-level index; index rows set to seeded noise so scores differ."""
    rng = random.Random(0)
    codes = sorted({(rng.randrange(8), rng.randrange(8), rng.randrange(8)) for _ in range(260)})[:200]
    index = ItemIndex([f"item{i}" for i in range(len(codes))], codes, codebook_size=8)
    model, tokenizer = llm.load_base(llm.TINY_RANDOM)
    ids = llm.add_index_tokens(model, tokenizer, index.vocabulary())
    with torch.no_grad():
        model.get_input_embeddings().weight[ids] = torch.randn(len(ids), 64, generator=torch.Generator().manual_seed(0))
    return ItemGenerator(model, tokenizer, index, beams=10)


def prompt_for(generator: ItemGenerator, items: list[str]) -> str:
    return recommend_prompt([generator.index.text(i) for i in items])


def test_index_tokens_are_whole_tokens(generator: ItemGenerator) -> None:
    assert generator.tokenizer.tokenize("<a_1><b_2><c_3>") == ["<a_1>", "<b_2>", "<c_3>"]
    pieces = generator.tokenizer.tokenize("History: <a_1><b_2><c_3><a_4><b_5><c_6>\nNext:")
    assert [p for p in pieces if p.startswith("<")] == ["<a_1>", "<b_2>", "<c_3>", "<a_4>", "<b_5>", "<c_6>"]


@pytest.fixture(params=["codes", "vocabulary"])
def head(request: pytest.FixtureRequest, generator: ItemGenerator):
    """The generator scoring its beams with each head in turn (`face_app.decoder.HEADS`)."""
    before = generator.head
    generator.head = request.param
    yield request.param
    generator.head = before


@pytest.mark.parametrize("history", [["item1", "item2"], ["item5", "item9", "item30", "item31"]])
def test_fast_decoder_matches_generate(generator: ItemGenerator, head: str, history: list[str]) -> None:
    prompt = prompt_for(generator, history)
    fast = generator.recommend(prompt, k=10, beams=10)
    reference = generator.recommend_with_generate(prompt, k=10, beams=10)
    assert [item for item, _ in fast] == [item for item, _ in reference]
    assert [s for _, s in fast] == pytest.approx([s for _, s in reference], abs=1e-3)


def test_the_codes_head_is_the_vocabularys_log_probabilities_renormalised_over_the_levels_tokens(
        generator: ItemGenerator) -> None:
    ids = generator.prompt_ids(prompt_for(generator, ["item4"]))
    with torch.no_grad():
        full = generator.model(input_ids=ids, logits_to_keep=1).logits[:, -1].float().log_softmax(-1)
        generator.head = "codes"
        codes, columns = generator.level_logprobs(generator.prefill(ids), 0)
        generator.head = "vocabulary"
        vocabulary, none = generator.level_logprobs(generator.prefill(ids), 0)
    generator.head = "codes"
    tokens = generator._level_tokens[0]
    assert none is None and torch.allclose(vocabulary, full, atol=1e-4)
    assert codes.shape == (1, len(tokens)) and torch.equal(columns[tokens], torch.arange(len(tokens)))
    assert torch.allclose(codes, full[:, tokens].log_softmax(-1), atol=1e-4)
    # the codes head's level sums to one; the tiny model puts some of its mass on other tokens, so there the two
    # heads' scores differ (a tuned model's barely do: `python -m bench.batching --compare-heads`)
    assert torch.allclose(codes.exp().sum(), torch.tensor(1.0), atol=1e-5)
    assert float(full[:, tokens].exp().sum()) < 0.95 and not torch.allclose(codes, full[:, tokens], atol=1e-2)


def test_the_cached_chat_header_gives_the_same_scores_as_a_full_prefill(generator: ItemGenerator) -> None:
    ids = generator.prompt_ids(prompt_for(generator, ["item7", "item8"]))
    assert 0 < len(generator._header_ids) < ids.shape[1]
    with torch.no_grad():
        full = generator.model(input_ids=ids, logits_to_keep=1).logits[:, -1].float().log_softmax(-1)
        tokens = generator._level_tokens[0]
        for _ in range(2):  # first call fills the header cache, the second copies it
            cached, _ = generator.level_logprobs(generator.prefill(ids), 0)
            assert torch.allclose(cached, full[:, tokens].log_softmax(-1), atol=1e-4)


def test_a_remembered_stem_gives_a_follow_up_the_scores_of_a_full_prefill(generator: ItemGenerator) -> None:
    """A follow-up that keeps the history prefills only what follows its stem (the header and the history), and
    its first-level log-probabilities are the full prompt's; alone and in a batch beside a cold prompt and one
    without history, the picks are those of a generator that remembers nothing."""
    generator.forget_prefixes()
    opening = generator.prompt_ids(prompt_for(generator, ["item7", "item8"]))
    darker = generator.prompt_ids(recommend_prompt([generator.index.text(i) for i in ["item7", "item8"]],
                                                   request="something darker"))
    stem, key = generator._stem(darker[0].tolist(), None)
    assert len(generator._header_ids) < stem < darker.shape[1] and stem < opening.shape[1]
    assert opening[0, :stem].tolist() == darker[0, :stem].tolist()
    generator.prefill(opening)
    assert list(generator._stems) == [key]
    assert generator._prefix(darker[0].tolist(), None).length == stem  # the follow-up continues the stem
    with torch.no_grad():
        full = generator.model(input_ids=darker, logits_to_keep=1).logits[:, -1].float()
    cached, _ = generator.level_logprobs(generator.prefill(darker), 0)
    assert torch.allclose(cached, full[:, generator._level_tokens[0]].log_softmax(-1), atol=1e-4)
    assert len(generator._stems) == 1

    prompts = [recommend_prompt([generator.index.text(i) for i in ["item7", "item8"]], request="from the 90s"),
               prompt_for(generator, ["item40", "item41", "item42"]), prompt_for(generator, [])]
    searches = [generator.search(p, k=5) for p in prompts]
    generator.forget_prefixes()
    cold = [generator.beam_search(s.input_ids, s.beams, s.exclude)[: s.k] for s in searches]
    generator.forget_prefixes()
    generator.prefill(opening)  # the first prompt's stem remembered, the second's not, the third has none
    warm = generator.search_many(searches)
    for a, b in zip(cold, warm, strict=True):
        assert [i for i, _ in a] == [i for i, _ in b]
        assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-3)
    assert len(generator._stems) == 2
    again = generator.search_many(searches)  # every stem remembered now
    assert [[i for i, _ in a] for a in again] == [[i for i, _ in a] for a in cold]


def test_stems_are_remembered_up_to_a_bound_and_keyed_by_the_taste_they_hold(generator: ItemGenerator,
                                                                             monkeypatch) -> None:
    monkeypatch.setattr("face_app.decoder.STEMS_REMEMBERED", 2)
    generator.forget_prefixes()
    for items in (["item1"], ["item2"], ["item3"]):
        generator.prefill(generator.prompt_ids(prompt_for(generator, items)))
    assert len(generator._stems) == 2
    newest = generator._stem(generator.prompt_ids(prompt_for(generator, ["item3"]))[0].tolist(), None)[1]
    assert newest in generator._stems
    # A stem that holds the `<taste>` token is one stem per taste vector: the same words, another history.
    ids = generator.prompt_ids(prompt_for(generator, ["item1"]))[0].tolist()
    monkeypatch.setattr(generator, "taste_id", ids[len(generator._header_ids)])
    one, two = torch.zeros(1, 64), torch.ones(1, 64)
    assert generator._stem(ids, one)[1] != generator._stem(ids, two)[1]
    assert generator._stem(ids, one)[1] == generator._stem(ids, torch.zeros(1, 64))[1]
    generator.forget_prefixes()


def test_exclusions_never_come_back_and_do_not_take_beams(generator: ItemGenerator) -> None:
    prompt = prompt_for(generator, ["item1"])
    first = [item for item, _ in generator.recommend(prompt, k=10)]
    exclude = set(first[:5]) | {"item1", "item2"}
    again = generator.recommend(prompt, k=10, exclude=exclude)
    items = [item for item, _ in again]
    assert len(items) == 10 and not exclude & set(items)
    assert items[:5] == [i for i in first if i not in exclude]  # the survivors keep their order
    reference = generator.recommend_with_generate(prompt, k=10, exclude=exclude, beams=10)
    assert items == [item for item, _ in reference]


def test_scores_are_sorted_log_probabilities(generator: ItemGenerator) -> None:
    found = generator.recommend(prompt_for(generator, ["item3"]), k=20, beams=20)
    scores = [s for _, s in found]
    assert len(found) == 20 and len({item for item, _ in found}) == 20
    assert scores == sorted(scores, reverse=True) and all(s < 0 for s in scores)


def test_a_bonus_weighs_the_models_log_probabilities_inside_the_search(generator: ItemGenerator) -> None:
    prompt = prompt_for(generator, ["item4", "item6"])
    everything = len(generator.index.item_ids)
    logprob = dict(generator.recommend(prompt, k=everything, beams=everything))  # exhaustive: every item's score
    assert generator.recommend(prompt, k=10, bonus={i: 0.0 for i in logprob}) == generator.recommend(prompt, k=10)
    rng = random.Random(1)  # bonuses on the scale of this random model's log-probabilities (about -100)
    bonus = {i: rng.uniform(0.0, 20.0) for i in generator.index.item_ids}
    exhaustive = generator.recommend(prompt, k=10, beams=everything, bonus=bonus)
    assert [i for i, _ in exhaustive] == sorted(logprob, key=lambda i: -(logprob[i] + bonus[i]))[:10]
    assert [i for i, _ in exhaustive] != list(logprob)[:10]
    favoured = {i: 1000.0 for i in generator.index.item_ids if generator.index.code(i)[0] == 5}
    narrow = generator.recommend(prompt, k=10, beams=10, bonus=favoured)
    assert len(narrow) == 10 and all(i in favoured for i, _ in narrow)  # the guide reaches them at the first level
    assert not any(i in favoured for i in list(logprob)[:10])
    for item, score in narrow:  # each score is the item's log-probability plus its own bonus
        assert score == pytest.approx(logprob[item] + favoured[item], abs=1e-3)


def test_a_batch_of_searches_gives_what_each_gives_alone(generator: ItemGenerator) -> None:
    rng = random.Random(2)
    histories = [["item1"], ["item5", "item9", "item30", "item31", "item40"], [], ["item7", "item8"]]
    searches = [
        generator.search(prompt_for(generator, histories[0]), k=10),
        generator.search(prompt_for(generator, histories[1]), k=5, exclude={"item2", "item3"}),
        generator.search(prompt_for(generator, histories[2]), k=10, beams=12,
                         bonus={i: rng.uniform(0.0, 20.0) for i in generator.index.item_ids}),
        generator.search(prompt_for(generator, histories[3]), k=3, exclude=generator.index.item_ids[:-2]),
    ]
    assert len({s.input_ids.shape[1] for s in searches}) > 1  # prompts of several lengths: padding matters
    together = generator.search_many(searches)
    for search, batched in zip(searches, together, strict=True):
        alone = generator.beam_search(search.input_ids, search.beams, search.exclude, search.taste,
                                      search.bonus)[: search.k]
        assert [i for i, _ in batched] == [i for i, _ in alone]
        assert [s for _, s in batched] == pytest.approx([s for _, s in alone], abs=1e-3)
    assert len(together[3]) == 2 and len(together[1]) == 5


def test_concurrent_recommendations_are_batched_and_each_gets_its_own(generator: ItemGenerator) -> None:
    from concurrent.futures import ThreadPoolExecutor

    prompts = [prompt_for(generator, [f"item{i}", f"item{i + 1}"]) for i in range(0, 16, 2)]
    alone = [generator.recommend(p, k=5) for p in prompts]
    batched = ItemGenerator(generator.model, generator.tokenizer, generator.index, beams=10).batched(window_s=0.05)
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        together = list(pool.map(lambda p: batched.recommend(p, k=5), prompts))
    assert [[i for i, _ in r] for r in together] == [[i for i, _ in r] for r in alone]
    assert max(batched.batcher.sizes) > 1 and sum(batched.batcher.sizes) == len(prompts)


def test_a_failed_batch_reaches_every_caller_and_the_next_batch_runs() -> None:
    from face_app.batching import Batcher

    def run_many(requests):
        if "bad" in requests:
            raise ValueError("bad request in the batch")
        return [r.upper() for r in requests]

    batcher = Batcher(run_many, window_s=0.0)
    with pytest.raises(ValueError, match="bad request"):
        batcher.submit("bad")
    assert batcher.submit("fine") == "FINE"


def test_requests_that_keep_trickling_in_join_one_batch_up_to_the_longest_wait() -> None:
    import threading
    import time

    from face_app.batching import Batcher

    def trickle(batcher: Batcher, count: int, gap_s: float) -> list[str]:
        answers: list[str] = []
        threads = []
        for i in range(count):
            threads.append(threading.Thread(target=lambda i=i: answers.append(batcher.submit(f"r{i}"))))
            threads[-1].start()
            time.sleep(gap_s)
        for thread in threads:
            thread.join()
        return answers

    # 12 requests 8 ms apart: a window of 40 ms keeps seeing new ones, so one batch holds them all (a window that
    # closed after its first 40 ms would hold about five)
    batcher = Batcher(lambda requests: [r.upper() for r in requests], window_s=0.04, max_wait_s=2.0)
    assert sorted(trickle(batcher, 12, 0.008)) == sorted(f"R{i}" for i in range(12))
    assert list(batcher.sizes) == [12]
    # the longest wait bounds the batch: 30 ms of waiting closes it long before the trickle ends
    bounded = Batcher(lambda requests: list(requests), window_s=0.01, max_wait_s=0.03)
    trickle(bounded, 8, 0.008)
    assert len(bounded.sizes) > 1 and sum(bounded.sizes) == 8


def test_a_batch_waits_for_announced_callers_but_not_for_one_that_left() -> None:
    import threading
    import time

    from face_app.batching import Batcher

    batcher = Batcher(lambda requests: list(requests), window_s=0.005, max_wait_s=2.0)
    announced = threading.Event()

    def preparing() -> str:  # a turn that announced itself, then prepares its search for 150 ms
        with batcher.coming():
            announced.set()
            time.sleep(0.15)
            return batcher.submit("a")

    first = threading.Thread(target=preparing)
    first.start()
    announced.wait()
    assert batcher.submit("b") == "b"  # waited for "a" rather than running alone after one window
    first.join()
    assert list(batcher.sizes) == [2]

    left = threading.Event()

    def leaving() -> None:  # announced, then answered without a search
        with batcher.coming():
            left.set()
            time.sleep(0.1)

    other = threading.Thread(target=leaving)
    other.start()
    left.wait()
    start = time.perf_counter()
    batcher.submit("c")
    other.join()
    assert 0.05 < time.perf_counter() - start < 1.0  # it waited for the announced caller until it left, no longer
    assert list(batcher.sizes) == [2, 1] and batcher._coming == 0


def test_after_a_batch_of_n_the_next_waits_for_half_as_many() -> None:
    import threading
    import time

    from face_app.batching import Batcher

    batcher = Batcher(lambda requests: list(requests), window_s=0.005, max_wait_s=0.5)
    ready = threading.Barrier(4)

    def together(name: str) -> None:
        with batcher.coming():
            ready.wait()
            batcher.submit(name)

    threads = [threading.Thread(target=together, args=(f"r{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert list(batcher.sizes) == [4]
    # The first of the next requests comes back alone; the other two follow 100 ms later (a session's round trip):
    # it waits for at least one of them (half of 4) instead of running alone. On an idle machine the two arrive
    # within one window and the three run as one batch; under load the second may miss it and run after.
    early = threading.Thread(target=batcher.submit, args=("x",))
    early.start()
    time.sleep(0.1)
    late = [threading.Thread(target=batcher.submit, args=(name,)) for name in ("y", "z")]
    for thread in late:
        thread.start()
    for thread in [early, *late]:
        thread.join()
    sizes = list(batcher.sizes)
    assert sizes[0] == 4 and sum(sizes[1:]) == 3
    assert sizes[1] >= 2  # without the wait the early request would have run alone


def test_everything_excluded_returns_nothing(generator: ItemGenerator) -> None:
    everything = list(generator.index.item_ids)
    assert generator.recommend(prompt_for(generator, []), k=5, exclude=everything) == []
    found = generator.recommend(prompt_for(generator, []), k=5, exclude=everything[:-2])
    assert sorted(item for item, _ in found) == sorted(everything[-2:])


def test_tiny_random_base_is_seeded_and_uses_the_smollm2_tokenizer(face_app_cache) -> None:
    first, tokenizer = llm.load_base(llm.TINY_RANDOM, seed=3)
    second, _ = llm.load_base(llm.TINY_RANDOM, seed=3)
    assert len(tokenizer) == 49152 and tokenizer.eos_token == "<|im_end|>"
    assert torch.equal(first.model.embed_tokens.weight, second.model.embed_tokens.weight)
    assert first.config.hidden_size == 64 and first.config.num_hidden_layers == 2


def test_new_rows_start_from_their_description_words(face_app_cache) -> None:
    model, tokenizer = llm.load_base(llm.TINY_RANDOM)
    ids = llm.add_index_tokens(model, tokenizer, ["<a_0>", "<a_1>"], {"<a_0>": ["comedy"]})
    weight = model.get_input_embeddings().weight
    pieces = tokenizer("comedy", add_special_tokens=False)["input_ids"]
    assert torch.allclose(weight[ids[0]], weight[pieces].mean(dim=0))
    assert torch.allclose(weight[ids[1]], weight[: ids[0]].mean(dim=0), atol=1e-6)
    assert weight.shape[0] == len(tokenizer) == 49154


def test_serving_prompts_carry_face_words_only_for_a_model_tuned_on_them() -> None:
    from face_app.decoder import GeneratorSpec

    with_task = GeneratorSpec("smollm2", user_descriptors="face", training={"examples": {"next": 9, "descriptors": 2}})
    without_task = GeneratorSpec("smollm2", user_descriptors="face", training={"examples": {"next": 9}})
    genre_words = GeneratorSpec("smollm2", user_descriptors="genre words",
                                training={"examples": {"next": 9, "descriptors": 2}})
    assert with_task.prompts_user_words and not without_task.prompts_user_words
    assert not genre_words.prompts_user_words
    assert GeneratorSpec("smollm2", user_descriptors="face").prompts_user_words  # a spec that records no task counts


def test_a_historys_sasrec_state_is_computed_once_and_equals_the_encoders() -> None:
    """`TastePrompt.state_for`: the `<taste>` token and the guide's prior read one forward pass per history."""
    import numpy as np

    from face_app.decoder import TastePrompt
    from face_app.sequential import SASRec, SASRecShape

    torch.manual_seed(0)
    encoder = SASRec(1, 20, SASRecShape(dim=16, layers=1, heads=2, max_len=5))
    taste = TastePrompt(encoder, [str(i) for i in range(20)], hidden=8)
    calls = []
    forward = encoder.forward
    encoder.forward = lambda seq: (calls.append(seq.shape), forward(seq))[1]
    history = np.array([3, 1, 4, 1, 5, 9, 2])

    first = taste.state_for(history)
    assert torch.allclose(first, taste.states([history])) and len(calls) == 2  # equal to the encoder's own state
    assert taste.state_for(history) is first and len(calls) == 2  # the second read: no forward pass
    assert taste.state_for(np.array([0, 0, *history])) is first  # the same last max_len items: the same state
    other = taste.state_for(np.array([3, 1, 4, 1, 5, 9, 6]))
    assert not torch.allclose(other, first) and len(calls) == 3


def test_a_recbole_style_taste_encoder_is_saved_and_loaded_in_its_style(tmp_path) -> None:
    """The `<taste>` token's SASRec keeps its style through the bundle: loaded as the project's pre-LN style, a
    RecBole-style encoder's weights would load (the same names) and give other states."""
    import numpy as np

    from face_app.decoder import TastePrompt
    from face_app.sequential import SASRec, SASRecShape

    torch.manual_seed(0)
    encoder = SASRec(1, 20, SASRecShape(dim=16, layers=1, heads=2, max_len=5, style="recbole")).eval()
    TastePrompt(encoder, [str(i) for i in range(20)], hidden=8).save(tmp_path)
    loaded = TastePrompt.load(tmp_path, hidden=8)
    history = [np.array([3, 1, 4, 1, 5])]

    assert loaded.encoder.config.style == "recbole"
    assert torch.allclose(loaded.encoder.state(history), encoder.state(history), atol=1e-6)
    as_sasrec = SASRec(1, 20, SASRecShape(dim=16, layers=1, heads=2, max_len=5)).eval()
    as_sasrec.load_state_dict(encoder.state_dict())
    assert not torch.allclose(as_sasrec.state(history), encoder.state(history), atol=1e-3)


def test_bf16_runs_the_models_products_in_bf16_and_keeps_the_scores_close(generator: ItemGenerator) -> None:
    """`use_precision("bf16")`: the model's linear layers compute in bf16 (autocast), the level's log-probabilities
    come back as fp32 close to fp32's, the remembered stems of the other precision are dropped, and an unknown
    precision is refused."""
    prompt = prompt_for(generator, ["item7", "item8"])
    ids = generator.prompt_ids(prompt)
    try:
        generator.use_precision("fp32").forget_prefixes()
        exact, _ = generator.level_logprobs(generator.prefill(ids), 0)
        assert generator._stems
        seen: list[torch.dtype] = []
        hook = generator.model.get_decoder().layers[0].mlp.down_proj.register_forward_hook(
            lambda module, args, out: seen.append(out.dtype))
        try:
            generator.use_precision("bf16")
            assert not generator._stems  # fp32's stems are not continued in bf16
            half, _ = generator.level_logprobs(generator.prefill(ids), 0)
        finally:
            hook.remove()
        assert seen and set(seen) == {torch.bfloat16}  # the header's prefill and the prompt's
        assert half.dtype == torch.float32
        assert torch.allclose(half, exact, atol=0.05) and not torch.equal(half, exact)
        again, _ = generator.level_logprobs(generator.use_precision("fp32").prefill(ids), 0)
        assert torch.equal(again, exact)  # the fp32 weights come back as they were
        with pytest.raises(ValueError, match="fp32 or bf16"):
            generator.use_precision("auto")
    finally:
        generator.use_precision("fp32")
