"""The injection corpus: text that would do harm if any layer handed it to a shell or
to a template engine. Every transport and CLI path must carry it byte for byte.

`corpus(canary)` embeds the path of a canary file that must never come to exist.
"""

from __future__ import annotations

from pathlib import Path


def corpus(canary: Path) -> list[str]:
    c = str(canary)
    return [
        f"'; touch {c} #",
        f'"; touch {c}; echo "',
        f"$(touch {c})",
        f"`touch {c}`",
        f"&& touch {c}",
        f"| touch {c}",
        f"\ntouch {c}\n",
        "{{ lookup('pipe','touch " + c + "') }}",
        "{% for x in range(3) %}{{ x }}{% endfor %}",
        "${HOME} %(user)s {0} %s %n",
        "-rf --help -- --version",
        "quotes ' \" ` and backslashes \\ \\\\ \\n",
        "line1\nline2\r\nline3\ttab\x0bvt\x0cff",
        "nul-free control chars \x01\x02\x1b[31mred\x1b[0m",
        "Unicode: Grüße, 你好, مرحبا, 🚀🧪, e\u0301, \u202eRTL\u202c, \ufeffBOM",
        "surrogate-free astral: \U0001f600\U00010348",
    ]


def big_text(size: int = 1_000_000) -> str:
    """About `size` bytes of varied text with every metacharacter of the corpus."""
    unit = '$(id) `id` \'; rm -rf / # {{ x }} "q" \\ ünï 🚀\n'
    return (unit * (size // len(unit.encode()) + 1))[:size]
