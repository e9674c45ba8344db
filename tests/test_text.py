"""Normalization, sentence splitting and chunking of text for speech (pure functions: fast, no services)."""
from __future__ import annotations

import random
import re

import pytest

from chatterbox.text import (TextError, chunk_text, normalize, number_to_words, ordinal_to_words, split_sentences,
                             year_to_words)


@pytest.mark.parametrize("n,words", [
    (0, "zero"), (7, "seven"), (13, "thirteen"), (19, "nineteen"), (20, "twenty"), (40, "forty"),
    (42, "forty-two"), (100, "one hundred"), (101, "one hundred one"), (999, "nine hundred ninety-nine"),
    (1000, "one thousand"), (1234, "one thousand two hundred thirty-four"), (1_000_000, "one million"),
    (2_000_000_019, "two billion nineteen"), (-5, "minus five"), (10**15, "one quadrillion"),
    (10**15 + 1, "one quadrillion one"), (3 * 10**18, "three quintillion"),
])
def test_number_to_words(n, words):
    assert number_to_words(n) == words


def test_number_to_words_reads_absurdly_long_numbers_as_digits():
    assert number_to_words(10**21) == "one" + " zero" * 21


@pytest.mark.parametrize("n,words", [
    (1, "first"), (2, "second"), (3, "third"), (5, "fifth"), (8, "eighth"), (9, "ninth"), (11, "eleventh"),
    (12, "twelfth"), (20, "twentieth"), (21, "twenty-first"), (100, "one hundredth"), (0, "zeroth"),
])
def test_ordinal_to_words(n, words):
    assert ordinal_to_words(n) == words


@pytest.mark.parametrize("n,words", [
    (1984, "nineteen eighty-four"), (1900, "nineteen hundred"), (1905, "nineteen oh five"),
    (2005, "two thousand five"), (2000, "two thousand"), (2010, "twenty ten"), (2024, "twenty twenty-four"),
    (1100, "eleven hundred"),
])
def test_year_to_words(n, words):
    assert year_to_words(n) == words


@pytest.mark.parametrize("text,expected", [
    # whitespace, unicode, quotes, control characters
    ("  Hello\n\tworld\u00a0again\r\n ", "Hello world again"),
    ("one\u2028two\u3000three", "one two three"),
    ("\u201cQuoted\u201d and \u2018single\u2019, it\u2019s", "\"Quoted\" and 'single', it's"),
    ("\u00abGuillemets\u00bb", '"Guillemets"'),
    ("Control\x00chars\x07here", "Controlcharshere"),
    ("soft\u00adhyphen zero\u200bwidth", "softhyphen zerowidth"),
    ("\uff21\uff22\uff23 \ufb01ne", "ABC fine"),  # NFKC: full-width letters, ligatures
    # pauses
    ("Wait\u2014what", "Wait, what"),
    ("Wait \u2013 what", "Wait, what"),
    ("Wait - what", "Wait, what"),
    ("Wait -- what", "Wait, what"),
    ("well-known", "well-known"),
    ("Well\u2026 maybe", "Well, maybe"),
    ("Well... maybe", "Well, maybe"),
    ("Well. . . maybe", "Well, maybe"),
    ("And then...", "And then."),
    ("...and so", "and so"),
    ("Really?... yes", "Really? yes"),
    ("Pages 10\u201320", "Pages ten to twenty"),
    ("- first item\n- second item", "first item, second item"),
    # abbreviations
    ("Mr. Smith met Dr. Jones and Mrs. Lee.", "Mister Smith met Doctor Jones and Missus Lee."),
    ("Ms. Fox and Prof. Plum", "Miz Fox and Professor Plum"),
    ("Sammy Davis Jr. and John Sr. came", "Sammy Davis Junior and John Senior came"),
    ("cats vs. dogs", "cats versus dogs"),
    ("apples, pears, etc. and more", "apples, pears, et cetera and more"),
    ("apples, pears, etc. Then more.", "apples, pears, et cetera. Then more."),
    ("apples, pears, etc.", "apples, pears, et cetera."),
    ("Fruit, e.g. apples, i.e. food.", "Fruit, for example apples, that is food."),
    ("E.g. this.", "For example this."),
    ("It weighs approx. 5 kilos", "It weighs approximately five kilos"),
    ("Ask the Dr.", "Ask the Doctor."),
    ("St. Paul lives on Main St. now.", "Saint Paul lives on Main Street now."),
    ("Meet me on Elm St.", "Meet me on Elm Street."),
    ("In St. Louis. The Main St. Bakery.", "In Saint Louis. The Main Street Bakery."),
    ("He is No. 1", "He is number one"),
    ("No. 5 wins", "Number five wins"),
    ("No. I won't.", "No. I won't."),
    ("Salt & pepper", "Salt and pepper"),
    ("AT&T", "AT and T"),
    # numbers
    ("I have 1,234 books", "I have one thousand two hundred thirty-four books"),
    ("I have 1234567 books", "I have one million two hundred thirty-four thousand five hundred sixty-seven books"),
    ("1,000,000,000,000,000 stars", "one quadrillion stars"),
    ("It is -3 outside", "It is minus three outside"),
    ("It is \u22123 outside", "It is minus three outside"),
    ("-1,234 and +5", "minus one thousand two hundred thirty-four and plus five"),
    ("COVID-19", "COVID-nineteen"),
    ("Pi is 3.14", "Pi is three point one four"),
    ("Add .5 and 0.25", "Add point five and zero point two five"),
    ("1,234.56", "one thousand two hundred thirty-four point five six"),
    ("Agent 007", "Agent zero zero seven"),
    ("version 1.2.3", "version one point two point three"),
    ("an mp3 in 3D on A4", "an mp three in three D on A four"),
    ("1\u00bd cups and \u00be of it", "one and one half cups and three quarters of it"),
    # ordinals
    ("The 21st day", "The twenty-first day"),
    ("The 1st, 2nd, 3rd, 4th, 11th, 12th and 100th",
     "The first, second, third, fourth, eleventh, twelfth and one hundredth"),
    ("1st St.", "first Street."),
    # years
    ("In 1984 and 2005 and 2024", "In nineteen eighty-four and two thousand five and twenty twenty-four"),
    ("In 1900 and 1905", "In nineteen hundred and nineteen oh five"),
    ("From 1984-1990", "From nineteen eighty-four to nineteen ninety"),
    ("In 2100 and 1099", "In two thousand one hundred and one thousand ninety-nine"),
    ("The 1980s and the '90s and the 80s", "The nineteen eighties and the nineties and the eighties"),
    ("100s of people, 1000s of them", "hundreds of people, thousands of them"),
    ("(-1984)", "(minus one thousand nine hundred eighty-four)"),
    ("Jan 5th, 2024.", "Jan fifth, twenty twenty-four."),
    # money, percentages
    ("It costs $5.50", "It costs five dollars and fifty cents"),
    ("It costs $1", "It costs one dollar"),
    ("It costs $0.01", "It costs one cent"),
    ("It costs $1,250.5", "It costs one thousand two hundred fifty dollars and fifty cents"),
    ("Only \u00a32,000", "Only two thousand pounds"),
    ("Only \u00a31.01", "Only one pound and one penny"),
    ("Just \u20ac0.99", "Just ninety-nine cents"),
    ("A \u20ac3 fee", "A three euros fee"),
    ("It raised $5 million", "It raised five million dollars"),
    ("It raised $1.5 billion", "It raised one point five billion dollars"),
    ("Down -$5", "Down minus five dollars"),
    ("Up 50%", "Up fifty percent"),
    ("Up 50 % and -3.5%", "Up fifty percent and minus three point five percent"),
    ("Up 1,000%", "Up one thousand percent"),
    # times
    ("At 3:30", "At three thirty"),
    ("At 10:00", "At ten o'clock"),
    ("At 7:05 and 23:45", "At seven oh five and twenty-three forty-five"),
    ("At 5pm and 5:30 p.m. and 10 AM", "At five P M and five thirty P M and ten A M"),
    ("Meet at 5 p.m. Then go.", "Meet at five P M. Then go."),
])
def test_normalize(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize("text", [
    "Mr. Smith paid $5.50 at 3:30 on the 21st of May, 1984 \u2014 approx. 50% of it\u2026",
    "St. Paul & Dr. Who, e.g. 1,234.5 of the '80s; -3 vs. +4.",
    "Well... \u201cNo. 5\u201d, she said - then left.",
])
def test_normalize_is_idempotent_and_leaves_no_digits(text):
    once = normalize(text)
    assert normalize(once) == once
    assert not re.search(r"\d", once)
    assert "  " not in once and once == once.strip()


@pytest.mark.parametrize("text", ["", "   ", "\n\t\u00a0"])
def test_normalize_refuses_empty_text(text):
    with pytest.raises(TextError, match="text is empty"):
        normalize(text)


def test_split_sentences_keeps_punctuation_and_quotes():
    text = normalize('He said "Stop." Then he went! Was it 3.5 metres? Mr. Lee (who knew) nodded.')
    assert split_sentences(text) == ['He said "Stop."', "Then he went!",
                                     "Was it three point five metres?", "Mister Lee (who knew) nodded."]


@pytest.mark.parametrize("text,sentences", [
    ("no end punctuation", ["no end punctuation"]),
    ("", []),
    ("   ", []),
    ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
    ("Wow!! Huh?! Ok.", ["Wow!!", "Huh?!", "Ok."]),
    ("Pi is 3.14 today. Yes.", ["Pi is 3.14 today.", "Yes."]),
    ("He left.\" She stayed.) Fine.]", ['He left."', "She stayed.)", "Fine.]"]),
    ("(Really?) Yes.", ["(Really?)", "Yes."]),
    ('"Stop!" he said. Then silence.', ['"Stop!" he said.', "Then silence."]),
    ("Mr. Smith met Dr. Jones. Then St. Paul.", ["Mr. Smith met Dr. Jones.", "Then St. Paul."]),
    ("Fruit, e.g. apples, i.e. food. Also approx. ten vs. nine.",
     ["Fruit, e.g. apples, i.e. food.", "Also approx. ten vs. nine."]),
    ("Prof. X and Mrs. Y and Ms. Z and Smith Jr. and etc. all came.",
     ["Prof. X and Mrs. Y and Ms. Z and Smith Jr. and etc. all came."]),
    ("See No. 5 now. No. I refuse.", ["See No. 5 now.", "No.", "I refuse."]),
    ("J. R. R. Tolkien wrote it. So did I. The U.S. is big.",
     ["J. R. R. Tolkien wrote it.", "So did I.", "The U.S. is big."]),
    ("file.txt and example.com stay whole.", ["file.txt and example.com stay whole."]),
])
def test_split_sentences(text, sentences):
    assert split_sentences(text) == sentences


def test_chunks_respect_the_limit_and_keep_sentences_whole():
    text = " ".join(f"This is sentence number {i} of the test." for i in range(40))
    chunks = chunk_text(text, 120)
    assert all(len(c) <= 120 for c in chunks)
    assert all(c.endswith(".") for c in chunks)  # whole sentences only
    assert len(chunks) > 5
    assert " ".join(chunks) == normalize(text)


def test_chunks_are_packed_greedily():
    assert chunk_text("One. Two. Three. Four.", 20) == ["One. Two. Three.", "Four."]
    assert chunk_text("Hello there.") == ["Hello there."]
    assert chunk_text("A" * 20, 20) == ["A" * 20]


def test_chunk_text_normalizes():
    assert chunk_text("Mr. Smith paid $5.") == ["Mister Smith paid five dollars."]


def test_long_sentences_split_at_clauses_then_words():
    clause = "and the river ran on, "
    chunks = chunk_text(clause * 20 + "until morning.", 60)
    assert all(len(c) <= 60 for c in chunks)
    assert all(c.endswith(",") for c in chunks[:-1])  # every cut at a clause boundary
    assert chunks[-1].endswith("until morning.")
    words = chunk_text("Short one. " + "A very long sentence without any commas at all that keeps on going. Tail.", 40)
    assert words == ["Short one.", "A very long sentence without any commas", "at all that keeps on going. Tail."]


def test_a_giant_word_is_hard_split():
    assert chunk_text("x" * 130, 50) == ["x" * 50, "x" * 50, "x" * 30]
    chunks = chunk_text("see " + "y" * 45 + " end.", 20)
    assert all(0 < len(c) <= 20 for c in chunks)
    assert "".join(chunks).replace(" ", "") == "see" + "y" * 45 + "end."


def _generated_texts(seed: int, count: int):
    """Texts mixing everything normalize rewrites with long sentences, long clauses and over-long words."""
    rng = random.Random(seed)
    vocabulary = ["alpha", "beta,", "gamma.", "delta!", "epsilon?", "zeta;", "eta", "theta:", "iota", "kappa.",
                  "Mr.", "Dr.", "St.", "Paul", "1,234", "3.14", "$5.50", "50%", "3:30", "21st", "1984", "\u2014",
                  "...", "&", "e.g.", '"quoted."', "(aside)", "z" * 70, "\n", "\t", "No.", "7", "-3", "\u2026"]
    for _ in range(count):
        yield " ".join(rng.choice(vocabulary) for _ in range(rng.randint(1, 120))), rng.randint(20, 300)


def test_no_word_is_lost_in_random_texts():
    for text, limit in _generated_texts(1234, 80):
        chunks = chunk_text(text, limit)
        assert all(0 < len(c) <= limit and c == c.strip() for c in chunks)
        normalized = normalize(text)
        if max(len(w) for w in normalized.split()) <= limit:
            assert " ".join(chunks).split() == normalized.split()
        else:  # a hard-split word comes back in pieces: compare the characters
            assert "".join("".join(chunks).split()) == "".join(normalized.split())


def test_no_word_is_lost_in_long_prose():
    sentence = ("On the 21st of May, 1984, Mr. Smith \u2014 who paid $5.50 for 1,234 apples \u2014 said: "
                "\u201cIt's approx. 50% of what St. Paul's costs at 3:30\u2026\u201d ")
    for repeat, limit in ((5, 20), (20, 80), (60, 300), (60, 1000)):
        text = sentence * repeat + " and then a run-on clause" * repeat * 3
        chunks = chunk_text(text, limit)
        assert all(0 < len(c) <= limit for c in chunks)
        assert " ".join(chunks).split() == normalize(text).split()


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "\u00a0\u2003"])
def test_empty_text_is_refused(text):
    with pytest.raises(TextError, match="empty"):
        chunk_text(text)


@pytest.mark.parametrize("text", ["...", " - ", "\u2014", "\x00\x01"])
def test_text_with_nothing_to_say_is_refused(text):
    with pytest.raises(TextError):
        chunk_text(text)


def test_non_strings_are_a_type_error():
    with pytest.raises(TypeError):
        chunk_text(None)  # type: ignore[arg-type]


def test_text_error_is_a_value_error():
    assert issubclass(TextError, ValueError)


def test_limit_too_small():
    with pytest.raises(ValueError, match="at least 20"):
        chunk_text("Hello.", 19)
    assert chunk_text("Hello.", 20) == ["Hello."]
