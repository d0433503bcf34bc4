"""Filter `duplicates` rows (stdin) to those that are not two runs of field declarations.

Two dataclasses whose fields have the same shape (`count: int = 0` beside `total: int = 0`) are
flagged by the shape match, but declare data rather than repeat a rule. A row is dropped only when
every code line of both ranges is an annotated field (comments, docstrings and blank lines between
them allowed); every other row is printed, and fails the lint.
"""

import re
import sys
from pathlib import Path

FIELD = re.compile(r"^\s*[A-Za-z_]\w*: [^=()]+?(?: = [^()]*)?,?$")
PLACE = re.compile(r"(\S+):(\d+)-(\d+)")


def only_fields(root: Path, place: str) -> bool:
    match = PLACE.fullmatch(place)
    if match is None:
        return False
    lines = (root / match[1]).read_text().splitlines()[int(match[2]) - 1 : int(match[3])]
    code = [line for line in lines if line.strip() and not line.strip().startswith(("#", '"""', "'"))]
    return bool(code) and all(FIELD.match(line) for line in code)


def main() -> None:
    root = Path(sys.argv[1])
    for row in sys.stdin:
        parts = row.split()
        if len(parts) >= 4 and parts[2] == "~" and only_fields(root, parts[1]) and only_fields(root, parts[3]):
            continue
        sys.stdout.write(row)


if __name__ == "__main__":
    main()
