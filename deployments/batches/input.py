"""A batch's input file, read line by line: the lines to run, and the lines refused.

Every line is checked on its own (JSON, ``custom_id``, ``method``, ``url`` equal to the
batch's endpoint, a JSON object body); a line that fails goes to the batch's error file
with a clear message and every other line runs. The scan is linear in the file's size
and each line is bounded before it is parsed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from serve.kernel.batch_protocol import BatchLine


@dataclass(frozen=True)
class InputLine:
    """A line to run: its place in the file, its id and its request body."""

    index: int
    custom_id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class RefusedLine:
    """A line that cannot run, with why (``code``, ``message``) and its id when it has one."""

    index: int
    custom_id: str
    code: str
    message: str


def _refusal(index: int, raw: Any, code: str, message: str) -> RefusedLine:
    custom_id = raw.get("custom_id") if isinstance(raw, dict) and isinstance(raw.get("custom_id"), str) else ""
    return RefusedLine(index, custom_id[:512], code, f"line {index + 1}: {message}")


def read_input(content: bytes, *, endpoint: str, max_lines: int, max_line_bytes: int) -> tuple[list[InputLine], list[RefusedLine]]:
    """The lines of ``content`` (JSONL) to run for ``endpoint``, and those refused.

    Raises:
        ValueError: the file is not UTF-8, has no line, or more than ``max_lines``
            (the whole batch is refused: nothing would be run).
    """
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the input file is not UTF-8 text") from None
    raw_lines = [line for line in text.split("\n") if line.strip()]
    if not raw_lines:
        raise ValueError("the input file has no request line")
    if len(raw_lines) > max_lines:
        raise ValueError(f"the input file has {len(raw_lines)} lines; a batch takes at most {max_lines}")
    lines: list[InputLine] = []
    refused: list[RefusedLine] = []
    seen: set[str] = set()
    for index, raw_text in enumerate(raw_lines):
        if len(raw_text.encode("utf-8")) > max_line_bytes:
            refused.append(RefusedLine(index, "", "line_too_long", f"line {index + 1}: longer than {max_line_bytes} bytes"))
            continue
        try:
            raw = json.loads(raw_text)
        except ValueError:
            refused.append(RefusedLine(index, "", "invalid_json_line", f"line {index + 1}: not a JSON object"))
            continue
        try:
            line = BatchLine.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "line"
            refused.append(_refusal(index, raw, "invalid_request", f"{where}: {first['msg']}"))
            continue
        if line.url != endpoint:
            refused.append(_refusal(index, raw, "mismatched_url",
                                    f"url {line.url!r} is not the batch's endpoint {endpoint!r}"))
            continue
        if line.custom_id in seen:
            refused.append(_refusal(index, raw, "duplicate_custom_id", f"custom_id {line.custom_id!r} appears twice"))
            continue
        seen.add(line.custom_id)
        lines.append(InputLine(index, line.custom_id, line.body))
    return lines, refused
