#!/usr/bin/env python3
"""Placement over several devices: tokens kept on their device, held out.

    bench/placement.py [--out PREFIX] [--tokens T] [--work DIR]

For stacks of MoE layers (test/lib/moe_stack.py) whose routers carry planted
inter-layer affinity of strength R (0: none, independent routers), profiles
one input of T tokens, plans with `moe-compile --emit=plan --devices=N
--placement-profile`, and scores the plan on the profile of a second,
held-out input of T tokens (test/lib/placement_eval.py): the share of
consecutive-layer expert pairs whose experts sit on different devices (the
tokens an expert-parallel engine sends between devices) for the plan, for
contiguous ranges of experts, for random placements (expected) and for the
planted placement (layer 0 in contiguous ranges, then every expert on the
device of the expert its router was planted from: what a planner that knew
the generator would do), and the busiest device's load over the mean. Not a timing: any machine gives the
same numbers for the same seeds. Writes PREFIX.md and PREFIX.json.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "test", "lib"))
import placement_eval  # noqa: E402

PYTHON = "/usr/bin/python3"
BIN = os.path.join(ROOT, "build", "bin")

# (name, layers, experts, k, devices)
SHAPES = [
    ("Mixtral-like", 8, 8, 2, (2, 4)),
    ("S2-like", 8, 64, 8, (2, 4, 8)),
]
AFFINITIES = (0.0, 0.5, 0.8, 0.95)
# (affinity, skew): routers that favour some experts (test/lib/moe_stack.py --skew), as
# trained ones do, where balancing the devices' loads matters.
SKEWED = ((0.8, 3.0),)


def run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def case(work, name, layers, experts, k, affinity, devices, tokens, seed, skew=0.0):
    d = os.path.join(work, "%s-r%g-s%g" % (name, affinity, skew))
    run(PYTHON, os.path.join(ROOT, "test", "lib", "moe_stack.py"), "gen", d,
        "--layers", str(layers), "--experts", str(experts), "--k", str(k),
        "--hidden", "64", "--ffn", "16", "--tokens", str(tokens),
        "--affinity", str(affinity), "--skew", str(skew), "--extra-inputs", "1",
        "--no-reference",
        "--seed", str(seed))
    run(os.path.join(BIN, "moe-compile"), os.path.join(d, "model.mlir"),
        "--instrument-routing", "-o", os.path.join(d, "prof.so"))
    profiles = []
    for i, which in enumerate(("train", "heldout")):
        path = os.path.join(d, which + ".json")
        run(os.path.join(BIN, "moe-run"), os.path.join(d, "prof.so"),
            "--input=@" + os.path.join(d, "in%d.npy" % i),
            "--output=@" + os.path.join(d, "y%d.npy" % i), "--profile=" + path)
        with open(path) as f:
            profiles.append(json.load(f))
    rows = []
    for n in devices:
        plan_path = os.path.join(d, "plan%d.json" % n)
        run(os.path.join(BIN, "moe-compile"), os.path.join(d, "model.mlir"),
            "--emit=plan", "--devices=%d" % n,
            "--placement-profile=" + os.path.join(d, "train.json"), "-o", plan_path)
        with open(plan_path) as f:
            plan = json.load(f)
        r = placement_eval.evaluate(plan, profiles[1])
        planted_path = os.path.join(d, "planted.json")
        r["planted_cross_device"] = None
        if os.path.exists(planted_path):
            with open(planted_path) as f:
                perms = json.load(f)
            maps = [placement_eval.contiguous(experts, n)]
            for perm in perms:
                m = [0] * experts
                for j, pj in enumerate(perm):
                    m[pj] = maps[-1][j]
                maps.append(m)
            r["planted_cross_device"] = placement_eval.score(maps, profiles[1], n)[0]
        r.update(shape=name, layers=layers, experts=experts, k=k,
                 affinity=affinity, skew=skew, tokens=tokens, seed=seed,
                 train_cross_device=placement_eval.evaluate(plan, profiles[0])["cross_device"])
        rows.append(r)
        print("%-12s R=%-4g skew=%g N=%d: cross-device %.3f (contiguous %.3f, random %.3f, "
              "planted %s), imbalance %.2f (contiguous %.2f)"
              % (name, affinity, skew, n, r["cross_device"], r["contiguous_cross_device"],
                 r["random_cross_device"], fmt(r["planted_cross_device"]),
                 r["imbalance"], r["contiguous_imbalance"]),
              flush=True)
    return rows


def fmt(value):
    return "-" if value is None else "%.3f" % value


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "work", "placement"))
    ap.add_argument("--work", default=os.path.join(ROOT, "bench", "work", "placement-models"))
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    rows = []
    for name, layers, experts, k, devices in SHAPES:
        for affinity in AFFINITIES:
            rows += case(args.work, name, layers, experts, k, affinity, devices,
                         args.tokens, args.seed)
        for affinity, skew in SKEWED:
            rows += case(args.work, name, layers, experts, k, affinity, devices,
                         args.tokens, args.seed, skew)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(rows, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write("# Placement over devices: held-out cross-device token pairs\n\n")
        f.write("`bench/placement.py --tokens %d --seed %d`: plans from the profile of one "
                "input, scored on a second (held-out) input of the same size. "
                "cross-device: share of consecutive-layer expert pairs on different devices "
                "(lower is better); imbalance: busiest device's routed tokens over the mean, "
                "worst layer.\n\n" % (args.tokens, args.seed))
        f.write("| shape | affinity R | skew | devices | plan | contiguous | random | planted | "
                "plan vs random | imbalance plan / contiguous |\n")
        f.write("|---|---|---|---|---|---|---|---|---|---|\n")
        for r in rows:
            f.write("| %s (%d layers, E=%d, k=%d) | %g | %g | %d | %.3f | %.3f | %.3f | %s | %+.1f%% | %.2f / %.2f |\n"
                    % (r["shape"], r["layers"], r["experts"], r["k"], r["affinity"], r["skew"],
                       r["devices"], r["cross_device"], r["contiguous_cross_device"],
                       r["random_cross_device"], fmt(r["planted_cross_device"]),
                       100 * (r["cross_device"] / r["random_cross_device"] - 1),
                       r["imbalance"], r["contiguous_imbalance"]))
    print("wrote %s.md and %s.json" % (args.out, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
