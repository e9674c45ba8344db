"""What a pronunciation lexicon entry may be: its kinds and limits, and the request that sets one. A module of its
own so that both the lexicon (chatterbox/lexicon.py, which checks entries with it) and the API's request models
(requests.py) take it from here, neither from the other."""
from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field

from .base import Request

KINDS = ("respell", "phonemes")
MAX_TERM = 100
MAX_SAY = 200
MAX_PHONEMES = 200


class LexiconEntryRequest(Request):
    """``PUT /lexicon/{term}``: a respelling (``say``), or IPA (``phonemes``) for engines that take phonemes
    (Piper; the others say ``say``, else the term as written)."""
    model_config = {"json_schema_extra": {"example": {"say": "Win", "case_sensitive": False}}}
    codes: ClassVar[dict[str, str]] = {"kind": "invalid_value"}

    # The lengths are the lexicon's to check (it trims first, and answers `too_long`): the document says them.
    say: str = Field(None, description="what to say instead (1 to 200 characters, no line breaks); required for a "
                                       "respelling", json_schema_extra={"maxLength": MAX_SAY})
    phonemes: Optional[str] = Field(None, description="the term's IPA as Piper reads it (e.g. `ˈaɪpiːeɪ`), checked "
                                                      "against the voice's phonemes; implies kind `phonemes`")
    case_sensitive: bool = Field(False, description="match the term's case exactly (else any case)")
    kind: Literal[tuple(KINDS)] = Field(  # type: ignore[valid-type]
        None, description="left out: `phonemes` when `phonemes` is given, else `respell`")
    term: Optional[str] = Field(None, description="the path's term, if given at all")


class LexiconImportEntry(LexiconEntryRequest):
    term: str = Field(description="matched as a whole word", json_schema_extra={"minLength": 1,
                                                                                 "maxLength": MAX_TERM})
