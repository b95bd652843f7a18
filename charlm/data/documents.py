"""A text as documents, and its Unicode cleaning: both applied to text chunks on their way to the encoder.

In data.documents lines | paragraphs | files, the text is a list of documents (one per line, one per
paragraph, one per file), each ended by EOD_MARK, which the encoder turns into the reserved symbol <eod>:
separators (line breaks, blank lines, a file's trailing white space) become one mark, and empty documents
vanish. Everything is a regular expression or a str method over a chunk: no Python work per character. A
chunk's trailing white space (or a character that may combine with the next chunk's first) is held back
to the next chunk, so a separator or a combining sequence cut by a chunk boundary is read whole.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

# a document's end in text chunks: a character no text holds (iter_text refuses NUL bytes), which the
# vocabulary's lookup table encodes as <eod>
EOD_MARK = "\x00"
SPACE = " \t\r\n"
SEPARATORS = {
    "lines": re.compile(r"[ \t]*\r?\n(?:[ \t]*\r?\n)*"),  # a line break, and any blank lines after it
    "paragraphs": re.compile(r"[ \t]*\r?\n(?:[ \t]*\r?\n)+"),  # one blank line or more
}
LEADING = re.compile(r"^(?:[ \t]*\r?\n)+")  # blank lines before the first document
HELD_BACK = 8  # characters kept for the next chunk by the Unicode normalisation: a Hangul syllable or a mark run


def end_documents(chunks: Iterator[str], mode: str) -> Iterator[str]:
    """The chunks with each document of a lines/paragraphs text ended by EOD_MARK (and nothing else)."""
    pattern, carry, started = SEPARATORS[mode], "", False
    for chunk in chunks:
        text = carry + chunk
        cut = len(text.rstrip(SPACE))  # a separator may go on in the next chunk: hold the white space back
        head, carry = text[:cut], text[cut:]
        if not started:
            head = LEADING.sub("", head)
        if head:
            started = True
            yield pattern.sub(EOD_MARK, head)
    if started:
        yield EOD_MARK


def end_file(chunks: Iterator[str]) -> Iterator[str]:
    """One file's chunks as one document: its trailing white space dropped, ended by EOD_MARK."""
    carry = ""
    for chunk in chunks:
        text = carry + chunk
        cut = len(text.rstrip(SPACE))
        if cut:
            yield text[:cut]
        carry = text[cut:]
    yield EOD_MARK


def clean_unicode(chunks: Iterator[str], form: str | None, lowercase: bool) -> Iterator[str]:
    """The chunks in Unicode normal form `form` (NFC, NFKC or None) and lower case when asked."""
    carry = ""
    for chunk in chunks:
        text = carry + chunk
        cut = _stable_cut(text) if form else len(text)
        carry = text[cut:]
        yield _clean(text[:cut], form, lowercase)
    if carry:
        yield _clean(carry, form, lowercase)


def _stable_cut(text: str) -> int:
    """Where to cut `text` so that normalising the two parts apart equals normalising it whole: before the
    last few characters, moved back to a starter (a character that combines with nothing before it)."""
    cut = max(0, len(text) - HELD_BACK)
    while cut > 0 and unicodedata.combining(text[cut]):  # a handful of steps at most: a run of marks
        cut -= 1
    return cut


def _clean(text: str, form: str | None, lowercase: bool) -> str:
    if form:
        text = unicodedata.normalize(form, text)
    return text.lower() if lowercase else text


def split_documents(text: str) -> list[str]:
    """A text of documents (each ended by EOD_MARK) as the list of their texts."""
    return text.split(EOD_MARK)[:-1]
