"""``python -m bench.tidy``: BENCHMARKS.md with only the latest section of each benchmark
(``bench.common.latest_only``; the ingest summary last), e.g. after merging branches whose
benchmarks appended sections. Earlier figures stay in git history."""

from __future__ import annotations

import sys

from bench.common import BENCHMARKS, latest_only, split_sections


def main() -> int:
    text = BENCHMARKS.read_text(encoding="utf-8")
    tidy = latest_only(text)
    before, after = len(split_sections(text)[1]), len(split_sections(tidy)[1])
    BENCHMARKS.write_text(tidy, encoding="utf-8")
    print(f"{BENCHMARKS}: {before} sections -> {after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
