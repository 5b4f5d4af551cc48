"""Text cleaning for training data: Unicode, invisible characters, HTML, URLs/e-mails/phones, whitespace, length.

Each operation is a small function of one string; `clean_text` runs the enabled ones in a fixed order and
`clean_frame` runs them over a column, counting what each changed and saying why each dropped row went.

Order matters, and is chosen so that cleaning twice gives the same text as cleaning once:
NFKC first (full-width "＜ｐ＞" must be seen as a tag), then HTML (entities decode before tags are removed,
so escaped markup "&lt;p&gt;" is removed too, and NFKC runs again on what the entities produced), then
invisible characters (entities such as "&#8203;" produce them), then masking (URLs before e-mails before
phones, so that "user@host" inside a URL and "13812345678@qq.com" stay whole), and whitespace last, since
every step before it can leave gaps behind.
"""

from __future__ import annotations

import html
import operator
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from tunesmith.errors import TunesmithError
from tunesmith.fields import option
from tunesmith.rows import distinct_texts

MASK_CHOICES = ("keep", "mask", "strip")
TOKENS = {"urls": "<url>", "emails": "<email>", "phones": "<phone>"}


@dataclass
class CleanConfig:
    enabled: bool = option(False, "clean the texts before training (see the --clean-* flags)", flag="clean")
    nfkc: bool = option(
        True,
        "Unicode NFKC normalisation: full-width letters, digits and ，；：？！（） become ASCII, "
        "while 。、《》“” stay; note that ² ① ﬁ … become 2 1 fi ...",
        flag="clean-nfkc",
    )
    strip_control: bool = option(
        True,
        "remove control, zero-width, bidi-override and BOM characters; tabs and line breaks stay whitespace, "
        "and ZWJ/ZWNJ stay because emoji sequences and Persian or Indic words need them",
        flag="clean-strip-control",
    )
    strip_html: bool = option(
        True,
        "remove HTML tags, comments and <script>/<style> blocks and decode entities; block tags such as "
        "<br> and <p> become spaces; a lone <name> with no closing tag is kept as text (prompt placeholders)",
        flag="clean-strip-html",
    )
    urls: str = option(
        "mask",
        "URLs: mask as <url>, strip or keep; masked by default because a link costs dozens of sub-word tokens "
        "of --max-length and rarely generalises, while the token keeps the fact that there was one",
        flag="clean-urls",
        choices=MASK_CHOICES,
    )
    emails: str = option(
        "mask",
        "e-mail addresses: mask as <email>, strip or keep; masked by default because they are personal data "
        "a fine-tuned model should not memorise",
        flag="clean-emails",
        choices=MASK_CHOICES,
    )
    phones: str = option(
        "mask",
        "phone numbers (Chinese mobile and landline, +international, North American): mask as <phone>, strip "
        "or keep; masked by default, like e-mails, as personal data",
        flag="clean-phones",
        choices=MASK_CHOICES,
    )
    collapse_whitespace: bool = option(
        True,
        "turn each run of whitespace, line breaks included, into one space and trim both ends",
        flag="clean-collapse-whitespace",
    )
    min_chars: int = option(
        0, "drop texts shorter than this many characters after cleaning (0: off)", flag="clean-min-chars"
    )
    max_chars: int = option(
        0, "drop texts longer than this many characters after cleaning (0: off)", flag="clean-max-chars"
    )
    drop_empty: bool = option(True, "drop texts that are empty after cleaning", flag="clean-drop-empty")

    def validate(self) -> CleanConfig:
        for flag, value in (("--clean-min-chars", self.min_chars), ("--clean-max-chars", self.max_chars)):
            if value < 0:
                raise TunesmithError(f"{flag} must be 0 (off) or positive, got {value}")
        if self.min_chars and self.max_chars and self.min_chars > self.max_chars:
            raise TunesmithError(
                f"--clean-min-chars {self.min_chars} is above --clean-max-chars {self.max_chars}; no text could pass"
            )
        return self


@dataclass
class CleanResult:
    kept: pd.DataFrame  # cleaned rows under their original index, so callers can name the file's lines
    removed: pd.DataFrame  # dropped rows with their original text and a `reason` column
    changed: dict[str, int]  # rows each operation changed, plus dropped_empty / dropped_short / dropped_long


# --- Unicode --------------------------------------------------------------------------------------------


def nfkc(text: str) -> str:
    if unicodedata.is_normalized("NFKC", text):  # the common case, and much cheaper than normalising
        return text
    return unicodedata.normalize("NFKC", text)


# C0/C1 controls other than tab and line breaks, soft hyphen, Arabic letter mark, Mongolian vowel separator,
# zero-width space, LRM/RLM, bidi embeddings/overrides/isolates, word joiner and invisible operators, BOM,
# interlinear annotation marks, and lone surrogates (left by broken decoding; they cannot be written as UTF-8).
_INVISIBLE = re.compile(
    "[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\u00ad\u061c\u180e\u200b\u200e\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u2069\ufeff\ufff9-\ufffb\ud800-\udfff]"
)
# Everything str.splitlines treats as a line boundary becomes "\n", so line structure survives.
_LINE_BREAK = re.compile("\r\n?|[\x0b\x0c\x1c-\x1f\x85\u2028\u2029]")


def strip_control(text: str) -> str:
    return _LINE_BREAK.sub("\n", _INVISIBLE.sub("", text))


# --- HTML -------------------------------------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Formatting inside a sentence: removing it must not split a word ("<b>un</b>likely").
_INLINE_TAGS = _words(
    "a abbr b bdi bdo cite code data del dfn em font i ins kbd mark q s samp small span strike strong sub "
    "sup time tt u var wbr"
)
_BLOCK_TAGS = _words(
    "address area article aside audio base blockquote body br button canvas caption center col colgroup dd "
    "details dialog dir div dl dt embed fieldset figcaption figure footer form frame frameset h1 h2 h3 h4 h5 "
    "h6 head header hgroup hr html iframe img input label legend li link main map menu meta nav noscript "
    "object ol optgroup option output p param picture pre progress rp rt ruby section select source summary "
    "table tbody td template textarea tfoot th thead title tr track ul video"
)
# Only entities with their semicolon: html.unescape alone would also turn "&not" or "&times" in plain text
# and URL queries ("?a=1&times=2") into "¬" and "×".
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_SCRIPT = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_CDATA = re.compile(r"<!\[CDATA\[(.*?)\]\]>", re.DOTALL)
_DECLARATION = re.compile(r"<![A-Za-z][^<>]*>|<\?[A-Za-z][^<>]*\?>")
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:_.-]*)((?:\s[^<>]*)?)(/?)>")
_CLOSING_TAG = re.compile(r"</([A-Za-z][A-Za-z0-9:_.-]*)\s*>")
_QUOTED_ATTRIBUTE = re.compile(r"""[\w:.-]+\s*=\s*["']""")
_MAX_UNESCAPES = 3  # "&amp;lt;" (escaped twice) is common in scraped feeds; deeper nesting is not


def strip_html(text: str) -> str:
    if "<" not in text and "&" not in text:
        return text
    for _ in range(_MAX_UNESCAPES):
        decoded = _ENTITY.sub(lambda m: html.unescape(m.group()), text)
        if decoded == text:
            break
        text = decoded
    text = _SCRIPT.sub(" ", text)
    text = _COMMENT.sub("", text)
    text = _CDATA.sub(r"\1", text)
    text = _DECLARATION.sub("", text)
    closed = {name.lower() for name in _CLOSING_TAG.findall(text)}
    return _TAG.sub(partial(_replace_tag, closed=closed), text)


def _replace_tag(m: re.Match[str], closed: set[str]) -> str:
    closing, name, attributes, self_closing = m.group(1), m.group(2).lower(), m.group(3), m.group(4)
    markup = (
        closing
        or self_closing
        or name in _INLINE_TAGS
        or name in _BLOCK_TAGS
        or name in closed
        or attributes.rstrip().endswith("/")
        or _QUOTED_ATTRIBUTE.search(attributes)
    )
    if not markup:
        return m.group()  # "<name>" alone is a placeholder in prompt text (and our own "<url>"), not a tag
    return "" if name in _INLINE_TAGS else " "


# --- URLs, e-mails, phone numbers -------------------------------------------------------------------------

# ASCII only, so a URL stops where Chinese text runs on without a space ("见https://a.cn/x了解"); percent-
# encoded paths still match whole.
_URL = re.compile(
    r"(?<![A-Za-z0-9@.])(?:(?:https?|ftp)://|www\.)[A-Za-z0-9\-]"
    r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*",
    re.IGNORECASE,
)
_URL_TRAILING = ".,;:!?'\"*"
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+/-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z0-9-])"
)
# Digits need a phone's shape: a Chinese mobile number (11 digits from 13-19, +86/0086 and space or hyphen
# groups allowed), "+" and a country code, an area code with a separator, or North American 3-3-4 groups
# with hyphens, dots or a bracketed area code (plain spaces would catch lists of numbers).
# Bare runs of digits otherwise (prices, years, order, ID and card numbers) never match, and neither do
# digits inside words, longer numbers, decimals, dates or URL paths and queries.
_PHONE = re.compile(
    r"""
    (?<![0-9A-Za-z_/=&?#%+.-])
    (?:
        (?:(?:\+|00)86[ -]?|\(\+?86\)[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2}
      | (?P<intl>\+[1-9][0-9]{0,2}(?:[ .-]?(?:\([0-9]{1,4}\)|[0-9]{1,5})){1,6})
      | \(0[0-9]{2,3}\)[ -]?[0-9]{7,8}
      | 0[0-9]{2,3}[ -][0-9]{7,8}
      | (?:1[ .-])?(?:\([2-9][0-9]{2}\)[ ]?|[2-9][0-9]{2}[.-])[0-9]{3}[.-][0-9]{4}
    )
    (?![0-9A-Za-z_@]|[.,-][0-9])
    """,
    re.VERBOSE,
)
_E164_DIGITS = range(8, 16)  # country code included; E.164 allows at most 15
_PHONE_MIN_DIGITS = 8  # the fewest any shape above masks: fewer, and the regular expression need not run


def mask_urls(text: str, mode: str = "mask") -> str:
    if "://" not in text and "www." not in text.lower():
        return text  # cannot hold a URL: the regular expression is the slow part of cleaning a big file
    return _URL.sub(partial(_replace_url, token=_token("urls", mode)), text)


def _replace_url(m: re.Match[str], token: str) -> str:
    url = m.group()
    end = len(url)
    while end:
        last = url[end - 1]
        unbalanced = (last == ")" and url.count("(", 0, end) < url.count(")", 0, end)) or (
            last == "]" and url.count("[", 0, end) < url.count("]", 0, end)
        )
        if last not in _URL_TRAILING and not unbalanced:
            break
        end -= 1  # sentence punctuation after a link, or the ")" closing "(see https://...)"
    return token + url[end:]


def mask_emails(text: str, mode: str = "mask") -> str:
    return _EMAIL.sub(_token("emails", mode), text) if "@" in text else text


def mask_phones(text: str, mode: str = "mask") -> str:
    if sum(map(text.count, "0123456789")) < _PHONE_MIN_DIGITS:
        return text
    return _PHONE.sub(partial(_replace_phone, token=_token("phones", mode)), text)


def _replace_phone(m: re.Match[str], token: str) -> str:
    if m.group("intl") and sum(c.isdigit() for c in m.group()) not in _E164_DIGITS:
        return m.group()
    return token


def _token(kind: str, mode: str) -> str:
    if mode not in ("mask", "strip"):
        raise TunesmithError(f"--clean-{kind} must be one of {', '.join(MASK_CHOICES)}; got {mode!r}")
    return TOKENS[kind] if mode == "mask" else ""


# --- whitespace, and the whole pipeline -------------------------------------------------------------------

_WHITESPACE = re.compile(r"\s+")


def collapse_whitespace(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


Step = tuple[str, Callable[[str], str]]


def _steps(cfg: CleanConfig) -> list[Step]:
    cfg.validate()
    steps: list[Step] = []
    if cfg.nfkc:
        steps.append(("nfkc", nfkc))
    if cfg.strip_html:
        # Entities can decode to full-width or compatibility characters ("&#xFF21;"), so NFKC runs again.
        steps.append(("html", (lambda t: nfkc(strip_html(t))) if cfg.nfkc else strip_html))
    if cfg.strip_control:
        steps.append(("control", strip_control))
    for kind, fn in (("urls", mask_urls), ("emails", mask_emails), ("phones", mask_phones)):
        mode = getattr(cfg, kind)
        if mode != "keep":
            _token(kind, mode)  # an unknown mode fails here, before any text is touched
            steps.append((kind, partial(fn, mode=mode)))
    if cfg.collapse_whitespace:
        steps.append(("whitespace", collapse_whitespace))
    return steps


def clean_text(text: str, cfg: CleanConfig) -> str:
    for _, fn in _steps(cfg):
        text = fn(text)
    return text


def clean_frame(df: pd.DataFrame, cfg: CleanConfig, column: str = "text") -> CleanResult:
    if column not in df.columns:
        raise TunesmithError(f"no text column {column!r} to clean; columns are: {', '.join(map(str, df.columns))}")
    # Each distinct text is cleaned once (exports repeat many), and counted as often as it occurs.
    codes, texts = distinct_texts(df[column])
    rows = np.bincount(codes, minlength=len(texts))
    changed: dict[str, int] = {}
    for name, fn in _steps(cfg):
        out = [fn(t) for t in texts]
        changed[name] = int(rows[np.fromiter(map(operator.ne, texts, out), dtype=bool, count=len(texts))].sum())
        texts = out
    reasons = np.array([_drop_reason(len(t), cfg) for t in texts], dtype=object)
    drop_text = np.array([r is not None for r in reasons], dtype=bool)
    drop = drop_text[codes]
    kept = df[~drop].copy()
    kept[column] = list(np.array(texts, dtype=object)[codes[~drop]])  # a list: positional, even if labels repeat
    removed = df[drop].copy()
    removed["reason"] = list(reasons[codes[drop]])
    for key, prefix in (("dropped_empty", "empty"), ("dropped_short", "shorter"), ("dropped_long", "longer")):
        chosen = np.array([r is not None and r.startswith(prefix) for r in reasons], dtype=bool)
        changed[key] = int(rows[chosen].sum())
    return CleanResult(kept=kept, removed=removed, changed=changed)


def _drop_reason(length: int, cfg: CleanConfig) -> str | None:
    if length == 0 and cfg.drop_empty:
        return "empty after cleaning"
    if cfg.min_chars and length < cfg.min_chars:
        return f"shorter than {cfg.min_chars} characters"
    if cfg.max_chars and length > cfg.max_chars:
        return f"longer than {cfg.max_chars} characters"
    return None
