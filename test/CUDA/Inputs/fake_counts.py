"""Driver calls per model run, from the reports of Inputs/fake_cuda_driver.c
of two moe-run invocations that differ by RUNS runs (e.g. --benchmark=1 and
--benchmark=9: 8). Prints one line per entry point that either called,
`NAME: +D, X per run` (D the difference, X = D / RUNS), then each log's bad
copies and live allocations.

    fake_counts.py FEWER.log MORE.log RUNS
"""
import re
import sys


def counts(path):
    calls, other = {}, []
    for line in open(path):
        m = re.match(r"fake cuda: (cu\w+) (\d+)$", line.strip())
        if m:
            calls[m.group(1)] = int(m.group(2))
        elif line.startswith("fake cuda: "):
            other.append(line.strip()[len("fake cuda: "):])
    return calls, other


def main():
    fewer, more, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    a, a_other = counts(fewer)
    b, b_other = counts(more)
    for name in sorted(set(a) | set(b)):
        diff = b.get(name, 0) - a.get(name, 0)
        print(f"{name}: {diff:+d}, {diff / runs:g} per run")
    for line in a_other + b_other:
        print(line)


if __name__ == "__main__":
    main()
