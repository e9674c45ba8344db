"""Normalization and chunking of text for speech."""
from __future__ import annotations

import random

import pytest

from chatterbox.text import TextError, chunk_text, normalize, number_to_words, split_sentences


@pytest.mark.parametrize("n,words", [
    (0, "zero"), (7, "seven"), (13, "thirteen"), (40, "forty"), (42, "forty-two"), (100, "one hundred"),
    (101, "one hundred one"), (1234, "one thousand two hundred thirty-four"), (1_000_000, "one million"),
    (2_000_000_019, "two billion nineteen"), (-5, "minus five"),
    (10**15, "one quadrillion"),
])
def test_number_to_words(n, words):
    assert number_to_words(n) == words


@pytest.mark.parametrize("text,expected", [
    ("  Hello\n\tworld  ", "Hello world"),
    ("\u201cQuoted\u201d and \u2018single\u2019", "\"Quoted\" and 'single'"),
    ("Wait\u2014what", "Wait, what"),
    ("Wait - what", "Wait, what"),
    ("Well\u2026 maybe", "Well, maybe"),
    ("Well... maybe", "Well, maybe"),
    ("And then...", "And then."),
    ("Mr. Smith met Dr. Jones and Mrs. Lee.", "Mister Smith met Doctor Jones and Missus Lee."),
    ("St. Paul lives on Main St. now.", "Saint Paul lives on Main Street now."),
    ("Fruit, e.g. apples, i.e. food.", "Fruit, for example apples, that is food."),
    ("No. 5 wins", "number five wins"),
    ("Salt & pepper", "Salt and pepper"),
    ("I have 1,234 books", "I have one thousand two hundred thirty-four books"),
    ("It is -3 outside", "It is minus three outside"),
    ("Pi is 3.14", "Pi is three point one four"),
    ("The 21st day", "The twenty-first day"),
    ("The 2nd and 3rd and 11th", "The second and third and eleventh"),
    ("In 1984 and 2005 and 2024", "In nineteen eighty-four and two thousand five and twenty twenty-four"),
    ("In 1900", "In nineteen hundred"),
    ("It costs $5.50", "It costs five dollars and fifty cents"),
    ("It costs $1", "It costs one dollar"),
    ("Only £2,000", "Only two thousand pounds"),
    ("Just €0.99", "Just ninety-nine cents"),
    ("Up 50%", "Up fifty percent"),
    ("At 3:30 and 10:00 and 7:05", "At three thirty and ten o'clock and seven oh five"),
    ("Control\x00chars\x07here", "Control chars here"),
])
def test_normalize(text, expected):
    assert normalize(text) == expected


def test_split_sentences_keeps_punctuation_and_quotes():
    text = normalize('He said "Stop." Then he went! Was it 3.5 metres? Mr. Lee (who knew) nodded.')
    assert split_sentences(text) == ['He said "Stop."', "Then he went!",
                                     "Was it three point five metres?", "Mister Lee (who knew) nodded."]
    assert split_sentences("no end punctuation") == ["no end punctuation"]


def test_chunks_respect_the_limit_and_keep_sentences_whole():
    text = " ".join(f"This is sentence number {i} of the test." for i in range(40))
    chunks = chunk_text(text, 120)
    assert all(len(c) <= 120 for c in chunks)
    assert all(c.endswith(".") for c in chunks)  # whole sentences only
    assert len(chunks) > 5


def test_long_sentences_split_at_clauses_then_words():
    clause = "and the river ran on, "
    chunks = chunk_text(clause * 20 + "until morning.", 60)
    assert all(len(c) <= 60 for c in chunks)
    assert chunks[0].endswith(",")
    giant = chunk_text("x" * 130, 50)
    assert giant == ["x" * 50, "x" * 50, "x" * 30]


def test_no_word_is_lost():
    rng = random.Random(1234)
    vocabulary = ["alpha", "beta,", "gamma.", "delta!", "epsilon?", "zeta;", "eta", "theta:", "iota", "kappa."]
    for _ in range(50):
        text = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(1, 300)))
        limit = rng.randint(20, 200)
        chunks = chunk_text(text, limit)
        assert all(0 < len(c) <= limit for c in chunks)
        assert " ".join(chunks).split() == normalize(text).split()


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "...", " - "])
def test_nothing_to_say(text):
    with pytest.raises(TextError):
        chunk_text(text)


def test_limit_too_small():
    with pytest.raises(ValueError):
        chunk_text("Hello.", 5)
