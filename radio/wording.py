"""Vietnamese wording for errors that libraries raise in English (pydantic's validation errors, PyYAML's
syntax errors), for the ward's officers: the programme loader and the web console's forms use them."""

from __future__ import annotations

import re
from typing import Any

# pydantic's own error types, by ``type``: "{name}" is filled from the error's ctx (gt, le, max_length, expected...).
# The file loader and the web console's forms (radio.web.pages.common.validation_text) both use these.
PYDANTIC_VI: dict[str, str] = {
    "missing": "thiếu trường bắt buộc",
    "extra_forbidden": "không có trường này",
    "model_type": "phải gồm các trường dạng khoá: giá trị",
    "model_attributes_type": "phải gồm các trường dạng khoá: giá trị",
    "dict_type": "phải gồm các trường dạng khoá: giá trị",
    "list_type": "phải là danh sách (mỗi mục bắt đầu bằng '- ', hoặc viết [a, b])",
    "tuple_type": "phải là danh sách (mỗi mục bắt đầu bằng '- ', hoặc viết [a, b])",
    "too_short": "cần ít nhất {min_length} mục",
    "too_long": "nhiều nhất {max_length} mục",
    "string_type": "phải là chữ (một chuỗi ký tự)",
    "string_too_short": "không được để trống",
    "string_too_long": "dài quá {max_length} ký tự",
    "string_pattern_mismatch": "không đúng dạng quy định",
    "int_type": "phải là số nguyên",
    "int_parsing": "phải là số nguyên",
    "int_from_float": "phải là số nguyên",
    "int_parsing_size": "số quá lớn",
    "float_type": "phải là số",
    "float_parsing": "phải là số",
    "finite_number": "phải là số hữu hạn",
    "bool_type": "phải là true hoặc false",
    "bool_parsing": "phải là true hoặc false",
    "greater_than": "phải lớn hơn {gt}",
    "greater_than_equal": "phải từ {ge} trở lên",
    "less_than": "phải nhỏ hơn {lt}",
    "less_than_equal": "không được quá {le}",
    "literal_error": "phải là {expected}",
    "enum": "phải là {expected}",
    "date_type": "ngày không hợp lệ",
    "date_parsing": "ngày không hợp lệ",
    "time_type": "giờ không hợp lệ",
    "time_parsing": "giờ không hợp lệ",
    "union_tag_invalid": "giá trị không hợp lệ",
    "union_tag_not_found": "giá trị không hợp lệ",
}
_INVALID_VI = "giá trị không hợp lệ"


def _ctx_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).replace("' or '", "' hoặc '")  # literal_error's expected: 'espeak' or 'gtts'


def pydantic_vi(error: Any, default: str | None = None) -> str:
    """pydantic's built-in error (a dict from ``errors()``) as a short Vietnamese text, by its type.

    Types not in PYDANTIC_VI give ``default`` (None: "giá trị không hợp lệ").
    """
    template = PYDANTIC_VI.get(error.get("type", ""))
    if template is None:
        return _INVALID_VI if default is None else default
    ctx = {key: _ctx_text(value) for key, value in (error.get("ctx") or {}).items()}
    try:
        return template.format(**ctx)
    except (KeyError, IndexError):
        return _INVALID_VI if default is None else default


_YAML_CONTEXT_VI = {
    "while parsing a flow sequence": "trong danh sách [ … ]",
    "while parsing a flow mapping": "trong cặp ngoặc { … }",
    "while parsing a block mapping": "trong khối khoá: giá trị",
    "while parsing a block collection": "trong khối",
    "while parsing a block node": "trong giá trị",
    "while parsing a flow node": "trong giá trị",
    "while parsing a node": "trong giá trị",
    "while parsing a tag": "trong thẻ (tag)",
    "while scanning a quoted scalar": "trong chuỗi đặt trong dấu nháy",
    "while scanning a double-quoted scalar": "trong chuỗi đặt trong dấu nháy kép",
    "while scanning a single-quoted scalar": "trong chuỗi đặt trong dấu nháy đơn",
    "while scanning a plain scalar": "trong giá trị",
    "while scanning a block scalar": "trong khối văn bản (| hoặc >)",
    "while scanning a simple key": "trong khoá",
    "while scanning an alias": "trong alias (*tên)",
    "while scanning an anchor": "trong anchor (&tên)",
    "while scanning a tag": "trong thẻ (tag)",
    "while scanning a directive": "trong chỉ thị %",
    "while composing a mapping": "trong khối khoá: giá trị",
    "expected a single document in the stream": "tệp chỉ được có một tài liệu YAML",
}
_YAML_TOKEN_VI = {
    "'<stream end>'": "cuối tệp",
    "'<block end>'": "chỗ hết khối thụt lề",
    "'<block mapping start>'": "một khối khoá: giá trị mới",
    "'<block sequence start>'": "một danh sách mới",
    "'<block entry>'": "'-'",
    "'<scalar>'": "một giá trị",
    "'<key>'": "một khoá",
    "'?'": "một khoá",
    "'<value>'": "':'",
    "'<document start>'": "'---'",
    "'<document end>'": "'...'",
    "'<flow sequence start>'": "'['",
    "'<flow sequence end>'": "']'",
    "'<flow mapping start>'": "'{'",
    "'<flow mapping end>'": "'}'",
    "'<flow entry>'": "','",
    "'<alias>'": "một alias (*tên)",
    "'<anchor>'": "một anchor (&tên)",
    "'<tag>'": "một thẻ (tag)",
    "'\\t'": "ký tự tab ('\\t')",
}
_YAML_PROBLEM_VI: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"found character '\\t' that cannot start any token"),
     "có ký tự tab ('\\t'): YAML chỉ thụt lề bằng dấu cách"),
    (re.compile(r"found character (.+) that cannot start any token"), "ký tự {0} không được đứng ở đây"),
    (re.compile(r"expected ',' or '\]', but got (.+)"), "thiếu ',' hoặc ']' (gặp {0})"),
    (re.compile(r"expected ',' or '\}', but got (.+)"), "thiếu ',' hoặc '}}' (gặp {0})"),
    (re.compile(r"expected <block end>, but found (.+)"), "thụt lề không khớp (gặp {0})"),
    (re.compile(r"expected the node content, but found (.+)"), "thiếu giá trị (gặp {0})"),
    (re.compile(r"expected (.+), but found (.+)"), "cần {0} nhưng gặp {1}"),
    (re.compile(r"mapping values are not allowed here"),
     "không được có 'khoá: giá trị' ở đây (thiếu dấu cách sau ':'? thụt lề sai? giá trị có ':' thì đặt trong dấu nháy)"),
    (re.compile(r"sequence entries are not allowed here"), "không được có mục '- ' ở đây (thụt lề sai?)"),
    (re.compile(r"mapping keys are not allowed here"), "không được có khoá ở đây"),
    (re.compile(r"could not find expected ':'"), "thiếu dấu ':' sau khoá"),
    (re.compile(r"found unexpected end of stream"), "tệp kết thúc khi chưa đóng (thiếu dấu nháy hoặc ngoặc?)"),
    (re.compile(r"found unexpected document separator"), "gặp dòng phân cách tài liệu ('---' hoặc '...') không đúng chỗ"),
    (re.compile(r"found undefined alias (.+)"), "alias {0} chưa được định nghĩa (thiếu &tên?)"),
    (re.compile(r"found duplicate anchor (.+?); first occurrence"), "anchor {0} bị trùng"),
    (re.compile(r"found unknown escape character (.+)"), "ký tự thoát {0} không hợp lệ"),
    (re.compile(r"invalid indentation or unclosed '\[' or '\{'"), "thụt lề sai hoặc chưa đóng '[' hay '{{'"),
    (re.compile(r"but found another document"), "gặp tài liệu thứ hai (dòng '---')"),
    (re.compile(r"unacceptable character (.+): special characters are not allowed"),
     "ký tự đặc biệt {0} không được phép"),
]


def _yaml_token(text: str) -> str:
    return _YAML_TOKEN_VI.get(text.strip(), text.strip())


def yaml_problem_vi(problem: str) -> str:
    for pattern, template in _YAML_PROBLEM_VI:
        if match := pattern.fullmatch(problem.strip()):
            return template.format(*(_yaml_token(group) for group in match.groups()))
    return problem  # a rare PyYAML message: as PyYAML words it


def yaml_context_vi(context: str, line: int | None) -> str:
    if context == "while scanning for the next token":  # says nothing the problem does not
        return ""
    text = _YAML_CONTEXT_VI.get(context, context)
    return f"{text} bắt đầu ở dòng {line}" if line and context.startswith("while") else text
