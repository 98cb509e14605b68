//===- ExpertCache.h - Tiered expert cache of a model -----------*- C++ -*-===//
//
// The runtime half of expert placement (docs/ExpertCache.md): per placed
// layer, slots holding experts; pinned residents, LRU eviction, demand
// loads, pre-gating prefetches and counters. Two tiers: for CPU models the
// slots are in RAM and loads read the weights file with direct I/O on a
// worker thread; for CUDA models the slots are in device memory and loads
// are copies from page-locked host memory (holding every cached expert) on
// a copy stream: demand loads queued at once by the call that asks for them
// (a copy is asynchronous; the stream orders its use), pre-gating
// predictions by the worker thread, at most two copies in flight.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_LIB_EXPERTCACHE_H
#define MOE_RUNTIME_LIB_EXPERTCACHE_H

#include "Signature.h"
#include "moe/runtime/cuda.h"
#include "moe/runtime/runtime.h"

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace moe::runtime {

/// The table a model library with runtime hooks receives through
/// `moe_model_bind_host` (docs/CompiledModelABI.md). The field order is ABI.
struct HostAPI {
  void *ctx;
  int64_t (*acquire)(void *ctx, int64_t layer, int64_t expert);
  void (*release)(void *ctx, int64_t layer, int64_t expert);
  void (*prefetch)(void *ctx, int64_t layer, int64_t expert);
  void (*predict)(void *ctx, int64_t layer, int64_t expert);
  void (*trace)(void *ctx, int64_t layer, int64_t numExperts, int64_t token,
                int64_t expert);
  /// A run-time check failed (moe-lower-runtime-checks): ends the call with
  /// `message` as its error; does not return.
  void (*fail)(void *ctx, const char *message);
};

class ExpertCache {
public:
  /// Creates the caches of `sig` over the weights file `path` (data section
  /// at byte `dataStart`). `budgetBytes` (or `budgetPercent` of the cached
  /// expert bytes) overrides the compiled slot counts when not negative.
  /// With `device` (the table of a `--target=cuda` library) the slots are
  /// device memory: the GPU tier.
  static moe_status_t *create(const Signature &sig, const std::string &path,
                              uint64_t dataStart, int64_t budgetBytes,
                              double budgetPercent, moe_cache_mode_t mode,
                              const moe_cuda_tier_api_t *device,
                              std::unique_ptr<ExpertCache> &out);
  ~ExpertCache();

  /// The slot buffer of cached weight `weightIndex` (an index into
  /// Signature::weights; device memory on the GPU tier) and its extents
  /// `[slots, ...]`.
  const uint8_t *slotBuffer(size_t weightIndex,
                            std::vector<int64_t> &dims) const;

  /// The expert's slot once it is loaded (on the GPU tier: the calling
  /// run's stream waits for the copy); -1 if every slot of the layer is
  /// held (acquired and not released), so none can take it now.
  int64_t acquire(int64_t layer, int64_t expert);
  void release(int64_t layer, int64_t expert);
  void prefetch(int64_t layer, int64_t expert);
  void predict(int64_t layer, int64_t expert);

  /// Counters since creation or the last reset.
  moe_cache_stats_t stats() const;
  void resetStats();
  /// The first error of a hook or a load since the last call; clears it.
  std::string takeError();

private:
  struct Tensor {
    size_t weightIndex;
    uint64_t fileOffset;
    uint64_t sliceBytes;
    std::vector<int64_t> sliceDims;
    uint8_t *slots = nullptr;
    /// GPU tier: every expert's slice, in page-locked host memory.
    uint8_t *host = nullptr;
  };
  struct Layer {
    int64_t id = 0, experts = 0, slots = 0;
    /// GPU tier: the tier's index of slot 0 of this layer.
    size_t slotBase = 0;
    std::vector<Tensor> tensors;
    /// GPU tier: one device block holding the slots of every tensor, and
    /// one page-locked block holding every expert of every tensor, tensor
    /// `t` at `t * pitch` of each: an expert's slices (of equal sizes) are
    /// then one strided copy (moe_cuda_tier_api_t::load) instead of one
    /// copy per tensor.
    uint8_t *deviceBlock = nullptr, *hostBlock = nullptr;
    std::vector<int> slotOf;        // expert -> slot or -1
    std::vector<int> expertIn;      // slot -> expert or -1
    std::vector<uint8_t> ready;     // slot: loaded
    std::vector<int> users;         // slot: acquired and not released
    std::vector<uint64_t> used;     // slot: LRU tick
    std::vector<uint8_t> pinned;    // slot: never evicted
    std::vector<uint8_t> wanted;    // expert: queued by this call's demand
    std::vector<uint8_t> queued;    // expert: in a queue
    std::vector<uint8_t> predicted; // expert: loaded by a prediction, unused
    std::vector<uint8_t> demanded;  // expert: loaded by its layer's prefetch
  };
  struct Request {
    Layer *layer;
    int expert;
    bool predicted;
    bool urgent;
  };

  ExpertCache() = default;
  Layer *findLayer(int64_t layer, int64_t expert);
  void fail(const std::string &message);
  /// A slot for a new load, or -1. Called with the lock held.
  int chooseSlot(Layer &layer, const Request &request);
  /// Gives `slot` to `expert` (evicting its expert), not yet loaded.
  void assignSlot(Layer &layer, int expert, int slot);
  /// Marks the load of `expert` into `slot` done and counts it.
  void finishLoad(Layer &layer, int expert, int slot, bool predicted);
  /// GPU tier: loads `expert` now (its copy queued) if a slot can take it;
  /// returns whether one did. Called with the lock held.
  bool loadNow(Layer &layer, int expert, const Request &request);
  /// Reads expert `e` of `layer` into `slot` (GPU tier: queues its copy);
  /// returns an error message.
  std::string readExpert(const Layer &layer, int expert, int slot);
  /// GPU tier: the message of the last failed call of `device`.
  std::string deviceError(const char *what) const;
  void workerLoop();

  std::vector<Layer> layers;
  std::string path;
  int fd = -1;
  bool direct = false;
  /// MOE_EXPERT_CACHE_READ_GBPS: reads paced to at most this many bytes per
  /// nanosecond (0: as fast as the file gives them), a slower tier emulated.
  double readBytesPerNs = 0;
  moe_cache_mode_t mode = MOE_CACHE_PREFETCH;
  uint8_t *bounce = nullptr;
  size_t bounceBytes = 0;
  /// The GPU tier, or null.
  const moe_cuda_tier_api_t *device = nullptr;
  moe_cuda_tier_t *tier = nullptr;
  /// GPU tier: the slot (tier index) of the worker's last prediction load.
  size_t previousPrediction = SIZE_MAX;

  mutable std::mutex mutex;
  std::condition_variable wake, changed;
  std::deque<Request> demand, predictions;
  bool stopping = false;
  uint64_t tick = 0;
  moe_cache_stats_t counters = {};
  std::string error;
  std::thread worker;
};

} // namespace moe::runtime

#endif // MOE_RUNTIME_LIB_EXPERTCACHE_H
