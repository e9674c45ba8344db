"""Text in the job's language: numbers, dates, ordinals and abbreviations said in it, sentences split by each
script's marks, chunks as long in time as an English chunk."""
from __future__ import annotations

import pytest

from chatterbox.text import chunk_text
from chatterbox.text_languages import (LANGUAGES, LanguageError, check_language, chinese_number, normalize_in,
                                       split_sentences_in)


@pytest.mark.parametrize("language, text, said", [
    ("de", "Ich habe 1.234 Bücher und 12,5 % davon gelesen.",
     "Ich habe eintausendzweihundertvierunddreißig Bücher und zwölf Komma fünf Prozent davon gelesen."),
    ("de", "Am 3.10.2024 kam Dr. Weber, z.B. mit dem 2. Zug.",
     "Am dritten Oktober zweitausendvierundzwanzig kam Doktor Weber, zum Beispiel mit dem zweite Zug."),
    ("fr", "Le 1er mai, 2 500 personnes sont venues avec M. Dupont.",
     "Le premier mai, deux mille cinq cents personnes sont venues avec Monsieur Dupont."),
    ("fr", "Il fait 21,5 degrés.", "Il fait vingt et un virgule cinq degrés."),
    ("es", "El 3º día llegaron 1.500 personas con el Sr. García.",
     "El tercero día llegaron mil quinientos personas con el señor García."),
    ("it", "Sono le 7 e ho 3,5 euro.", "Sono le sette e ho tre virgola cinque euro."),
    ("ru", "Мне 25 лет.", "Мне двадцать пять лет."),
    ("ja", "2025年に3人が来た。", "二千二十五年に三人が来た。"),
    ("ko", "3월 15일입니다.", "삼월 십오일입니다."),
    ("zh", "今天有1234个人来了。", "今天有一千二百三十四个人来了。"),
    ("hi", "मेरे पास 3 किताबें हैं।", "मेरे पास 3 किताबें हैं।"),  # num2words has no Hindi: digits stay
    ("en", "I have 3 cats.", "I have three cats."),
])
def test_numbers_dates_and_abbreviations_are_said_in_the_language(language, text, said):
    assert normalize_in(text, language) == said


def test_a_thousands_separator_of_another_language_is_not_read_as_a_decimal():
    # "3,141" is three point one four one in German, 3.141 is three thousand one hundred forty-one
    assert normalize_in("3,141", "de") == "drei Komma eins vier eins"
    assert normalize_in("3.141", "de") == "dreitausendeinhunderteinundvierzig"


@pytest.mark.parametrize("n, said", [(0, "零"), (10, "十"), (15, "十五"), (105, "一百零五"), (1234, "一千二百三十四"),
                                     (10005, "一万零五"), (20000000, "二千万"), (-3, "负三")])
def test_chinese_numbers(n, said):
    assert chinese_number(n) == said


@pytest.mark.parametrize("language, text, sentences", [
    ("zh", "你好。我很好！你呢？", ["你好。", "我很好!", "你呢?"]),
    ("ja", "これは本です。あれはペンです。", ["これは本です。", "あれはペンです。"]),
    ("hi", "मैं ठीक हूँ। तुम कैसे हो?", ["मैं ठीक हूँ।", "तुम कैसे हो?"]),
    ("ar", "كيف حالك؟ أنا بخير.", ["كيف حالك؟", "أنا بخير."]),
    ("el", "Τι κάνεις; Καλά.", ["Τι κάνεις;", "Καλά."]),
    ("de", "Hallo; wie geht's? Gut.", ["Hallo; wie geht's?", "Gut."]),  # a semicolon is a question mark only in Greek
])
def test_sentences_split_at_each_scripts_marks(language, text, sentences):
    assert split_sentences_in(normalize_in(text, language), language) == sentences


def test_chunks_of_dense_scripts_are_shorter_and_keep_no_spaces_between_sentences():
    chinese = chunk_text("今天天气很好。我们去公园散步吧！" * 20, 300, "zh")
    assert len(chinese) > 1 and max(map(len, chinese)) <= 90  # 300 English characters speak as long as ~90 Chinese
    assert all(" " not in c for c in chinese)
    german = chunk_text("Das ist ein Satz. " * 40, 300, "de")
    assert max(map(len, german)) <= 300 and len(german) == 3


@pytest.mark.parametrize("given, code", [(None, "en"), ("", "en"), ("de", "de"), ("de-DE", "de"), ("pt_BR", "pt"),
                                         ("FR", "fr"), ("nb", "no"), ("iw", "he")])
def test_language_codes(given, code):
    assert check_language(given) == code


def test_an_unknown_language_names_the_known_ones():
    with pytest.raises(LanguageError, match="unknown language 'xx'.*ar, da, de"):
        check_language("xx")
    assert len(LANGUAGES) == 23
