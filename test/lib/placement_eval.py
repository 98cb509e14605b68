#!/usr/bin/env python3
"""Scores an expert placement plan over several devices on a routing profile.

    placement_eval.py PLAN.json PROFILE.json [--min-gain G] [--max-imbalance X]

PLAN is `moe-compile --emit=plan` (or moe-plan-placement plan-file) output,
PROFILE a `moe-run --profile` file, typically of inputs the plan was not made
from. Prints, for the plan, for contiguous ranges of experts per device
(expert e on device e // ceil(E / devices), the default of expert-parallel
engines) and, for cross_device, for a placement that ignores affinity (the
expectation over random placements with the same number of experts per
device, 1 - 1/devices for equal shares):

- cross_device: the share of the profile's consecutive-layer expert pairs
  (expert i of layer l, expert j of layer l + 1, counted per token) whose
  experts are on different devices: tokens an expert-parallel engine must
  send to another device between the layers;
- imbalance: the busiest device's routed tokens over the mean, the worst
  layer.

--min-gain G fails (exit 1) unless the plan's cross_device is at least G
below the random expectation (contiguous ranges can be lucky or unlucky on
one model); --max-imbalance X fails unless the plan's imbalance is at most
X.
"""

import argparse
import json
import sys


def contiguous(experts, devices):
    per = -(-experts // devices)
    return [e // per for e in range(experts)]


def score(device_maps, profile, devices):
    """(cross_device, imbalance) of `device_maps` (one list per layer)."""
    layers = profile["layers"]
    crossed = pairs = 0.0
    for l in range(len(layers) - 1):
        for i, row in enumerate(layers[l].get("next", [])):
            for j, n in enumerate(row):
                pairs += n
                if device_maps[l][i] != device_maps[l + 1][j]:
                    crossed += n
    imbalance = 0.0
    for l, layer in enumerate(layers):
        load = [0.0] * devices
        for e, n in enumerate(layer["counts"]):
            load[device_maps[l][e]] += n
        mean = sum(load) / devices
        if mean > 0:
            imbalance = max(imbalance, max(load) / mean)
    return (crossed / pairs if pairs else 0.0), imbalance


def random_cross(plan, profile):
    """The expected cross_device of random placements with the plan's
    number of experts per device."""
    devices = plan["devices"]
    shares = []
    for layer in plan["layers"]:
        n = [0] * devices
        for d in layer["devices"]:
            n[d] += 1
        shares.append([c / len(layer["devices"]) for c in n])
    crossed = pairs = 0.0
    layers = profile["layers"]
    for l in range(len(layers) - 1):
        n = sum(sum(row) for row in layers[l].get("next", []))
        same = sum(a * b for a, b in zip(shares[l], shares[l + 1]))
        pairs += n
        crossed += n * (1 - same)
    return crossed / pairs if pairs else 0.0


def evaluate(plan, profile):
    devices = plan["devices"]
    if len(plan["layers"]) != len(profile["layers"]):
        raise ValueError("the plan has %d layers, the profile %d"
                         % (len(plan["layers"]), len(profile["layers"])))
    planned = [layer["devices"] for layer in plan["layers"]]
    base = [contiguous(layer["experts"], devices) for layer in plan["layers"]]
    cross, imbalance = score(planned, profile, devices)
    base_cross, base_imbalance = score(base, profile, devices)
    return dict(devices=devices, cross_device=cross, imbalance=imbalance,
                contiguous_cross_device=base_cross,
                contiguous_imbalance=base_imbalance,
                random_cross_device=random_cross(plan, profile))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("plan")
    ap.add_argument("profile")
    ap.add_argument("--min-gain", type=float)
    ap.add_argument("--max-imbalance", type=float)
    args = ap.parse_args()
    with open(args.plan) as f:
        plan = json.load(f)
    with open(args.profile) as f:
        profile = json.load(f)
    r = evaluate(plan, profile)
    print("placement: devices=%d cross_device=%.4f contiguous=%.4f random=%.4f "
          "imbalance=%.3f contiguous_imbalance=%.3f"
          % (r["devices"], r["cross_device"], r["contiguous_cross_device"],
             r["random_cross_device"], r["imbalance"], r["contiguous_imbalance"]))
    ok = True
    if args.min_gain is not None:
        gain = r["random_cross_device"] - r["cross_device"]
        if gain < args.min_gain:
            print("placement: cross-device gain %.4f < %.4f" % (gain, args.min_gain))
            ok = False
    if args.max_imbalance is not None and r["imbalance"] > args.max_imbalance:
        print("placement: imbalance %.3f > %.3f" % (r["imbalance"], args.max_imbalance))
        ok = False
    print("placement: %s" % ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
