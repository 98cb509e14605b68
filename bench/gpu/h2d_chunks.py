#!/usr/bin/env python3
"""Page-locked host-to-device copy bandwidth by copy size, on one stream.

The GPU tier of the expert cache moves each expert as one copy per weight
matrix (1 MB each for the tier benchmark's S2-like layers); this measures what
back-to-back copies of a given size reach (all queued before the first
starts) against one large copy, i.e. the
per-copy cost that a tier made of small copies pays. Needs torch with CUDA.

    bench/gpu/h2d_chunks.py [--total-mb 192] [--sizes-kb 256,1024,3072,12288]

With --strided-rows R it also times strided copies (cuMemcpy2DAsync, through
ctypes): each one R rows of a size, sources and destinations a pitch apart, as
the runtime copies an expert whose R matrices have equal slices.
"""
import ctypes
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--total-mb", type=int, default=192)
    ap.add_argument("--sizes-kb", default="256,512,1024,2048,3072,6144,12288")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--json", default="")
    ap.add_argument("--strided-rows", type=int, default=0)
    args = ap.parse_args()
    import torch
    if not torch.cuda.is_available():
        sys.exit("h2d_chunks.py: no CUDA device")
    total = args.total_mb << 20
    src = torch.empty(total, dtype=torch.uint8).pin_memory()
    src.random_(0, 255)
    dst = torch.empty(total, dtype=torch.uint8, device="cuda")
    stream = torch.cuda.Stream()
    rows = []
    for kb in [int(s) for s in args.sizes_kb.split(",")]:
        size = kb << 10
        n = total // size

        def issue():
            for i in range(n):
                dst[i * size:(i + 1) * size].copy_(src[i * size:(i + 1) * size],
                                                   non_blocking=True)
        ms = median_ms(torch, stream, args.reps, issue)
        gbps = n * size / ms / 1e6
        rows.append(dict(size_kb=kb, copies=n, ms=ms, GBps=gbps,
                         us_per_copy=1e3 * ms / n))
        print(f"{kb:6d} KB x {n:5d}: {ms:8.3f} ms  {gbps:6.1f} GB/s  "
              f"{1e3 * ms / n:7.2f} us/copy", flush=True)
    if args.strided_rows > 1:
        rows += strided(torch, stream, src, dst, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(0), total_mb=args.total_mb,
                           rows=rows), f, indent=1)


def median_ms(torch, stream, reps, issue, before=None):
    """The median over `reps` rounds of the device time of the copies that
    `issue()` queues on `stream` (after `before()`, if any)."""
    times = []
    for _ in range(reps):
        if before:
            before()
        begin, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
        with torch.cuda.stream(stream):
            # The stream first spins long enough for every copy to be
            # queued, so that the host's issue rate does not count.
            torch.cuda._sleep(100_000_000)
            begin.record(stream)
            issue()
            end.record(stream)
        end.synchronize()
        times.append(begin.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


class Memcpy2D(ctypes.Structure):
    """CUDA_MEMCPY2D of cuda.h."""
    _fields_ = [("srcXInBytes", ctypes.c_size_t), ("srcY", ctypes.c_size_t),
                ("srcMemoryType", ctypes.c_int), ("srcHost", ctypes.c_void_p),
                ("srcDevice", ctypes.c_uint64), ("srcArray", ctypes.c_void_p),
                ("srcPitch", ctypes.c_size_t),
                ("dstXInBytes", ctypes.c_size_t), ("dstY", ctypes.c_size_t),
                ("dstMemoryType", ctypes.c_int), ("dstHost", ctypes.c_void_p),
                ("dstDevice", ctypes.c_uint64), ("dstArray", ctypes.c_void_p),
                ("dstPitch", ctypes.c_size_t),
                ("WidthInBytes", ctypes.c_size_t), ("Height", ctypes.c_size_t)]


def strided(torch, stream, src, dst, args):
    """Copies of R rows of each size: row r of copy i from src[r * total / R +
    i * size] to dst at the same place (pitches total / R), all queued behind
    a spin; checked against the source."""
    cuda = ctypes.CDLL("libcuda.so.1")
    cuda.cuMemcpy2DAsync_v2.argtypes = [ctypes.POINTER(Memcpy2D), ctypes.c_void_p]
    R = args.strided_rows
    total = src.numel()
    pitch = total // R
    out = []
    for kb in [int(s) for s in args.sizes_kb.split(",")]:
        size = kb << 10
        n = pitch // size
        if n == 0:
            continue

        def zero():
            dst.zero_()
            torch.cuda.synchronize()

        def issue():
            for i in range(n):
                c = Memcpy2D(srcMemoryType=1, srcHost=src.data_ptr() + i * size,
                             srcPitch=pitch, dstMemoryType=2,
                             dstDevice=dst.data_ptr() + i * size, dstPitch=pitch,
                             WidthInBytes=size, Height=R)
                rc = cuda.cuMemcpy2DAsync_v2(ctypes.byref(c),
                                             ctypes.c_void_p(stream.cuda_stream))
                if rc:
                    sys.exit(f"h2d_chunks.py: cuMemcpy2DAsync returned {rc}")
        ms = median_ms(torch, stream, args.reps, issue, before=zero)
        copied = n * size * R
        for r in range(R):
            a, b = r * pitch, r * pitch + n * size
            if not torch.equal(dst[a:b].cpu(), src[a:b]):
                sys.exit("h2d_chunks.py: the strided copies differ from the source")
        gbps = copied / ms / 1e6
        out.append(dict(size_kb=kb, rows=R, copies=n, ms=ms, GBps=gbps,
                        us_per_copy=1e3 * ms / n))
        print(f"{R} x {kb:6d} KB x {n:5d}: {ms:8.3f} ms  {gbps:6.1f} GB/s  "
              f"{1e3 * ms / n:7.2f} us/copy (strided)", flush=True)
    return out


if __name__ == "__main__":
    main()
