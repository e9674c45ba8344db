"""Text in the 23 languages of Chatterbox Multilingual: numbers, dates and abbreviations said in the job's language,
sentences split by each script's own marks, and chunk lengths that fit each script's density.

English goes through ``chatterbox.text.normalize`` (our own number reader, which controls the exact wording); the
other languages through num2words where it has them. Where it has none (Greek, Hindi, Malay, Swahili), digits stay
digits: the model reads what its training text had, and a wrong word would be worse than a digit.
"""
from __future__ import annotations

import re
import unicodedata

from .model.languages import SUPPORTED_LANGUAGES as LANGUAGES  # code -> English name, the model's 23

# Characters of speech per character of text, against English: a Chinese or Japanese character is a syllable or
# two, an English letter a fraction of one. A chunk of N English characters is about N * scale characters of these,
# so every language's chunk is about as long in time (which is what the model's limits are about).
CHUNK_SCALE = {"zh": 0.3, "ja": 0.35, "ko": 0.5}

# Sentence ends of every script: Latin, Greek (its question mark is U+037E, often typed as ";"), the CJK full stops,
# exclamation and question marks (full width), Devanagari danda, Arabic question mark and full stop.
_END = r"[.!?;\u037e\u3002\uff01\uff1f\uff0e\u0964\u0965\u061f\u06d4]"
_CJK_END = "\u3002\uff01\uff1f"  # these end a sentence without a space after them

_NUM2WORDS = {"ar", "da", "de", "en", "es", "fi", "fr", "he", "it", "ja", "ko", "nl", "no", "pl", "pt", "ru", "sv",
              "tr"}
_DECIMAL_COMMA = {"da", "de", "es", "fi", "fr", "it", "nl", "no", "pl", "pt", "ru", "sv", "tr", "el"}
# Ordinals as written: "3." (German, Danish, Norwegian, Finnish, Turkish, Polish), "3e"/"1er" (French), "3º"/"3ª"
# (Spanish, Portuguese, Italian).
_ORDINAL_DOT = {"de", "da", "no", "fi", "tr", "pl"}
_ORDINAL_FR = re.compile(r"\b(\d{1,9})(?:er|re|e|ème|eme)\b")
_ORDINAL_ROMANCE = re.compile(r"\b(\d{1,9})[ºª°](?!\w)")
_ORDINAL_DOT_RE = re.compile(r"\b(\d{1,3})\.(?=\s+\w)(?!\s+\d)")

_MONTHS = {
    "de": "Januar Februar März April Mai Juni Juli August September Oktober November Dezember",
    "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre décembre",
    "es": "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre",
    "it": "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre dicembre",
    "pt": "janeiro fevereiro março abril maio junho julho agosto setembro outubro novembro dezembro",
    "nl": "januari februari maart april mei juni juli augustus september oktober november december",
    "sv": "januari februari mars april maj juni juli augusti september oktober november december",
    "da": "januar februar marts april maj juni juli august september oktober november december",
    "no": "januar februar mars april mai juni juli august september oktober november desember",
}
_DATE_DMY = re.compile(r"\b(\d{1,2})[./](\d{1,2})[./](\d{4})\b")
_DATE_ISO = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")

_ABBREVIATIONS = {
    "de": {"z.B.": "zum Beispiel", "z. B.": "zum Beispiel", "usw.": "und so weiter", "bzw.": "beziehungsweise",
           "d.h.": "das heißt", "Dr.": "Doktor", "Prof.": "Professor", "Nr.": "Nummer", "ca.": "circa",
           "Hr.": "Herr", "Fr.": "Frau", "Str.": "Straße"},
    "fr": {"M.": "Monsieur", "Mme": "Madame", "Mlle": "Mademoiselle", "Dr": "Docteur", "etc.": "et cetera",
           "p. ex.": "par exemple", "n°": "numéro"},
    "es": {"Sr.": "señor", "Sra.": "señora", "Srta.": "señorita", "Dr.": "doctor", "Dra.": "doctora",
           "etc.": "etcétera", "p. ej.": "por ejemplo", "Ud.": "usted", "Uds.": "ustedes"},
    "it": {"Sig.": "signor", "Sig.ra": "signora", "Dott.": "dottor", "ecc.": "eccetera", "es.": "esempio"},
    "pt": {"Sr.": "senhor", "Sra.": "senhora", "Dr.": "doutor", "Dra.": "doutora", "etc.": "etcétera"},
    "nl": {"bijv.": "bijvoorbeeld", "dhr.": "de heer", "mevr.": "mevrouw", "enz.": "enzovoort"},
}

_NUMBER = re.compile(r"(?<![\w.,])(-)?(\d{1,3}(?:([.,\u00a0\u202f ])\d{3})+|\d+)(?:([.,])(\d+))?(?![\w])")
# In Chinese, Japanese and Korean a number stands between letters with no space ("有1234个").
_NUMBER_CJK = re.compile(r"(?<![\d.,])(-)?(\d{1,3}(?:(,)\d{3})+|\d+)(?:([.])(\d+))?(?!\d)")
_CJK = {"zh", "ja", "ko"}
_PERCENT = {"de": "Prozent", "fr": "pour cent", "es": "por ciento", "it": "per cento", "pt": "por cento",
            "nl": "procent", "sv": "procent", "da": "procent", "no": "prosent", "fi": "prosenttia", "pl": "procent",
            "ru": "процентов", "tr": "yüzde", "ar": "بالمئة", "he": "אחוז"}
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u201c": '"',
                         "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u00ab": '"', "\u00bb": '"'})


class LanguageError(ValueError):
    pass


def check_language(language: str | None) -> str:
    """A language code of LANGUAGES ("en" for None); raises LanguageError naming the known codes."""
    if language is None or language == "":
        return "en"
    if not isinstance(language, str):
        raise LanguageError(f"language must be a string, not {type(language).__name__}")
    code = language.strip().lower().replace("_", "-").split("-")[0]  # "de-DE", "pt_BR" -> the language's code
    code = {"nb": "no", "nn": "no", "iw": "he"}.get(code, code)
    if code not in LANGUAGES:
        raise LanguageError(f"unknown language {language!r}; Chatterbox speaks {', '.join(LANGUAGES)}")
    return code


def _words(value: float | int, language: str, to: str = "cardinal") -> str | None:
    if language == "zh":
        return chinese_number(int(value)) if to == "cardinal" and float(value).is_integer() else None
    if language not in _NUM2WORDS:
        return None
    from num2words import num2words

    try:
        return num2words(value, lang=language, to=to)
    except (NotImplementedError, OverflowError, ValueError, TypeError):
        return None


_ZH_DIGITS = "零一二三四五六七八九"


def chinese_number(n: int) -> str:
    """An integer in Chinese numerals, as it is read: 1234 -> 一千二百三十四, 10005 -> 一万零五."""
    if n < 0:
        return "负" + chinese_number(-n)
    if n < 10:
        return _ZH_DIGITS[n]
    if n >= 10**16:
        return "".join(_ZH_DIGITS[int(d)] for d in str(n))

    def below_10000(m: int) -> str:
        out, zero = "", False
        for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
            digit, m = divmod(m, value)
            if digit:
                out += ("零" if zero and out else "") + _ZH_DIGITS[digit] + unit
                zero = False
            else:
                zero = True
        return out

    out = ""
    for value, unit in ((10**12, "兆"), (10**8, "亿"), (10**4, "万"), (1, "")):
        part, n = divmod(n, value)
        if part:
            if out and part < 1000:
                out += "零"
            out += below_10000(part) + unit
    out = out.rstrip("零")
    return out[1:] if out.startswith("一十") else out  # 十五, not 一十五


def _number(m: re.Match, language: str) -> str:
    sign, whole, group_sep, dec_sep, frac = m.groups()
    comma_decimal = language in _DECIMAL_COMMA
    if group_sep is not None and dec_sep is None and group_sep == ("," if comma_decimal else "."):
        # The language's decimal mark, not a thousands separator: "3,141" in German is three point one four one
        # ("3.141" is three thousand ...). Two of them ("1,234,567" in German) are neither: read as written.
        if whole.count(group_sep) != 1:
            return m.group(0)
        whole, dec_sep, frac = whole.split(group_sep)[0], group_sep, whole.split(group_sep)[1]
        group_sep = None
    digits = re.sub(r"[.,\u00a0\u202f ]", "", whole)
    if dec_sep is not None and dec_sep != ("," if comma_decimal else "."):
        return m.group(0)  # a separator this language does not use for decimals: leave it to be read as written
    if len(digits) > 15:
        return m.group(0)
    value: float | int = int(digits)
    if frac is not None:
        value = float(f"{digits}.{frac}")
    words = _words(-value if sign else value, language)
    return words if words is not None else m.group(0)


def _date(day: int, month: int, year: int, language: str) -> str | None:
    if language not in _MONTHS or not 1 <= month <= 12 or not 1 <= day <= 31:
        return None
    month_name = _MONTHS[language].split()[month - 1]
    if language == "de":
        day_words = _words(day, language, "ordinal")
        return f"{day_words}n {month_name} {_words(year, language, 'year') or year}" if day_words else None
    if language == "fr" and day == 1:
        return f"premier {month_name} {_words(year, language)}"
    joiner = {"es": " de ", "pt": " de "}.get(language, " ")
    return f"{_words(day, language)}{joiner}{month_name}{joiner}{_words(year, language, 'year') or year}"


def normalize_in(text: str, language: str) -> str:
    """Text made speakable in ``language`` (a code of LANGUAGES); English as chatterbox.text.normalize does."""
    from .text import TextError, normalize

    if language == "en":
        return normalize(text)
    if not text.strip():
        raise TextError("text is empty")
    if language in ("es", "pt", "it"):  # before NFKC, which makes "3º" into "3o"
        text = _ORDINAL_ROMANCE.sub(lambda m: _words(int(m[1]), language, "ordinal") or m[0], text)
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    text = re.sub(r"\s+", " ", text)
    if not text.isprintable():
        text = "".join(c for c in text if unicodedata.category(c) not in {"Cc", "Cf", "Cs", "Co"})
    text = re.sub(r"\s*(?:\.\s*){3,}", ", ", text)
    text = re.sub(r"\s*[\u2012\u2013\u2014\u2015]\s*|\s+-{1,2}\s+", ", ", text)
    for short, long in _ABBREVIATIONS.get(language, {}).items():
        text = re.sub(r"(?<!\w)" + re.escape(short) + (r"(?!\w)" if short[-1].isalnum() else ""), long, text)
    text = _DATE_ISO.sub(lambda m: _date(int(m[3]), int(m[2]), int(m[1]), language) or m[0], text)
    text = _DATE_DMY.sub(lambda m: _date(int(m[1]), int(m[2]), int(m[3]), language) or m[0], text)
    if language == "fr":
        text = _ORDINAL_FR.sub(lambda m: ("premier" if m[1] == "1" else _words(int(m[1]), "fr", "ordinal"))
                               or m[0], text)
    if language in _ORDINAL_DOT:
        text = _ORDINAL_DOT_RE.sub(lambda m: _words(int(m[1]), language, "ordinal") or m[0], text)
    if language in _PERCENT:
        text = re.sub(r"(\d)\s?%", lambda m: f"{m[1]} {_PERCENT[language]}", text)
    text = (_NUMBER_CJK if language in _CJK else _NUMBER).sub(lambda m: _number(m, language), text)
    return re.sub(r"\s+", " ", text).strip()


_CLOSE = r"[\"')\]\u300d\u300f]*"
_END_RE = re.compile(_END + r"+" + _CLOSE + r"(?=\s|$)|[" + _CJK_END + r"]+" + _CLOSE)
_END_NO_SEMICOLON = re.compile(_END_RE.pattern.replace(";", ""))
_END_CJK = re.compile(r"[.!?\u3002\uff01\uff1f]+" + _CLOSE)


def split_sentences_in(text: str, language: str) -> list[str]:
    """Sentences of normalized text, by the sentence marks of every script (a CJK full stop needs no space after
    it). English keeps chatterbox.text's rules (abbreviations, initials)."""
    from .text import split_sentences

    if language == "en":
        return split_sentences(text)
    pattern = _END_RE if language == "el" else _END_NO_SEMICOLON  # only Greek writes its question mark as ";"
    if language in ("zh", "ja"):  # NFKC made their full-width marks ASCII; no space follows them
        pattern = _END_CJK
    sentences, start = [], 0
    for m in pattern.finditer(text):
        sentences.append(text[start:m.end()].strip())
        start = m.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


def join_sentences(chunk: str, language: str) -> str:
    """A packed chunk with the spaces packing put between sentences taken out where the script has none."""
    return re.sub(r"(?<=[.!?\u3002])\s+", "", chunk) if language in ("zh", "ja") else chunk


def chunk_chars_in(max_chars: int, language: str) -> int:
    """The chunk length for ``language`` that speaks about as long as ``max_chars`` English characters."""
    return max(20, int(max_chars * CHUNK_SCALE.get(language, 1.0)))
