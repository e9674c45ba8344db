# TEMPORARY (being replaced by helper)
import re
class TextError(ValueError): pass
def normalize(t): return re.sub(r"\s+", " ", t).strip()
def split_sentences(t): return [s for s in re.split(r"(?<=[.!?])\s+", t) if s]
def chunk_text(text, max_chars=300):
    t = normalize(text)
    if not t: raise TextError("text is empty")
    chunks, cur = [], ""
    for s in split_sentences(t):
        if cur and len(cur) + 1 + len(s) > max_chars: chunks.append(cur); cur = s
        else: cur = f"{cur} {s}".strip()
    if cur: chunks.append(cur)
    return chunks
