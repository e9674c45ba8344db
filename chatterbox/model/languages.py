"""Per-language text front ends of Chatterbox Multilingual, as the reference (chatterbox-tts 0.1.7) applies them.

Each one takes text that is already lower-cased and NFKD-normalized and returns what the grapheme tokenizer reads:

- zh: words segmented by spacy-pkuseg (a space between words), every ideograph written as its Cangjie code from
  ``Cangjie5_TC.json`` (``[cj_x]`` per code letter, a duplicate's index as more letters, then ``[cj_.]``);
- ja: kanji replaced by their hiragana reading (pykakasi), katakana kept, NFKD again;
- ko: Hangul syllables decomposed into conjoining jamo, stripped;
- he: diacritics (niqqud) added by dicta-onnx, when its ONNX model is at hand;
- ru: stress marks from russian-text-stresser, when it is installed.

A front end whose package or model is missing degrades that language alone, with one warning saying what is
missing; the reference instead fails for every language when pkuseg cannot download its model (FACTS.md).
"""
from __future__ import annotations

import json
import logging
import os
import unicodedata
from pathlib import Path

log = logging.getLogger(__name__)

SUPPORTED_LANGUAGES: dict[str, str] = {
    "ar": "Arabic", "da": "Danish", "de": "German", "el": "Greek", "en": "English", "es": "Spanish",
    "fi": "Finnish", "fr": "French", "he": "Hebrew", "hi": "Hindi", "it": "Italian", "ja": "Japanese",
    "ko": "Korean", "ms": "Malay", "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "pt": "Portuguese",
    "ru": "Russian", "sv": "Swedish", "sw": "Swahili", "tr": "Turkish", "zh": "Chinese",
}

CANGJIE_FILE = "Cangjie5_TC.json"
DICTA_MODEL_ENV = "CHATTERBOX_DICTA_MODEL"  # path of dicta-onnx's model file (dicta-1.0.onnx)
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


def check_language(language_id: str) -> str:
    """The language code, lower-cased; ValueError naming the supported ones for anything else."""
    code = str(language_id or "").lower()
    if code not in SUPPORTED_LANGUAGES:
        raise ValueError(f"unsupported language_id {language_id!r}; supported languages: "
                         f"{', '.join(SUPPORTED_LANGUAGES)}")
    return code


# --- Japanese --------------------------------------------------------------------------------------------------

def _is_kanji(c: str) -> bool:
    return 0x4E00 <= ord(c) <= 0x9FFF  # CJK Unified Ideographs (the reference's range)


def _is_katakana(c: str) -> bool:
    return 0x30A1 <= ord(c) <= 0x30FA


class Japanese:
    def __init__(self):
        self._kakasi = None
        self.available = True

    def __call__(self, text: str) -> str:
        if self._kakasi is None and self.available:
            try:
                import pykakasi
            except ImportError:
                self.available = False
                _warn_once("ja", "pykakasi is not installed: Japanese kanji are not converted to hiragana "
                                 "(pip install pykakasi)")
            else:
                self._kakasi = pykakasi.kakasi()
        if self._kakasi is None:
            return text
        out = []
        for part in self._kakasi.convert(text):
            orig, hira = part["orig"], part["hira"]
            if any(_is_kanji(c) for c in orig):
                # A reading that starts with the particles は/へ gets a space before it, as the reference does.
                out.append(" " + hira if hira[:1] in ("は", "へ") else hira)
            elif orig and all(_is_katakana(c) for c in orig):
                out.append(orig)  # katakana stays katakana
            else:
                out.append(orig)
        # pykakasi composes kana again (が): decompose for the tokenizer, as at the start.
        return unicodedata.normalize("NFKD", "".join(out))


# --- Korean ----------------------------------------------------------------------------------------------------

def _jamo(c: str) -> str:
    if not "\uac00" <= c <= "\ud7af":
        return c
    n = ord(c) - 0xAC00  # syllable = (initial * 21 + medial) * 28 + final
    initial, medial, final = n // (21 * 28), (n % (21 * 28)) // 28, n % 28
    return chr(0x1100 + initial) + chr(0x1161 + medial) + (chr(0x11A7 + final) if final else "")


def korean(text: str) -> str:
    # NFKD has already decomposed precomposed syllables; this also covers text that skipped it.
    return "".join(_jamo(c) for c in text).strip()


# --- Chinese ---------------------------------------------------------------------------------------------------

def find_cangjie(model_dir: str | Path) -> Path | None:
    """Cangjie5_TC.json in the model directory itself, or in the Hugging Face cache layout inside it
    (``models--ResembleAI--chatterbox/snapshots/<rev>/``), which is where the reference looks."""
    model_dir = Path(model_dir)
    if (model_dir / CANGJIE_FILE).is_file():
        return model_dir / CANGJIE_FILE
    repo = model_dir / "models--ResembleAI--chatterbox"
    ref = repo / "refs" / "main"
    if ref.is_file() and (repo / "snapshots" / ref.read_text().strip() / CANGJIE_FILE).is_file():
        return repo / "snapshots" / ref.read_text().strip() / CANGJIE_FILE
    found = sorted((repo / "snapshots").glob(f"*/{CANGJIE_FILE}")) if repo.is_dir() else []
    return found[0] if found else None


class Chinese:
    """Segmentation, then Cangjie codes. Without pkuseg (not installed, or its model not downloadable) the text
    is not segmented; without Cangjie5_TC.json ideographs stay as they are (the tokenizer then reads [UNK])."""

    def __init__(self, cangjie_path: str | Path | None):
        self.code: dict[str, str] = {}  # glyph -> Cangjie code (the last entry of a glyph wins, as in the reference)
        self.glyphs: dict[str, list[str]] = {}  # code -> glyphs in file order (a glyph's index tells it apart)
        if cangjie_path is None:
            _warn_once("zh-cangjie", f"{CANGJIE_FILE} is not in the model directory: Chinese characters are not "
                                     "encoded as Cangjie codes")
        else:
            for entry in json.loads(Path(cangjie_path).read_text(encoding="utf-8")):
                glyph, code = entry.split("\t")[:2]
                self.code[glyph] = code
                self.glyphs.setdefault(code, []).append(glyph)
        self._segmenter = None
        self._segmenter_tried = False

    @property
    def segmenter(self):
        if not self._segmenter_tried:
            self._segmenter_tried = True
            try:
                from spacy_pkuseg import pkuseg
            except ImportError:
                _warn_once("zh-pkuseg", "spacy-pkuseg is not installed: Chinese text is not segmented into "
                                        "words (pip install spacy-pkuseg)")
                return None
            try:
                self._segmenter = pkuseg()  # loads (or downloads, once, into ~/.pkuseg) its default model
            except Exception as exc:
                _warn_once("zh-pkuseg", "spacy-pkuseg's model is not available (it downloads it into ~/.pkuseg on "
                                        f"first use: {type(exc).__name__}): Chinese text is not segmented into "
                                        "words")
        return self._segmenter

    def encode_glyph(self, glyph: str) -> str | None:
        code = self.code.get(glyph)
        if code is None:
            return None
        index = self.glyphs[code].index(glyph)
        return code + (str(index) if index else "")

    def __call__(self, text: str) -> str:
        segmenter = self.segmenter
        if segmenter is not None:
            text = " ".join(segmenter.cut(text))
        out = []
        for c in text:
            code = self.encode_glyph(c) if unicodedata.category(c) == "Lo" else None
            out.append(c if code is None else "".join(f"[cj_{x}]" for x in code) + "[cj_.]")
        return "".join(out)


# --- Hebrew and Russian ----------------------------------------------------------------------------------------

class Hebrew:
    """dicta-onnx needs its model file: from CHATTERBOX_DICTA_MODEL, or dicta-1.0.onnx in the model directory.
    (The reference calls ``Dicta()`` without one, which fails, so it never adds diacritics.)"""

    def __init__(self, model_dir: str | Path | None):
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self._dicta = None
        self._tried = False

    def __call__(self, text: str) -> str:
        if not self._tried:
            self._tried = True
            path = os.environ.get(DICTA_MODEL_ENV) or (
                str(self.model_dir / "dicta-1.0.onnx") if self.model_dir is not None else "")
            try:
                from dicta_onnx import Dicta
            except ImportError:
                _warn_once("he", "dicta-onnx is not installed: Hebrew text gets no diacritics")
            else:
                if path and Path(path).is_file():
                    try:
                        self._dicta = Dicta(path)
                    except Exception as exc:
                        _warn_once("he", f"dicta-onnx cannot load {path} ({exc}): Hebrew text gets no diacritics")
                else:
                    _warn_once("he", f"dicta-onnx's model (dicta-1.0.onnx) is not in the model directory and "
                                     f"{DICTA_MODEL_ENV} is not set: Hebrew text gets no diacritics")
        if self._dicta is None:
            return text
        try:
            return self._dicta.add_diacritics(text)
        except Exception as exc:  # as the reference: a failed pass leaves the text as it is
            log.warning("Hebrew diacritization failed: %s", exc)
            return text


class Russian:
    def __init__(self):
        self._stresser = None
        self._tried = False

    def __call__(self, text: str) -> str:
        if not self._tried:
            self._tried = True
            try:
                from russian_text_stresser.text_stresser import RussianTextStresser
                self._stresser = RussianTextStresser()
            except ImportError:
                _warn_once("ru", "russian-text-stresser is not installed: Russian text gets no stress marks")
            except Exception as exc:
                _warn_once("ru", f"russian-text-stresser failed to load ({exc}): Russian text gets no stress marks")
        if self._stresser is None:
            return text
        try:
            return self._stresser.stress_text(text)
        except Exception as exc:
            log.warning("Russian stress labeling failed: %s", exc)
            return text


class FrontEnds:
    """The front ends of one model directory, each made on first use (pykakasi's dictionary, pkuseg's model)."""

    def __init__(self, model_dir: str | Path | None = None, cangjie_path: str | Path | None = None):
        self.model_dir = Path(model_dir) if model_dir is not None else None
        if cangjie_path is None and self.model_dir is not None:
            cangjie_path = find_cangjie(self.model_dir)
        self._cangjie_path = cangjie_path
        self._made: dict[str, object] = {}

    def _get(self, code: str):
        if code not in self._made:
            self._made[code] = {"zh": lambda: Chinese(self._cangjie_path), "ja": Japanese, "ko": lambda: korean,
                                "he": lambda: Hebrew(self.model_dir), "ru": Russian}[code]()
        return self._made[code]

    @property
    def chinese(self) -> Chinese:
        return self._get("zh")

    def __call__(self, text: str, language_id: str) -> str:
        if language_id in ("zh", "ja", "ko", "he", "ru"):
            return self._get(language_id)(text)
        return text
