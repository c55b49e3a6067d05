"""Writes SIZE_MB of English-like text (Zipf-distributed words) to PATH.

Usage: python3 bench/make_corpus.py PATH SIZE_MB
A 64 MiB block is generated once and repeated, so 1 GiB takes seconds.
"""
import random
import sys

path, size_mb = sys.argv[1], int(sys.argv[2])
random.seed(7)
vocabulary = [f"w{i}" for i in range(50_000)]
weights = [1.0 / (rank + 1) for rank in range(len(vocabulary))]
cumulative = list(__import__("itertools").accumulate(weights))
block_mb = min(64, size_mb)
lines = []
size = 0
while size < block_mb << 20:
    words = random.choices(vocabulary, cum_weights=cumulative, k=random.randint(4, 16))
    line = " ".join(words) + "\n"
    lines.append(line)
    size += len(line)
block = "".join(lines).encode()
with open(path, "wb") as f:
    written = 0
    while written < size_mb << 20:
        f.write(block)
        written += len(block)
