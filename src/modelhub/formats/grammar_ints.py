"""GBNF for an integer range (JSON schema ``minimum`` / ``maximum`` on integers).

llama-cpp-python's Python schema converter ignores integer bounds; llama.cpp's C++ one
(``common/json-schema-to-grammar.cpp``, ``build_min_max_int``, not exported by the shared
library) handles them. This is a line-for-line port of that function, so the grammar the
embedded engine applies is the one llama.cpp's server would.
"""

from __future__ import annotations

__all__ = ["int_range_rule"]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def int_range_rule(minimum: int | None, maximum: int | None) -> str:
    """Alternatives (no rule name, no trailing space) matching exactly the integers in
    [minimum, maximum]; either bound may be None."""
    out: list[str] = []
    _build(
        _INT64_MIN if minimum is None else minimum,
        _INT64_MAX if maximum is None else maximum,
        out,
        16,
        True,
    )
    return "".join(out)


def _digit_range(out: list[str], start: str, end: str) -> None:
    out.append(f"[{start}]" if start == end else f"[{start}-{end}]")


def _more_digits(out: list[str], min_digits: int, max_digits: int) -> None:
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
                _digit_range(out, low[i], chr(ord(high[i]) - 1))
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
            out.append(f"[{low[i]}-{high[i]}]")


def _build(low: int, high: int, out: list[str], decimals_left: int, top_level: bool) -> None:
    has_min, has_max = low != _INT64_MIN, high != _INT64_MAX

    if has_min and has_max:
        if low < 0 and high < 0:
            out.append('"-" (')
            _build(-high, -low, out, decimals_left, True)
            out.append(")")
            return
        if low < 0:
            out.append('"-" (')
            _build(0, -low, out, decimals_left, True)
            out.append(") | ")
            low = 0
        low_s, high_s = str(low), str(high)
        for digits in range(len(low_s), len(high_s)):
            _uniform_range(out, low_s, "9" * digits)
            low_s = "1" + "0" * digits
            out.append(" | ")
        _uniform_range(out, low_s, high_s)
        return

    less_decimals = max(decimals_left - 1, 1)

    if has_min:
        if low < 0:
            out.append('"-" (')
            _build(_INT64_MIN, -low, out, decimals_left, False)
            out.append(") | [0] | [1-9] ")
            _more_digits(out, 0, decimals_left - 1)
        elif low == 0:
            if top_level:
                out.append("[0] | [1-9] ")
                _more_digits(out, 0, less_decimals)
            else:
                _more_digits(out, 1, decimals_left)
        elif low <= 9:
            c = str(low)
            range_start = "1" if top_level else "0"
            if c > range_start:
                _digit_range(out, range_start, chr(ord(c) - 1))
                out.append(" ")
                _more_digits(out, 1, less_decimals)
                out.append(" | ")
            _digit_range(out, c, "9")
            out.append(" ")
            _more_digits(out, 0, less_decimals)
        else:
            low_s = str(low)
            c = low_s[0]
            if c > "1":
                _digit_range(out, "1" if top_level else "0", chr(ord(c) - 1))
                out.append(" ")
                _more_digits(out, len(low_s), less_decimals)
                out.append(" | ")
            _digit_range(out, c, c)
            out.append(" (")
            _build(int(low_s[1:]), _INT64_MAX, out, less_decimals, False)
            out.append(")")
            if c < "9":
                out.append(" | ")
                _digit_range(out, chr(ord(c) + 1), "9")
                out.append(" ")
                _more_digits(out, len(low_s) - 1, less_decimals)
        return

    if has_max:
        if high >= 0:
            if top_level:
                out.append('"-" [1-9] ')
                _more_digits(out, 0, less_decimals)
                out.append(" | ")
            _build(0, high, out, decimals_left, True)
        else:
            out.append('"-" (')
            _build(-high, _INT64_MAX, out, decimals_left, False)
            out.append(")")
        return

    raise ValueError("an integer range needs a minimum or a maximum")
