"""Behaviour of tunesmith.data.clean: each operation on English and Chinese, masking, filters and counts."""

import dataclasses

import pandas as pd
import pytest

from tunesmith.data.clean import (
    CleanConfig,
    clean_frame,
    clean_text,
    collapse_whitespace,
    mask_emails,
    mask_phones,
    mask_urls,
    nfkc,
    strip_control,
    strip_html,
)
from tunesmith.errors import TunesmithError

# --- NFKC -------------------------------------------------------------------------------------------------


def test_nfkc_folds_full_width_letters_digits_and_punctuation() -> None:
    assert nfkc("ＡＢＣ１２３，") == "ABC123,"
    assert nfkc("Ｈｅｌｌｏ　Ｗｏｒｌｄ！") == "Hello World!"  # the ideographic space U+3000 too
    assert nfkc("ｶﾀｶﾅ") == "カタカナ"  # half-width katakana go the other way, to full width


def test_nfkc_leaves_chinese_characters_alone() -> None:
    text = "这部电影太好看了《三体》"
    assert nfkc(text) == text


@pytest.mark.parametrize(
    ("before", "after"),
    [
        # Full-width forms (U+FF01-FF5E) have ASCII compatibility mappings: these change.
        ("，", ","),
        ("；", ";"),
        ("：", ":"),
        ("？", "?"),
        ("！", "!"),
        ("（", "("),
        ("）", ")"),
        ("～", "~"),
        # Ideographic punctuation (U+3000 block) and typographic quotes have none: these stay.
        ("。", "。"),
        ("、", "、"),
        ("《", "《"),
        ("》", "》"),
        ("【", "【"),
        ("「", "「"),
        ("“", "“"),
        ("”", "”"),
        ("—", "—"),
        # Compatibility characters whose meaning can shift.
        ("…", "..."),
        ("²", "2"),
        ("①", "1"),
        ("ﬁ", "fi"),
    ],
)
def test_nfkc_on_cjk_punctuation_is_what_users_should_expect(before: str, after: str) -> None:
    assert nfkc(before) == after


def test_nfkc_mixes_punctuation_styles_in_a_chinese_sentence() -> None:
    # The surprise worth knowing: the comma becomes ASCII while the full stop stays ideographic.
    assert nfkc("你好，世界。真的吗？") == "你好,世界。真的吗?"


# --- control and invisible characters ---------------------------------------------------------------------


def test_strip_control_removes_invisible_characters_in_english_and_chinese() -> None:
    assert strip_control("\ufeffhel\u200blo\x00 wor\u00adld\x07") == "hello world"
    assert strip_control("你\u200b好\u2060世\u202e界\x1b") == "你好世界"
    lone_surrogate = "ok\ud800"
    assert strip_control(lone_surrogate) == "ok"


def test_strip_control_keeps_whitespace_and_joiners() -> None:
    assert strip_control("a\tb\nc") == "a\tb\nc"
    assert strip_control("a\r\nb\rc\u2028d\x0ce") == "a\nb\nc\nd\ne"  # every line boundary becomes "\n"
    family = "👨\u200d👩\u200d👧"
    assert strip_control(family) == family  # ZWJ holds emoji sequences together
    assert strip_control("می\u200cخواهم") == "می\u200cخواهم"  # ZWNJ is spelling in Persian


# --- HTML -------------------------------------------------------------------------------------------------


def test_strip_html_english() -> None:
    assert strip_html("<p>Hello <b>wor</b>ld</p><p>next<br/>line</p>") == " Hello world  next line "
    assert strip_html('<a href="https://x.com">link</a> text') == "link text"


def test_strip_html_chinese() -> None:
    assert strip_html("<div>你好<br>世界</div>") == " 你好 世界 "
    assert strip_html("<span>很</span><strong>好</strong>") == "很好"


def test_strip_html_decodes_entities_with_semicolons_only() -> None:
    assert strip_html("Tom &amp; Jerry &lt;3 &#20320;&#x597D;") == "Tom & Jerry <3 你好"
    assert strip_html("a&nbsp;b") == "a\xa0b"
    # Without their semicolon, html.unescape would turn these into "¬" and "×".
    assert strip_html("x &not y ?a=1&times=2") == "x &not y ?a=1&times=2"


def test_strip_html_removes_escaped_markup_and_non_text_blocks() -> None:
    assert strip_html("&lt;p&gt;hi&lt;/p&gt;") == " hi "
    assert strip_html("&amp;lt;b&amp;gt;x") == "x"  # escaped twice, as scraped feeds often are
    assert strip_html("<script>alert(1)</script>ok<style>p{}</style><!-- note -->!") == " ok !"
    assert strip_html('<?xml version="1.0"?><!DOCTYPE html><![CDATA[raw]]>') == "raw"


def test_strip_html_keeps_text_that_only_looks_like_tags() -> None:
    for text in ["replace <name> with yours", "a < b and c > d", "<<三体>>", "x <url> y", "<Harry Potter>"]:
        assert strip_html(text) == text
    # Unknown names are markup once they close or carry quoted attributes (XML).
    assert strip_html('<item id="3">x</item><name>Bob</name>') == " x  Bob "


# --- URLs, e-mails, phones --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("see https://example.com/a?b=1&c=2.", "see <url>."),
        ("(see https://en.wikipedia.org/wiki/Foo_(bar))", "(see <url>)"),
        ("go to WWW.Example.com/x, now", "go to <url>, now"),
        ("ftp://files.example.org/a.zip", "<url>"),
        ("请访问https://example.com/a了解更多", "请访问<url>了解更多"),  # stops where Chinese runs on
        ("详见www.example.cn，谢谢", "详见<url>，谢谢"),
        ("编码路径https://zh.wikipedia.org/wiki/%E4%B8%AD。", "编码路径<url>。"),
    ],
)
def test_mask_urls(text: str, masked: str) -> None:
    assert mask_urls(text, "mask") == masked
    assert mask_urls(text, "strip") == masked.replace("<url>", "")


def test_mask_urls_leaves_non_urls() -> None:
    for text in ["www. is not a link", "e.g. file.txt", "example.com without a scheme", "价格3.5元"]:
        assert mask_urls(text) == text


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("mail bob.smith+tag@example.co.uk.", "mail <email>."),
        ("邮箱：张三zhang.san@163.com，欢迎", "邮箱：张三<email>，欢迎"),
        ("QQ邮箱13812345678@qq.com", "QQ邮箱<email>"),
    ],
)
def test_mask_emails(text: str, masked: str) -> None:
    assert mask_emails(text, "mask") == masked
    assert mask_emails(text, "strip") == masked.replace("<email>", "")


def test_mask_emails_leaves_non_addresses() -> None:
    for text in ["user@localhost", "@someone said", "a@b", "price @ 5.00"]:
        assert mask_emails(text) == text


@pytest.mark.parametrize(
    "phone",
    [
        "13812345678",
        "138 1234 5678",
        "138-1234-5678",
        "+86 138 1234 5678",
        "+8613812345678",
        "0086-13812345678",
        "(+86)13812345678",
        "010-12345678",
        "(0755) 1234567",
        "400-820-8820",
        "+1 (555) 123-4567",
        "+44 20 7946 0958",
        "+49 30 1234567",
        "(555) 123-4567",
        "555-123-4567",
        "555.123.4567",
        "1-800-555-0199",
    ],
)
def test_mask_phones_matches(phone: str) -> None:
    assert mask_phones(f"电话：{phone}，谢谢") == "电话：<phone>，谢谢"
    assert mask_phones(f"Call {phone}.") == "Call <phone>."
    assert mask_phones(f"Call {phone} now", "strip") == "Call  now"


@pytest.mark.parametrize(
    "text",
    [
        "价格¥299",
        "2024年",
        "订单123456",
        "order 1234567 shipped",  # a bare 7-digit id has no phone shape
        "日期2024-01-15",
        "12:30:45",
        "$1,299.00",
        "3.1415926535",
        "192.168.1.1",
        "ISBN 978-7-115-42802-8",
        "卡号6222 0212 3456 7890",
        "身份证110101199003071234",  # "19900307123" looks like a mobile, inside 18 digits
        "订单号202401151234",
        "时间戳1700000000",
        "scores 100 200 3000",
        "+5 10",
        "版本1.2.3",
        "https://example.com/item/13812345678",
        "id=13812345678",
        "abc13812345678",
    ],
)
def test_mask_phones_leaves_ordinary_numbers(text: str) -> None:
    assert mask_phones(text) == text


def test_unknown_mask_mode_is_a_one_line_error() -> None:
    with pytest.raises(TunesmithError, match="--clean-urls must be one of keep, mask, strip"):
        clean_text("x", CleanConfig(urls="hide"))


# --- whitespace and the whole pipeline --------------------------------------------------------------------


def test_collapse_whitespace() -> None:
    assert collapse_whitespace("  a \t b\n\n c  ") == "a b c"
    assert collapse_whitespace("\u3000你好\xa0 世界\n") == "你好 世界"


def test_clean_text_defaults_compose_every_step() -> None:
    text = "<p>Ｈｉ\u200b！ mail a@b.com or call 138-1234-5678,&nbsp;see https://x.com/y.</p>"
    assert clean_text(text, CleanConfig()) == "Hi! mail <email> or call <phone>, see <url>."
    chinese = "<div>你好，请联系１３８１２３４５６７８\u200b或访问ｗｗｗ．ｅｘａｍｐｌｅ．ｃｎ。</div>"
    assert clean_text(chinese, CleanConfig()) == "你好,请联系<phone>或访问<url>。"


def test_clean_text_with_everything_off_changes_nothing() -> None:
    off = CleanConfig(
        nfkc=False,
        strip_control=False,
        strip_html=False,
        urls="keep",
        emails="keep",
        phones="keep",
        collapse_whitespace=False,
    )
    text = " <b>ＡＢ</b>\u200b a@b.com 13812345678 https://x.com "
    assert clean_text(text, off) == text


MIXED = [
    "<p>Ｈｅｌｌｏ,\u00a0<b>world</b>!</p>  Visit https://example.com/a_(b). ",
    "你好，世界。联系：+86 138 1234 5678 或 zhang@163.com\u200b\r\n谢谢",
    "&amp;lt;br&amp;gt;E=mc² … &#xFF21; replace <name> here",
    "\ufeff<script>x()</script>订单123456，价格¥299，2024年",
    "(555) 123-4567 &nbsp;&nbsp; <<三体>> a < b > c",
]


@pytest.mark.parametrize("cfg", [CleanConfig(), CleanConfig(urls="strip", emails="keep", phones="strip")])
def test_clean_text_is_idempotent(cfg: CleanConfig) -> None:
    for text in MIXED:
        once = clean_text(text, cfg)
        assert clean_text(once, cfg) == once


def test_idempotent_without_whitespace_collapse() -> None:
    cfg = CleanConfig(collapse_whitespace=False)
    for text in MIXED:
        once = clean_text(text, cfg)
        assert clean_text(once, cfg) == once


# --- frames -----------------------------------------------------------------------------------------------


def frame() -> pd.DataFrame:
    texts = ["Ｈｅｌｌｏ  world", "<b>hi</b> 13812345678", "   ", "ok", None, "visit https://x.com", "长" * 50]
    return pd.DataFrame({"text": texts, "label": list("abcdefg")}, index=[10, 11, 12, 13, 14, 15, 16])


def test_clean_frame_keeps_original_index_and_other_columns() -> None:
    result = clean_frame(frame(), CleanConfig(min_chars=3, max_chars=40))
    assert list(result.kept.index) == [10, 11, 15]
    assert list(result.kept["text"]) == ["Hello world", "hi <phone>", "visit <url>"]
    assert list(result.kept["label"]) == ["a", "b", "f"]


def test_clean_frame_removed_rows_keep_original_text_and_say_why() -> None:
    removed = clean_frame(frame(), CleanConfig(min_chars=3, max_chars=40)).removed
    assert list(removed.index) == [12, 13, 14, 16]
    assert list(removed["reason"]) == [
        "empty after cleaning",
        "shorter than 3 characters",
        "empty after cleaning",  # a missing cell
        "longer than 40 characters",
    ]
    assert removed.loc[12, "text"] == "   "
    assert removed.loc[16, "text"] == "长" * 50  # original, not cleaned
    assert pd.isna(removed.loc[14, "text"])
    assert list(removed["label"]) == ["c", "d", "e", "g"]


def test_clean_frame_counts_changes_per_operation() -> None:
    changed = clean_frame(frame(), CleanConfig(min_chars=3, max_chars=40)).changed
    assert changed == {
        "nfkc": 1,
        "html": 1,
        "control": 0,
        "urls": 1,
        "emails": 0,
        "phones": 1,
        "whitespace": 2,  # "Hello  world" and "   "
        "dropped_empty": 2,
        "dropped_short": 1,
        "dropped_long": 1,
    }


def test_clean_frame_length_counts_chinese_characters() -> None:
    df = pd.DataFrame({"text": ["你好", "你好世界", "今天天气很好啊"]})
    result = clean_frame(df, CleanConfig(min_chars=3, max_chars=6))
    assert list(result.kept["text"]) == ["你好世界"]
    assert list(result.removed["reason"]) == ["shorter than 3 characters", "longer than 6 characters"]


def test_clean_frame_can_keep_empty_rows_and_handles_repeated_labels() -> None:
    df = pd.DataFrame({"text": ["a  b", " ", "c"]}, index=[0, 0, 1])
    result = clean_frame(df, CleanConfig(drop_empty=False))
    assert list(result.kept["text"]) == ["a b", "", "c"]
    assert list(result.kept.index) == [0, 0, 1]
    assert result.removed.empty
    assert "reason" in result.removed.columns


def test_disabled_operations_are_not_counted() -> None:
    cfg = CleanConfig(nfkc=False, strip_html=False, urls="keep", emails="keep", phones="keep")
    changed = clean_frame(pd.DataFrame({"text": ["x"]}), cfg).changed
    assert set(changed) == {"control", "whitespace", "dropped_empty", "dropped_short", "dropped_long"}


def test_clean_frame_errors() -> None:
    with pytest.raises(TunesmithError, match="no text column 'body' to clean; columns are: text"):
        clean_frame(pd.DataFrame({"text": ["x"]}), CleanConfig(), column="body")
    with pytest.raises(TunesmithError, match="--clean-min-chars 10 is above --clean-max-chars 5"):
        clean_frame(pd.DataFrame({"text": ["x"]}), CleanConfig(min_chars=10, max_chars=5))
    with pytest.raises(TunesmithError, match="--clean-max-chars must be 0"):
        clean_text("x", CleanConfig(max_chars=-1))


# --- config -----------------------------------------------------------------------------------------------


def test_config_fields_have_unique_clean_flags_and_sensible_defaults() -> None:
    fields = dataclasses.fields(CleanConfig)
    flags = [f.metadata["flag"] for f in fields]
    assert all(flag == "clean" or flag.startswith("clean-") for flag in flags)
    assert len(set(flags)) == len(flags)
    assert all(f.metadata["help"] for f in fields)
    for name in ("urls", "emails", "phones"):
        assert next(f for f in fields if f.name == name).metadata["choices"] == ("keep", "mask", "strip")
    cfg = CleanConfig()
    assert not cfg.enabled
    assert (cfg.nfkc, cfg.strip_control, cfg.strip_html, cfg.collapse_whitespace, cfg.drop_empty) == (True,) * 5
    assert (cfg.urls, cfg.emails, cfg.phones) == ("mask", "mask", "mask")
    assert (cfg.min_chars, cfg.max_chars) == (0, 0)


def test_clean_frame_counts_every_row_of_a_repeated_text() -> None:
    """Each distinct text is cleaned once; the counts and the cleaned column are still per row."""
    cfg = CleanConfig(enabled=True)
    texts = ["<b>call 13812345678</b>", "ok", "<b>call 13812345678</b>", None, "  ", "见 www.a.cn 了解", "ok"]
    df = pd.DataFrame({"text": texts, "label": list("abcdefg")}, index=[9, 8, 7, 6, 5, 4, 3])
    result = clean_frame(df, cfg)
    one_by_one = [clean_text("" if t is None else t, cfg) for t in texts]
    assert result.kept["text"].tolist() == [t for t in one_by_one if t]
    assert result.kept.index.tolist() == [9, 8, 7, 4, 3]
    assert result.changed["html"] == 2 and result.changed["phones"] == 2 and result.changed["urls"] == 1
    assert result.changed["dropped_empty"] == 2 and result.removed.index.tolist() == [6, 5]
