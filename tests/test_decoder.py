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


@pytest.mark.parametrize("history", [["item1", "item2"], ["item5", "item9", "item30", "item31"]])
def test_fast_decoder_matches_generate(generator: ItemGenerator, history: list[str]) -> None:
    prompt = prompt_for(generator, history)
    fast = generator.recommend(prompt, k=10, beams=10)
    reference = generator.recommend_with_generate(prompt, k=10, beams=10)
    assert [item for item, _ in fast] == [item for item, _ in reference]
    assert [s for _, s in fast] == pytest.approx([s for _, s in reference], abs=1e-3)


def test_the_cached_chat_header_gives_the_same_scores_as_a_full_prefill(generator: ItemGenerator) -> None:
    ids = generator.prompt_ids(prompt_for(generator, ["item7", "item8"]))
    assert 0 < len(generator._header_ids) < ids.shape[1]
    with torch.no_grad():
        full = generator.model(input_ids=ids, logits_to_keep=1).logits
        for _ in range(2):  # first call fills the header cache, the second copies it
            cached = generator.prefill(ids).logits
            assert torch.allclose(cached, full, atol=1e-4)


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
