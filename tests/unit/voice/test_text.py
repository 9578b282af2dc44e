from __future__ import annotations

from bastion.voice.text import SentenceSplitter, speakable, split_sentences


def test_first_sentence_is_released_before_the_rest_arrives() -> None:
    splitter = SentenceSplitter()
    released: list[tuple[int, str]] = []
    sentence = "The capital of France is Paris. It is known for the Eiffel Tower."
    words = sentence.split()
    for i, word in enumerate(words):
        for sentence in splitter.feed(word if i == 0 else " " + word):
            released.append((i, sentence))
    released += [(len(words), s) for s in splitter.flush()]
    assert released[0][1] == "The capital of France is Paris."
    # Released when the next word starts, long before the last word arrived.
    assert released[0][0] == words.index("It")
    assert released[1] == (len(words), "It is known for the Eiffel Tower.")


def test_abbreviations_numbers_and_lists() -> None:
    text = "Ask Dr. Smith about it. It costs 3.50 dollars, e.g. cheap!\n- first item\n- second"
    assert split_sentences(text) == [
        "Ask Dr. Smith about it.",
        "It costs 3.50 dollars, e.g. cheap!",
        "first item",
        "second",
    ]


def test_tiny_sentences_join_the_next_one() -> None:
    splitter = SentenceSplitter(min_chars=12)
    assert splitter.feed("Yes. That is right. ") == ["Yes. That is right."]


def test_speakable_drops_markup_code_and_urls() -> None:
    md = "## Result\nRun `ls -la` or **see** [the docs](https://x.test/a).\n```py\nx = 1\n```\nDone"
    assert speakable(md) == "Result Run ls -la or see the docs. Done"
    assert speakable("visit https://example.test/page now") == "visit a link now"
