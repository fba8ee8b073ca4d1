"""SearchMedia's Match expression and SortBy, checked offline: the subset snapbatch supports.

Source: Alibaba Cloud's "Protocol for media asset search" (ApsaraVideo VOD developer reference,
doc-detail 86991) and the SearchMedia API reference, read 2026-11. The protocol defines:

- exact match ``field = value``; fuzzy match ``field = 'value'`` (text fields: contains);
  multi-value ``field in ('v1','v2')``; range ``field = ('v1','v2')`` with ``( )`` open and ``[ ]``
  closed bounds (mixable, e.g. ``['v1','v2')``);
- ``and`` between conditions; ``or`` between conditions *inside parentheses*
  (``(f1 = 'a' or f2 = 'b')``); text values in single quotes; ``,`` separates values.

The reference this project was given (shared/reference/vod-api.md, "Listing a catalog") lists ``!=`` among
the operators beside ``=``, ``in``, ``and``, ``or`` and parentheses; the protocol page's excerpts we could
read define no ``!=`` but do not exclude it either. snapbatch accepts ``field != value`` wherever
``field = value`` is accepted, with the same value rules, meaning "not what ``=`` selects" (for Title: does
not contain; for Tags: does not have the tag). Whether the live service reads it so is unverified.

snapbatch accepts these video fields (the ones its emulator's catalogue carries too):

=============  ===================================  ==============================================
field          forms                                 value
=============  ===================================  ==============================================
VideoId        ``=``, ``!=``, ``in``                 text
Title          ``=`` (contains), ``!=``, ``in``      text
Tags           ``=`` (has this tag), ``!=``, ``in``  text
CateId         ``=``, ``!=``, ``in``                 a whole number, quoted or not
Status         ``=``, ``!=``, ``in``                 one of STATUSES
CreationTime   range ``= (a,b)`` / ``[a,b]``         'YYYY-MM-DDThh:mm:ssZ' (UTC)
=============  ===================================  ==============================================

Not accepted, because neither the published protocol nor our reference defines them: ``not``, ``<``/``>``,
double-quoted values, a single quote inside a value, open-ended ranges, other fields.
SortBy: ``CreationTime:Desc`` (the service's default) or ``CreationTime:Asc``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "FIELDS",
    "SORT_BY",
    "STATUSES",
    "And",
    "Condition",
    "MatchError",
    "Or",
    "check_sort_by",
    "parse",
]

STATUSES = (
    "Uploading",
    "UploadFail",
    "UploadSucc",
    "Transcoding",
    "TranscodeFail",
    "Blocked",
    "Normal",
    "Checking",
)
FIELDS = {
    "VideoId": ("=", "!=", "in"),
    "Title": ("=", "!=", "in"),
    "Tags": ("=", "!=", "in"),
    "CateId": ("=", "!=", "in"),
    "Status": ("=", "!=", "in"),
    "CreationTime": ("range",),
}
SORT_BY = ("CreationTime:Desc", "CreationTime:Asc")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", re.ASCII)
# only ASCII blanks separate tokens: the protocol asks for half-width punctuation, and a full-width or
# no-break space pasted from a document would reach the service as part of a word
_TOKEN = re.compile(
    r"[ \t\r\n]*(?:(?P<str>'[^']*'?)|(?P<num>-?\d+(?:\.\d+)?)|(?P<word>[A-Za-z_][A-Za-z0-9_.]*)"
    r"|(?P<op>!=|==|<=|>=|[=(),\[\]<>!])|(?P<bad>[^ \t\r\n]))",
    re.ASCII,  # digits 0-9 only: a CateId or time in other scripts' digits is not one the service reads
)


class MatchError(Exception):
    """What is wrong with a Match expression, at ``offset`` (0-based) into its text."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset, self.message = offset, message


@dataclass(frozen=True)
class Condition:
    field: str
    op: str  # "=", "!=", "in" or "range"
    values: tuple[str, ...]
    closed: tuple[bool, bool] = (False, False)  # range bounds: [ ] closed, ( ) open


@dataclass(frozen=True)
class And:
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Node, ...]


Node = Condition | And | Or


@dataclass(frozen=True)
class _Tok:
    kind: str  # str, num, word, op, end
    text: str
    at: int


def _tokens(text: str) -> list[_Tok]:
    out = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.lastgroup is None:  # only trailing whitespace is left
            break
        kind = m.lastgroup
        start = m.start(kind)
        value = m.group(kind)
        if kind == "bad":
            hint = " (use single quotes)" if value == '"' else ""
            raise MatchError(start, f"{value!r} is not allowed in a Match expression{hint}")
        if kind == "str" and (len(value) < 2 or not value.endswith("'")):
            raise MatchError(start, "this quoted value is never closed; end it with '")
        out.append(_Tok(kind, value, start))
        pos = m.end()
    out.append(_Tok("end", "", len(text.rstrip(" \t\r\n"))))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, text: str, what: str) -> _Tok:
        tok = self.take()
        if tok.text != text:
            raise MatchError(tok.at, f"expected {what}, found {_show(tok)}")
        return tok

    def conjunction(self, inside: bool) -> Node:
        parts = [self.factor()]
        joiners = set()
        while self.peek().kind == "word" and self.peek().text.lower() in ("and", "or"):
            tok = self.take()
            word = tok.text.lower()
            if word == "or" and not inside:
                raise MatchError(
                    tok.at, "`or` must be inside parentheses, as SearchMedia requires: (a = 'x' or b = 'y')"
                )
            joiners.add(word)
            if len(joiners) > 1:
                raise MatchError(tok.at, "mixing `and` and `or` needs parentheses to say which comes first")
            parts.append(self.factor())
        if len(parts) == 1:
            return parts[0]
        return Or(tuple(parts)) if joiners == {"or"} else And(tuple(parts))

    def factor(self) -> Node:
        tok = self.peek()
        if tok.text == "(":
            self.take()
            node = self.conjunction(inside=True)
            self.expect(")", "`)` closing the group")
            return node
        return self.condition()

    def condition(self) -> Node:
        tok = self.take()
        if tok.kind != "word" or tok.text.lower() in ("and", "or", "in"):
            raise MatchError(tok.at, f"expected a field name such as CateId or Status, found {_show(tok)}")
        field = tok.text
        if field not in FIELDS:
            known = {f.lower(): f for f in FIELDS}
            hint = (
                f"did you mean {known[field.lower()]!r}?"
                if field.lower() in known
                else f"snapbatch supports {', '.join(FIELDS)}"
            )
            raise MatchError(tok.at, f"unknown field {field!r}; {hint}")
        op = self.take()
        if op.kind == "word" and op.text.lower() == "in":
            return self.multi(field, op)
        if op.text == "!=":
            return self.unequal(field, op)
        if op.text != "=":
            if op.text in ("<", ">", "<=", ">=", "==", "!") or op.text.lower() == "not":
                raise MatchError(
                    op.at,
                    f"{op.text!r} is not an operator of the SearchMedia protocol; use =, !=, in, or a range = (a,b)",
                )
            raise MatchError(op.at, f"expected =, != or in after {field}, found {_show(op)}")
        nxt = self.peek()
        if nxt.text in ("(", "["):
            return self.range(field, op)
        if "=" not in FIELDS[field]:
            raise MatchError(op.at, f"{field} takes a range: {field} = ('2026-01-01T00:00:00Z','2026-02-01T00:00:00Z')")
        return Condition(field, "=", (self.value(field),))

    def unequal(self, field: str, op: _Tok) -> Node:
        """``field != value``: one value, typed as for ``=``."""
        if "!=" not in FIELDS[field]:
            raise MatchError(op.at, f"{field} does not take !=; it takes a range = (a,b)")
        if self.peek().text in ("(", "["):
            raise MatchError(self.peek().at, f"!= takes one value, not a list or range: {field} != value")
        return Condition(field, "!=", (self.value(field),))

    def multi(self, field: str, op: _Tok) -> Node:
        if "in" not in FIELDS[field]:
            raise MatchError(op.at, f"{field} does not take `in`; it takes a range = (a,b)")
        self.expect("(", "( after in")
        values = [self.value(field)]
        while self.peek().text == ",":
            self.take()
            values.append(self.value(field))
        self.expect(")", "`,` or `)` in the value list")
        return Condition(field, "in", tuple(values))

    def range(self, field: str, op: _Tok) -> Node:
        if "range" not in FIELDS[field]:
            raise MatchError(op.at, f"{field} does not take a range; use {field} = value or {field} in (...)")
        opening = self.take()
        low = self.value(field)
        self.expect(",", "`,` between the two bounds of the range")
        high = self.value(field)
        closing = self.take()
        if closing.text not in (")", "]"):
            raise MatchError(closing.at, f"expected ) or ] closing the range, found {_show(closing)}")
        closed = (opening.text == "[", closing.text == "]")
        if high < low:
            raise MatchError(opening.at, f"the range is empty: {low} comes after {high}")
        if high == low and closed != (True, True):
            # equal bounds hold a time only when both are closed: [t,t]
            raise MatchError(
                opening.at, f"the range is empty: both bounds are {low} and one is open; use [{low!r},{low!r}]"
            )
        return Condition(field, "range", (low, high), closed)

    def value(self, field: str) -> str:
        tok = self.take()
        if tok.kind == "str":
            text = tok.text[1:-1]
        elif tok.kind == "num" and field == "CateId":
            text = tok.text
        elif tok.kind in ("num", "word"):
            raise MatchError(tok.at, f"a {field} value is text in single quotes: '{tok.text}'")
        else:
            raise MatchError(tok.at, f"expected a value, found {_show(tok)}")
        at = tok.at + (1 if tok.kind == "str" else 0)
        if field == "CateId" and not re.fullmatch(r"-?[0-9]+", text):
            raise MatchError(at, f"CateId is a whole number, not {text!r}")
        if field == "Status" and text not in STATUSES:
            raise MatchError(at, f"{text!r} is not a video status; use one of {', '.join(STATUSES)}")
        if field == "CreationTime" and not _TIME.fullmatch(text):
            raise MatchError(at, f"CreationTime is UTC time as 'YYYY-MM-DDThh:mm:ssZ', not {text!r}")
        if field == "CreationTime" and not _real_time(text):
            raise MatchError(at, f"{text!r} is not a real time (no such month, day, hour, minute or second)")
        if not text and field != "Title":
            raise MatchError(tok.at, f"an empty {field} value matches nothing")
        return text


def _real_time(text: str) -> bool:
    try:
        datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return False
    return True


def _show(tok: _Tok) -> str:
    return "the end of the expression" if tok.kind == "end" else repr(tok.text)


def parse(text: str) -> Node:
    """The expression's tree; raises MatchError at the first problem."""
    if not text.strip():
        raise MatchError(0, "the Match expression is empty; write e.g. CateId = 1234")
    parser = _Parser(text)
    node = parser.conjunction(inside=False)
    end = parser.peek()
    if end.kind != "end":
        raise MatchError(end.at, f"expected `and` or the end of the expression, found {_show(end)}")
    return node


def check_sort_by(text: str) -> str | None:
    """What is wrong with a SortBy value, or None."""
    if text in SORT_BY:
        return None
    return f"sort_by must be {' or '.join(SORT_BY)}, not {text!r}"
