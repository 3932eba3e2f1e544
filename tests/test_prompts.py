"""Prompt templates shared by training and serving."""

from __future__ import annotations

import random

import pytest

from face_app import prompts


def test_recommend_prompt_first_turn_is_history_only() -> None:
    text = prompts.recommend_prompt(["<a_1><b_2><c_3>", "<a_4><b_5><c_6>"], None, None, None)
    assert text == "History: <a_1><b_2><c_3><a_4><b_5><c_6>\nNext:"


def test_recommend_prompt_with_titles_descriptors_and_request() -> None:
    text = prompts.recommend_prompt(["<a_1>", "<a_2>"], ["Heat (1995)", "Fargo (1996)"], ["dark", "gritty"],
                                    " something funnier ")
    assert text.splitlines() == [
        "User: dark, gritty",
        "History: <a_1> Heat (1995); <a_2> Fargo (1996)",
        "Request: something funnier",
        "Next:",
    ]
    assert prompts.recommend_prompt([], request="a comedy") == "History: none\nRequest: a comedy\nNext:"
    with pytest.raises(ValueError):
        prompts.recommend_prompt(["<a_1>"], ["one", "two"])


def test_intentions_are_deterministic_and_grounded_in_metadata() -> None:
    first = [prompts.intention(random.Random(3), ["Horror"], 1994, ["eerie"], "Alien (1979)") for _ in range(5)]
    assert len(set(first)) == 1
    seen = {prompts.intention(random.Random(seed), ["Horror"], 1994, (), None) for seed in range(40)}
    assert seen == {"a horror movie from the 1990s", "something scary", "a movie from the 1990s"}
    assert prompts.intention(random.Random(0), [], None) == "something good"


def test_history_words_come_from_the_most_frequent_genres() -> None:
    genres = [["Comedy", "Romance"], ["Comedy", "Romance"], ["Horror"]]
    assert prompts.history_words(genres, k=2) == ["funny", "romantic"]
    assert prompts.item_title("Heat", 1995) == "Heat (1995)" and prompts.item_title("Heat") == "Heat"


def test_chat_text_wraps_the_prompt_in_the_chat_template(face_app_cache) -> None:
    from face_app.llm import load_tokenizer

    tokenizer = load_tokenizer()
    prompt = "History: <a_1><b_2>\nNext:"
    messages = [{"role": "system", "content": prompts.SYSTEM}, {"role": "user", "content": prompt}]
    expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompts.chat_text(tokenizer, prompt) == expected
    assert expected.endswith("<|im_start|>assistant\n") and "You are a helpful AI assistant" not in expected
