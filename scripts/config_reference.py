"""The configuration reference as a Markdown table.

python scripts/config_reference.py           # print it
python scripts/config_reference.py --write   # replace the table in README.md
"""

import sys
from pathlib import Path

from e3rl.config_io import describe

HEADER = "| key | type | default | meaning |"
README = Path(__file__).resolve().parents[1] / "README.md"


def table() -> list[str]:
    lines = [HEADER, "|---|---|---|---|"]
    for key, tp, default, doc in describe():
        tp = tp.replace("|", "\\|")
        lines.append(f"| `{key}` | {tp} | `{default!r}` | {doc} |")
    return lines


def write_readme() -> None:
    text = README.read_text().splitlines()
    start = text.index(HEADER)
    end = start
    while end < len(text) and text[end].startswith("|"):
        end += 1
    README.write_text("\n".join(text[:start] + table() + text[end:]) + "\n")


if __name__ == "__main__":
    if "--write" in sys.argv:
        write_readme()
    else:
        print("\n".join(table()))
