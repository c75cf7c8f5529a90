"""Paragraph and sentence splitting of bulletin text."""

from __future__ import annotations

from radio.speech.chunking import group_sentences, split_bulletin, split_paragraphs, split_sentences


def test_paragraphs_are_separated_by_blank_lines() -> None:
    """Blank lines (even with spaces) separate paragraphs; single line breaks do not."""
    text = "  Đoạn một.\nVẫn đoạn một.\n \n\nĐoạn hai.\n\n\n"
    assert split_paragraphs(text) == ["Đoạn một.\nVẫn đoạn một.", "Đoạn hai."]


def test_sentences_end_at_terminators_and_line_breaks() -> None:
    """. ! ? ; … and line breaks each end a sentence."""
    text = "Xin chào bà con! Hôm nay họp à? Có; mời đến đúng giờ… Cảm ơn.\nHết"
    assert split_sentences(text) == [
        "Xin chào bà con!", "Hôm nay họp à?", "Có;", "mời đến đúng giờ…", "Cảm ơn.", "Hết",
    ]


def test_numbers_and_dates_are_not_split() -> None:
    """Thousands separators, decimal commas and dates stay inside their sentence."""
    text = "Kinh phí 1.500.000 đồng, tăng 2,5 lần. Hạn chót ngày 30/9/2024. Số 0204.3854.123 nhé."
    assert split_sentences(text) == [
        "Kinh phí 1.500.000 đồng, tăng 2,5 lần.", "Hạn chót ngày 30/9/2024.", "Số 0204.3854.123 nhé.",
    ]


def test_abbreviations_and_initials_do_not_end_a_sentence() -> None:
    """TP., ThS., v.v. and single-letter initials keep the sentence together."""
    text = "Họp tại TP. Bắc Giang với ThS. Lan, ông Nguyễn V. An, v.v. Xin cảm ơn."
    assert split_sentences(text) == [
        "Họp tại TP. Bắc Giang với ThS. Lan, ông Nguyễn V. An, v.v.", "Xin cảm ơn.",
    ]


def test_list_markers_and_lowercase_continuations_stay_attached() -> None:
    """Headings like '1.' or 'II.' and a full stop followed by lower case do not split."""
    assert split_sentences("1. Mục đích: tuyên truyền") == ["1. Mục đích: tuyên truyền"]
    assert split_sentences("II. MỤC TIÊU") == ["II. MỤC TIÊU"]
    assert split_sentences("Đường số 3. sẽ sửa") == ["Đường số 3. sẽ sửa"]
    assert split_sentences("Năm 2024. Năm sau") == ["Năm 2024.", "Năm sau"]


def test_closing_quotes_stay_with_their_sentence() -> None:
    """A closing quote or bracket after the full stop belongs to the sentence it closes."""
    assert split_sentences("Đạt chuẩn “Chính quyền thân thiện.” Tiếp theo.") == [
        "Đạt chuẩn “Chính quyền thân thiện.”", "Tiếp theo.",
    ]


def test_split_bulletin_nests_sentences_in_paragraphs_and_drops_empties() -> None:
    """split_bulletin returns paragraphs of sentences and skips whitespace-only parts."""
    assert split_bulletin("A một. B hai.\n\n   \n\nC ba.") == [["A một.", "B hai."], ["C ba."]]
    assert split_bulletin(" \n\n ") == []


def test_group_sentences_respects_limit() -> None:
    """Sentences are joined greedily up to the limit; an over-long one stays alone."""
    assert group_sentences(["aa.", "bb.", "cc."], 7) == ["aa. bb.", "cc."]
    assert group_sentences(["x" * 20, "y."], 7) == ["x" * 20, "y."]
    assert group_sentences([], 7) == []
