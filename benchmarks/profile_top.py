"""Where a py-spy profile's time went: the top functions by own and by total samples.

    .venv/bin/python -m benchmarks.profile_top PROFILE.txt [--top 30] [--under NAME]

Reads py-spy's ``--format raw`` output (folded stacks: ``frame;frame;... count``, as
``benchmarks.sipp_load --profile`` writes it) and prints, for each function, the share of
samples where it was running itself (own) and where it was on the stack at all (total).
``--under NAME`` keeps only the stacks that pass through a function whose name contains
NAME (e.g. ``_dispatch`` for the ARI event path).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path


def read_stacks(text: str) -> list[tuple[list[str], int]]:
    stacks = []
    for line in text.splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def top(stacks: list[tuple[list[str], int]]) -> tuple[int, Counter[str], Counter[str]]:
    total = sum(count for _, count in stacks)
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks:
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return total, own, inclusive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--under", default=None, help="only stacks through this function")
    args = parser.parse_args(argv)
    stacks = read_stacks(args.profile.read_text(encoding="utf-8", errors="replace"))
    if args.under:
        stacks = [(f, c) for f, c in stacks if any(args.under in frame for frame in f)]
    total, own, inclusive = top(stacks)
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    print(f"{total} samples")
    for title, counter in (("own", own), ("total", inclusive)):
        print(f"\n-- by {title} samples")
        for frame, count in counter.most_common(args.top):
            print(f"{count / total:6.1%}  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
