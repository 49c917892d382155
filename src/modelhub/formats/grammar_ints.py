"""GBNF for an integer range (JSON schema ``minimum`` / ``maximum`` on integers).

llama-cpp-python's Python schema converter ignores integer bounds; llama.cpp's C++ one
(``common/json-schema-to-grammar.cpp``, ``build_min_max_int``, not exported by the shared
library) handles them. This is a port of its closed-range part. Its open-range part (one
bound given) is not ported: it was wrong (``minimum: 202`` admitted 201: the digits after
the first lost their leading zeros) and wrote invalid repetitions for bounds of 16 digits
or more (``minimum: 1e308`` wrote ``[0-9]{290,13}``, which took 17 GB to load). A missing
bound is the int64 limit instead, so every range is closed, and bounds outside int64 are
refused. Every repetition and digit range written is checked, so none can be invalid.
"""

from __future__ import annotations

__all__ = ["int_range_rule"]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def int_range_rule(minimum: int | None, maximum: int | None) -> str:
    """Alternatives (no rule name, no trailing space) matching exactly the integers in
    [minimum, maximum], a missing bound being int64's; ValueError for an empty range or a
    bound outside int64."""
    low = _INT64_MIN if minimum is None else minimum
    high = _INT64_MAX if maximum is None else maximum
    for bound in (low, high):
        if not _INT64_MIN <= bound <= _INT64_MAX:
            raise ValueError(f"integer bound {bound} is outside int64")
    if low > high:
        raise ValueError(f"no integer lies between {low} and {high}")
    out: list[str] = []
    _closed_range(low, high, out)
    return "".join(out)


def _digit_range(out: list[str], start: str, end: str) -> None:
    if start > end:
        raise ValueError(f"empty digit range [{start}-{end}]")
    out.append(f"[{start}]" if start == end else f"[{start}-{end}]")


def _more_digits(out: list[str], min_digits: int, max_digits: int) -> None:
    if not 0 <= min_digits <= max_digits:
        raise ValueError(f"invalid repetition {{{min_digits},{max_digits}}}")
    out.append("[0-9]")
    if min_digits == max_digits == 1:
        return
    out.append("{" + str(min_digits))
    if max_digits != min_digits:
        out.append(f",{max_digits}")
    out.append("}")


def _uniform_range(out: list[str], low: str, high: str) -> None:
    """Integers written with the same number of digits, from ``low`` to ``high``."""
    i = 0
    while i < len(low) and i < len(high) and low[i] == high[i]:
        i += 1
    if i > 0:
        out.append(f'"{low[:i]}"')
    if i < len(low) and i < len(high):
        if i > 0:
            out.append(" ")
        sub_len = len(low) - i - 1
        if sub_len > 0:
            low_sub, high_sub = low[i + 1 :], high[i + 1 :]
            zeros, nines = "0" * sub_len, "9" * sub_len
            high_reached = False
            out.append("(")
            if low_sub == zeros:
                # Up to all nines: one class for the first digit (llama.cpp splits off the last).
                high_reached = high_sub == nines
                _digit_range(out, low[i], high[i] if high_reached else chr(ord(high[i]) - 1))
                out.append(" ")
                _more_digits(out, sub_len, sub_len)
            else:
                out.append(f"[{low[i]}] (")
                _uniform_range(out, low_sub, nines)
                out.append(")")
                if ord(low[i]) < ord(high[i]) - 1:
                    out.append(" | ")
                    if high_sub == nines:
                        _digit_range(out, chr(ord(low[i]) + 1), high[i])
                        high_reached = True
                    else:
                        _digit_range(out, chr(ord(low[i]) + 1), chr(ord(high[i]) - 1))
                    out.append(" ")
                    _more_digits(out, sub_len, sub_len)
            if not high_reached:
                out.append(" | ")
                _digit_range(out, high[i], high[i])
                out.append(" ")
                _uniform_range(out, zeros, high_sub)
            out.append(")")
        else:
            _digit_range(out, low[i], high[i])


def _closed_range(low: int, high: int, out: list[str]) -> None:
    if low < 0 and high < 0:
        out.append('"-" (')
        _closed_range(-high, -low, out)
        out.append(")")
        return
    if low < 0:
        out.append('"-" (')
        _closed_range(1, -low, out)
        out.append(") | ")
        low = 0
    low_s, high_s = str(low), str(high)
    for digits in range(len(low_s), len(high_s)):
        _uniform_range(out, low_s, "9" * digits)
        low_s = "1" + "0" * digits
        out.append(" | ")
    _uniform_range(out, low_s, high_s)
