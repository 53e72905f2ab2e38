"""Text helpers: sizes as memlens reads and writes them (binary units, exact integers), and
strings from a target escaped for a terminal.

`parse_size` accepts what `memlens run --max-peak` accepts (crates/memlens/src/flags.rs,
`flags::size`): a number (decimals allowed) with an optional binary unit, B, K/KiB, M/MiB,
G/GiB, T/TiB, P/PiB, E/EiB (case-insensitive; KB/MB/... mean the same binary units); a bare
number is bytes; from 1 B to 8 EiB, computed exactly (no float rounding).
"""

SIZE_SYNTAX = (
    "not a size: write a number with a binary unit, B, K/KiB, M/MiB, G/GiB, T/TiB, P/PiB or "
    "E/EiB (e.g. 512M, 1.5GiB; a bare number is bytes)"
)
SIZE_RANGE = "out of range: a size from 1B to 8EiB"
MAX_SIZE = 1 << 63

_SHIFTS = {
    "": 0,
    "b": 0,
    "k": 10,
    "kb": 10,
    "kib": 10,
    "m": 20,
    "mb": 20,
    "mib": 20,
    "g": 30,
    "gb": 30,
    "gib": 30,
    "t": 40,
    "tb": 40,
    "tib": 40,
    "p": 50,
    "pb": 50,
    "pib": 50,
    "e": 60,
    "eb": 60,
    "eib": 60,
}
_DIGITS = "0123456789"


def parse_size(value):
    """Bytes of `value`: an int (bytes, 1 to 8 EiB) or a string such as "200MiB", "1.5G".

    Raises ValueError with memlens's own wording for anything else.
    """
    if isinstance(value, bool):
        raise ValueError(SIZE_SYNTAX)
    if isinstance(value, int):
        if 1 <= value <= MAX_SIZE:
            return value
        raise ValueError(SIZE_RANGE)
    if not isinstance(value, str):
        raise ValueError(SIZE_SYNTAX)
    text = value.strip()
    split = len(text)
    for i, ch in enumerate(text):
        if ch not in _DIGITS and ch != ".":
            split = i
            break
    num, unit = text[:split], text[split:]
    shift = _SHIFTS.get(unit.strip().lower())
    if shift is None:
        raise ValueError(SIZE_SYNTAX)
    whole, _, frac = num.partition(".")
    if (whole == "" and frac == "") or "." in frac:
        raise ValueError(SIZE_SYNTAX)
    whole = whole.lstrip("0")
    if len(whole) > 20:
        raise ValueError(SIZE_RANGE)
    frac = frac[:18]
    scale = 10 ** len(frac)
    part = int(frac) if frac else 0
    size = (int(whole or "0") << shift) + ((part << shift) + scale // 2) // scale
    if size == 0 or size > MAX_SIZE:
        raise ValueError(SIZE_RANGE)
    return size


_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def format_size(n):
    """`n` bytes in binary units with three significant figures, as memlens prints sizes."""
    if n is None:
        return "n/a"
    sign = "-" if n < 0 else ""
    n = abs(int(n))
    if n < 1024:
        return "%s%d B" % (sign, n)
    value = float(n)
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    if value >= 100:
        text = "%.0f" % value
    elif value >= 10:
        text = "%.1f" % value
    else:
        text = "%.2f" % value
    return "%s%s %s" % (sign, text, _UNITS[unit])


def format_delta(n):
    """A change of size, always signed: "+1.50 KiB", "-3.00 MiB", "+0 B"."""
    if n is None:
        return "n/a"
    return ("-" if n < 0 else "+") + format_size(abs(int(n)))


def escape(text):
    """`text` with control characters (C0, DEL, C1) written as \\u{..}, as memlens's messages
    show strings that come from a target (command lines, names) on a terminal."""
    out = []
    for ch in str(text):
        o = ord(ch)
        if o < 0x20 or 0x7F <= o < 0xA0:
            out.append("\\u{%x}" % o)
        else:
            out.append(ch)
    return "".join(out)
