//===- ExpertCache.cpp - Tiered expert cache of a model -------------------===//
//
// See ExpertCache.h and docs/ExpertCache.md.
//
//===----------------------------------------------------------------------===//

#include "ExpertCache.h"
#include "Internal.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

using namespace moe::runtime;

static constexpr uint64_t kBlock = 4096;

static uint64_t alignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

/// The GPU tier's distance between consecutive tensors of a layer in a block
/// holding `count` slices of each: the largest tensor's, 4096-aligned.
template <typename Tensors>
static uint64_t tensorPitch(const Tensors &tensors, uint64_t count) {
  uint64_t pitch = 0;
  for (const auto &tensor : tensors)
    pitch = std::max(pitch, alignUp(tensor.sliceBytes * count, kBlock));
  return pitch;
}

static uint64_t nowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// Reads up to `bytes` at `offset` of `fd` into `dst`, retrying short reads
/// and EINTR; the bytes read (fewer at the end of the file), or -1 with
/// errno set.
static int64_t preadFully(int fd, uint8_t *dst, uint64_t bytes,
                          uint64_t offset) {
  uint64_t done = 0;
  while (done < bytes) {
    ssize_t n =
        pread(fd, dst + done, bytes - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -1;
    if (n == 0)
      break;
    done += static_cast<uint64_t>(n);
  }
  return static_cast<int64_t>(done);
}

moe_status_t *ExpertCache::create(const Signature &sig, const std::string &path,
                                  uint64_t dataStart, int64_t budgetBytes,
                                  double budgetPercent, moe_cache_mode_t mode,
                                  const moe_cuda_tier_api_t *device,
                                  std::unique_ptr<ExpertCache> &out) {
  std::unique_ptr<ExpertCache> cache(new ExpertCache);
  cache->path = path;
  cache->mode = mode;
  cache->device = device;
  for (const CacheSpec &spec : sig.caches) {
    Layer layer;
    layer.id = spec.layer;
    layer.experts = spec.experts;
    layer.slots = spec.slots;
    cache->layers.push_back(std::move(layer));
  }
  uint64_t allExpertBytes = 0, compiledBytes = 0, minimumBytes = 0;
  std::vector<uint64_t> expertBytes(cache->layers.size(), 0);
  for (size_t i = 0; i < sig.weights.size(); ++i) {
    const ArgumentSpec &weight = sig.weights[i];
    if (weight.cacheLayer < 0)
      continue;
    for (size_t l = 0; l < cache->layers.size(); ++l) {
      Layer &layer = cache->layers[l];
      if (layer.id != weight.cacheLayer)
        continue;
      Tensor tensor;
      tensor.weightIndex = i;
      tensor.fileOffset = dataStart + weight.offset;
      tensor.sliceBytes = weight.bytes / static_cast<uint64_t>(layer.experts);
      tensor.sliceDims.assign(weight.dims.begin() + 1, weight.dims.end());
      expertBytes[l] += tensor.sliceBytes;
      layer.tensors.push_back(std::move(tensor));
    }
  }
  for (size_t l = 0; l < cache->layers.size(); ++l) {
    allExpertBytes += expertBytes[l] * cache->layers[l].experts;
    compiledBytes += expertBytes[l] * cache->layers[l].slots;
    minimumBytes += expertBytes[l];
  }
  if (budgetBytes < 0 && budgetPercent >= 0)
    budgetBytes = static_cast<int64_t>(static_cast<double>(allExpertBytes) *
                                       budgetPercent / 100.0);
  // On demand means no residents at all.
  std::vector<std::vector<int64_t>> pinned;
  for (const CacheSpec &spec : sig.caches)
    pinned.push_back(mode == MOE_CACHE_ONDEMAND ? std::vector<int64_t>()
                                                : spec.pinned);
  if (budgetBytes >= 0) {
    if (static_cast<uint64_t>(budgetBytes) < minimumBytes)
      return makeStatus("expert budget of " + std::to_string(budgetBytes) +
                        " bytes cannot hold one expert of each of the " +
                        std::to_string(cache->layers.size()) +
                        " cached layers: " + std::to_string(minimumBytes) +
                        " bytes are needed");
    // Scale the compiled slot counts; pinned experts keep their order and
    // leave as many free slots as the plan did.
    double scale =
        static_cast<double>(budgetBytes) / static_cast<double>(compiledBytes);
    for (size_t l = 0; l < cache->layers.size(); ++l) {
      Layer &layer = cache->layers[l];
      int64_t free = layer.slots - static_cast<int64_t>(pinned[l].size());
      int64_t slots = static_cast<int64_t>(std::floor(layer.slots * scale));
      slots = std::clamp<int64_t>(slots, 1, layer.experts);
      size_t keep = static_cast<size_t>(std::max<int64_t>(0, slots - free));
      if (pinned[l].size() > keep)
        pinned[l].resize(keep);
      layer.slots = slots;
    }
  }

  size_t tierSlots = 0;
  for (size_t l = 0; l < cache->layers.size(); ++l) {
    Layer &layer = cache->layers[l];
    size_t slots = static_cast<size_t>(layer.slots);
    layer.slotBase = tierSlots;
    tierSlots += slots;
    // The GPU tier: the layer's slot buffers in one device block, each
    // `pitch` bytes after the previous one.
    uint64_t pitch = tensorPitch(layer.tensors, slots);
    if (device && !layer.tensors.empty()) {
      uint64_t bytes = pitch * layer.tensors.size();
      layer.deviceBlock = static_cast<uint8_t *>(device->device_alloc(bytes));
      if (!layer.deviceBlock)
        return makeStatus(
            cache->deviceError(("allocating " + std::to_string(bytes) +
                                " bytes of expert slots in GPU memory")
                                   .c_str()));
      cache->counters.slot_bytes += bytes;
    }
    for (size_t t = 0; t < layer.tensors.size(); ++t) {
      Tensor &tensor = layer.tensors[t];
      uint64_t bytes = alignUp(tensor.sliceBytes * slots, kBlock);
      if (device) {
        tensor.slots = layer.deviceBlock + t * pitch;
      } else {
        tensor.slots =
            static_cast<uint8_t *>(std::aligned_alloc(kBlock, bytes));
        if (!tensor.slots)
          return makeStatus("cannot allocate " + std::to_string(bytes) +
                            " bytes of expert slots");
        std::memset(tensor.slots, 0, bytes);
        cache->counters.slot_bytes += bytes;
      }
      cache->bounceBytes = std::max<size_t>(
          cache->bounceBytes, alignUp(tensor.sliceBytes, kBlock) + kBlock);
    }
    layer.slotOf.assign(layer.experts, -1);
    layer.expertIn.assign(slots, -1);
    layer.ready.assign(slots, 0);
    layer.users.assign(slots, 0);
    layer.used.assign(slots, 0);
    layer.pinned.assign(slots, 0);
    layer.wanted.assign(layer.experts, 0);
    layer.queued.assign(layer.experts, 0);
    layer.predicted.assign(layer.experts, 0);
    layer.demanded.assign(layer.experts, 0);
  }

  // MOE_EXPERT_CACHE_READ_GBPS=R paces the reads to R GB/s (a tier slower
  // than the file's, emulated with a known bandwidth). Not for the GPU tier,
  // whose loads are asynchronous copies.
  if (const char *rate = std::getenv("MOE_EXPERT_CACHE_READ_GBPS");
      !device && rate && *rate) {
    char *end = nullptr;
    double gbps = std::strtod(rate, &end);
    if (end == rate || *end != '\0' || !(gbps > 0) || !std::isfinite(gbps))
      return makeStatus("MOE_EXPERT_CACHE_READ_GBPS must be a positive "
                        "number of GB/s, not " +
                        quote(rate));
    cache->readBytesPerNs = gbps;
  }

  // MOE_EXPERT_CACHE_DIRECT_IO=0 forces buffered reads (as on file systems
  // without O_DIRECT, such as tmpfs).
  const char *directEnv = std::getenv("MOE_EXPERT_CACHE_DIRECT_IO");
  bool tryDirect = !device && (!directEnv || std::strcmp(directEnv, "0") != 0);
  if (tryDirect)
    cache->fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
  cache->direct = cache->fd >= 0;
  if (cache->fd < 0)
    cache->fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (cache->fd < 0)
    return makeStatus("cannot open weights file " + quote(path) +
                      " for the expert cache: " + std::strerror(errno));
  cache->counters.direct_io = cache->direct ? 1 : 0;
  // The bounce buffer of direct reads; the GPU tier reads the file once,
  // into page-locked memory, without it.
  if (!device) {
    cache->bounce =
        static_cast<uint8_t *>(std::aligned_alloc(kBlock, cache->bounceBytes));
    if (!cache->bounce)
      return makeStatus("cannot allocate the expert cache's read buffer");
  }

  // The GPU tier: every cached expert in page-locked host memory (read once
  // from the weights file; per layer one block, its tensors `pitch` bytes
  // apart), a copy stream and the slots' events.
  if (device) {
    for (Layer &layer : cache->layers) {
      if (layer.tensors.empty())
        continue;
      uint64_t pitch =
          tensorPitch(layer.tensors, static_cast<uint64_t>(layer.experts));
      uint64_t blockBytes = pitch * layer.tensors.size();
      layer.hostBlock = static_cast<uint8_t *>(device->host_alloc(blockBytes));
      if (!layer.hostBlock)
        return makeStatus(cache->deviceError(
            ("allocating " + std::to_string(blockBytes) +
             " bytes of page-locked host memory for the expert cache")
                .c_str()));
      for (size_t t = 0; t < layer.tensors.size(); ++t) {
        Tensor &tensor = layer.tensors[t];
        uint64_t bytes =
            tensor.sliceBytes * static_cast<uint64_t>(layer.experts);
        tensor.host = layer.hostBlock + t * pitch;
        int64_t n =
            preadFully(cache->fd, tensor.host, bytes, tensor.fileOffset);
        if (n < 0 || static_cast<uint64_t>(n) < bytes)
          return makeStatus(
              "reading the experts of layer " + std::to_string(layer.id) +
              " from weights file " + quote(path) + " failed: " +
              (n < 0 ? std::strerror(errno) : "the file ends early"));
      }
    }
    cache->tier = device->create(tierSlots);
    if (!cache->tier)
      return makeStatus(
          cache->deviceError("creating the expert cache's copy stream"));
  }

  // Pinned residents are read now, expert pinned[i] into slot i.
  for (size_t l = 0; l < cache->layers.size(); ++l) {
    Layer &layer = cache->layers[l];
    for (size_t i = 0; i < pinned[l].size(); ++i) {
      int expert = static_cast<int>(pinned[l][i]);
      std::string error = cache->readExpert(layer, expert, static_cast<int>(i));
      if (!error.empty())
        return makeStatus(error);
      layer.slotOf[expert] = static_cast<int>(i);
      layer.expertIn[i] = expert;
      layer.ready[i] = 1;
      layer.pinned[i] = 1;
      ++cache->counters.pinned;
    }
  }
  cache->counters.bytes_read = 0;
  cache->worker = std::thread([c = cache.get()] { c->workerLoop(); });
  out = std::move(cache);
  return nullptr;
}

ExpertCache::~ExpertCache() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    stopping = true;
  }
  wake.notify_all();
  if (worker.joinable())
    worker.join();
  if (device) {
    // The copies finish before their memory goes.
    device->destroy(tier);
    for (Layer &layer : layers) {
      device->device_free(layer.deviceBlock);
      device->host_free(layer.hostBlock);
    }
  } else {
    for (Layer &layer : layers)
      for (Tensor &tensor : layer.tensors)
        std::free(tensor.slots);
  }
  std::free(bounce);
  if (fd >= 0)
    close(fd);
}

const uint8_t *ExpertCache::slotBuffer(size_t weightIndex,
                                       std::vector<int64_t> &dims) const {
  for (const Layer &layer : layers)
    for (const Tensor &tensor : layer.tensors)
      if (tensor.weightIndex == weightIndex) {
        dims.assign(1, layer.slots);
        dims.insert(dims.end(), tensor.sliceDims.begin(),
                    tensor.sliceDims.end());
        return tensor.slots;
      }
  return nullptr;
}

void ExpertCache::fail(const std::string &message) {
  if (error.empty())
    error = message;
}

std::string ExpertCache::takeError() {
  std::lock_guard<std::mutex> lock(mutex);
  std::string result;
  result.swap(error);
  return result;
}

ExpertCache::Layer *ExpertCache::findLayer(int64_t layer, int64_t expert) {
  for (Layer &l : layers)
    if (l.id == layer) {
      if (expert < 0 || expert >= l.experts) {
        fail("the model asked for expert " + std::to_string(expert) +
             " of cached layer " + std::to_string(layer) + ", which has " +
             std::to_string(l.experts));
        return nullptr;
      }
      return &l;
    }
  fail("the model asked for cached layer " + std::to_string(layer) +
       ", which its signature does not have");
  return nullptr;
}

std::string ExpertCache::deviceError(const char *what) const {
  const char *error = device ? device->take_error() : nullptr;
  return std::string(what) +
         " failed: " + (error ? error : "unknown CUDA error");
}

std::string ExpertCache::readExpert(const Layer &layer, int expert, int slot) {
  if (device) {
    std::vector<void *> dst;
    std::vector<const void *> src;
    std::vector<size_t> bytes;
    for (const Tensor &tensor : layer.tensors) {
      dst.push_back(tensor.slots + tensor.sliceBytes * slot);
      src.push_back(tensor.host + tensor.sliceBytes * expert);
      bytes.push_back(tensor.sliceBytes);
      counters.bytes_read += tensor.sliceBytes;
    }
    if (device->load(tier, layer.slotBase + static_cast<size_t>(slot),
                     dst.size(), dst.data(), src.data(), bytes.data()))
      return deviceError(("copying expert " + std::to_string(expert) +
                          " of layer " + std::to_string(layer.id) +
                          " to the GPU")
                             .c_str());
    return "";
  }
  for (const Tensor &tensor : layer.tensors) {
    uint64_t offset = tensor.fileOffset + tensor.sliceBytes * expert;
    uint64_t length = tensor.sliceBytes;
    uint8_t *dst = tensor.slots + tensor.sliceBytes * slot;
    uint64_t start = offset / kBlock * kBlock;
    uint64_t end = alignUp(offset + length, kBlock);
    bool aligned = start == offset && end == offset + length &&
                   reinterpret_cast<uintptr_t>(dst) % kBlock == 0;
    uint8_t *target = direct && !aligned ? bounce : dst;
    uint64_t from = direct ? start : offset;
    uint64_t want = direct ? end - start : length;
    int64_t done = preadFully(fd, target, want, from);
    if (done < 0)
      return "reading expert " + std::to_string(expert) + " of layer " +
             std::to_string(layer.id) + " from weights file " + quote(path) +
             " failed: " + std::strerror(errno);
    // Direct reads of the last block may stop at the end of the file.
    uint64_t needed = direct ? offset + length - start : length;
    if (static_cast<uint64_t>(done) < needed)
      return "weights file " + quote(path) + " ends inside expert " +
             std::to_string(expert) + " of layer " + std::to_string(layer.id);
    if (target != dst)
      std::memcpy(dst, bounce + (offset - start), length);
    if (!direct)
      posix_fadvise(fd, static_cast<off_t>(offset), static_cast<off_t>(length),
                    POSIX_FADV_DONTNEED);
    counters.bytes_read += length;
  }
  return "";
}

int ExpertCache::chooseSlot(Layer &layer, const Request &request) {
  int best = -1;
  int bestRank = 0;
  for (int s = 0; s < static_cast<int>(layer.slots); ++s) {
    if (layer.pinned[s] || layer.users[s] > 0)
      continue;
    int expert = layer.expertIn[s];
    if (expert < 0)
      return s;
    if (!layer.ready[s])
      continue; // being loaded
    // Prefer experts this call no longer needs, then unused predictions;
    // evict a still-wanted expert only for an urgent load.
    int rank = layer.wanted[expert] ? 2 : layer.predicted[expert] ? 1 : 0;
    if (rank == 2 && !request.urgent)
      continue;
    if (rank == 1 && request.predicted)
      continue;
    if (best < 0 || rank < bestRank ||
        (rank == bestRank && layer.used[s] < layer.used[best])) {
      best = s;
      bestRank = rank;
    }
  }
  return best;
}

void ExpertCache::workerLoop() {
  std::unique_lock<std::mutex> lock(mutex);
  while (true) {
    wake.wait(lock, [&] {
      return stopping || !demand.empty() || !predictions.empty();
    });
    if (stopping)
      return;
    bool fromDemand = !demand.empty();
    Request request = fromDemand ? demand.front() : predictions.front();
    Layer &layer = *request.layer;
    int expert = request.expert;
    if (layer.slotOf[expert] >= 0) {
      (fromDemand ? demand : predictions).pop_front();
      layer.queued[expert] = 0;
      continue;
    }
    int slot = chooseSlot(layer, request);
    if (slot < 0) {
      if (!fromDemand) {
        predictions.pop_front();
        layer.queued[expert] = 0;
        continue;
      }
      // Wait for a release; a new urgent request may also come first.
      changed.wait(lock);
      continue;
    }
    (fromDemand ? demand : predictions).pop_front();
    layer.queued[expert] = 0;
    assignSlot(layer, expert, slot);
    lock.unlock();
    uint64_t readStart = nowNs();
    std::string failure = readExpert(layer, expert, slot);
    uint64_t readTime = nowNs() - readStart;
    if (readBytesPerNs > 0) {
      uint64_t bytes = 0;
      for (const Tensor &tensor : layer.tensors)
        bytes += tensor.sliceBytes;
      auto paced =
          static_cast<uint64_t>(static_cast<double>(bytes) / readBytesPerNs);
      if (paced > readTime)
        std::this_thread::sleep_for(std::chrono::nanoseconds(paced - readTime));
      readTime = nowNs() - readStart;
    }
    lock.lock();
    counters.read_ns += readTime;
    if (!failure.empty())
      fail(failure);
    finishLoad(layer, expert, slot, request.predicted);
    changed.notify_all();
    if (device) {
      // The GPU tier's predictions: at most two copies in flight (this one
      // queued behind the previous, which is waited for now), so that a
      // demand load (queued by the run's own thread on the same stream)
      // waits behind at most two predicted experts, and the copy engine
      // has the next copy queued when one ends.
      size_t queued = layer.slotBase + static_cast<size_t>(slot);
      lock.unlock();
      int failed = previousPrediction != SIZE_MAX &&
                   device->wait(tier, previousPrediction);
      previousPrediction = queued;
      lock.lock();
      if (failed)
        fail(deviceError("waiting for a predicted expert"));
    }
  }
}

void ExpertCache::assignSlot(Layer &layer, int expert, int slot) {
  int old = layer.expertIn[slot];
  if (old >= 0) {
    layer.slotOf[old] = -1;
    layer.predicted[old] = 0;
    ++counters.evictions;
  }
  layer.expertIn[slot] = expert;
  layer.slotOf[expert] = slot;
  layer.ready[slot] = 0;
}

void ExpertCache::finishLoad(Layer &layer, int expert, int slot,
                             bool predicted) {
  layer.ready[slot] = 1;
  layer.used[slot] = ++tick;
  if (predicted) {
    ++counters.prefetch_loads;
    layer.predicted[expert] = 1;
  } else {
    ++counters.demand_loads;
  }
}

bool ExpertCache::loadNow(Layer &layer, int expert, const Request &request) {
  int slot = chooseSlot(layer, request);
  if (slot < 0)
    return false;
  layer.demanded[expert] = !request.predicted && !request.urgent;
  assignSlot(layer, expert, slot);
  uint64_t start = nowNs();
  std::string failure = readExpert(layer, expert, slot);
  counters.read_ns += nowNs() - start;
  if (!failure.empty())
    fail(failure);
  finishLoad(layer, expert, slot, request.predicted);
  return true;
}

int64_t ExpertCache::acquire(int64_t layerId, int64_t expertId) {
  std::unique_lock<std::mutex> lock(mutex);
  Layer *layer = findLayer(layerId, expertId);
  if (!layer)
    return 0;
  int expert = static_cast<int>(expertId);
  // Every slot pinned or held by the caller (the GPU code acquires a batch
  // of experts before it runs them): none can take the expert until the
  // caller releases some.
  auto full = [&] {
    for (int64_t s = 0; s < layer->slots; ++s)
      if (!layer->pinned[s] && layer->users[s] == 0)
        return false;
    return true;
  };
  if (layer->slotOf[expert] < 0 && full()) {
    bool held = std::any_of(layer->users.begin(), layer->users.end(),
                            [](int users) { return users > 0; });
    if (!held)
      fail("expert " + std::to_string(expertId) + " of cached layer " +
           std::to_string(layerId) + " has no slot: all " +
           std::to_string(layer->slots) + " are pinned");
    return -1;
  }
  ++counters.acquires;
  uint64_t start = 0;
  while (true) {
    int slot = layer->slotOf[expert];
    if (slot >= 0 && layer->ready[slot]) {
      // A hit: resident when its layer first asked for it (on the GPU tier
      // the layer's prefetch call itself may have queued the copy).
      if (start)
        counters.stall_ns += nowNs() - start;
      else if (layer->demanded[expert])
        ++counters.misses;
      else
        ++counters.hits;
      layer->demanded[expert] = 0;
      if (device &&
          device->acquire(tier, layer->slotBase + static_cast<size_t>(slot)))
        fail(deviceError("waiting for an expert copy"));
      ++layer->users[slot];
      layer->used[slot] = ++tick;
      layer->wanted[expert] = 0;
      if (layer->predicted[expert]) {
        layer->predicted[expert] = 0;
        ++counters.prefetch_used;
      }
      return slot;
    }
    if (!start) {
      start = nowNs();
      ++counters.misses;
    }
    // The GPU tier queues the copy here (the stream orders it). If the
    // only free slot is being given a prediction by the worker right now,
    // the worker loads this one after it, as on the CPU.
    if (device && slot < 0 &&
        loadNow(*layer, expert, {layer, expert, false, true}))
      continue;
    if (slot < 0) {
      // Load it next, before anything queued.
      demand.push_front({layer, expert, false, true});
      layer->queued[expert] = 1;
      wake.notify_all();
      changed.notify_all();
    }
    changed.wait(lock);
    if (stopping)
      return 0;
  }
}

void ExpertCache::release(int64_t layerId, int64_t expertId) {
  std::lock_guard<std::mutex> lock(mutex);
  Layer *layer = findLayer(layerId, expertId);
  if (!layer)
    return;
  int slot = layer->slotOf[expertId];
  if (slot < 0 || layer->users[slot] == 0) {
    fail("the model released expert " + std::to_string(expertId) +
         " of layer " + std::to_string(layerId) + " without acquiring it");
    return;
  }
  // The GPU tier: a later load into the slot waits for the work queued so
  // far (recorded before the slot can be chosen for one).
  if (device &&
      device->release(tier, layer->slotBase + static_cast<size_t>(slot)))
    fail(deviceError("recording an expert release"));
  --layer->users[slot];
  if (mode == MOE_CACHE_ONDEMAND && layer->users[slot] == 0 &&
      !layer->pinned[slot]) {
    layer->slotOf[expertId] = -1;
    layer->expertIn[slot] = -1;
    layer->ready[slot] = 0;
  }
  changed.notify_all();
}

void ExpertCache::prefetch(int64_t layerId, int64_t expertId) {
  std::lock_guard<std::mutex> lock(mutex);
  Layer *layer = findLayer(layerId, expertId);
  if (!layer || mode == MOE_CACHE_ONDEMAND)
    return;
  // The layer has started: its real demand supersedes the predictions not
  // yet loaded for it, which would only compete for the disk now.
  for (auto it = predictions.begin(); it != predictions.end();) {
    if (it->layer != layer) {
      ++it;
      continue;
    }
    layer->queued[it->expert] = 0;
    it = predictions.erase(it);
  }
  layer->wanted[expertId] = 1;
  if (layer->slotOf[expertId] >= 0 || layer->queued[expertId])
    return;
  if (device) {
    // The GPU tier queues the copy now, if a slot is free for it (else the
    // acquire loads it, in a later batch).
    loadNow(*layer, static_cast<int>(expertId),
            {layer, static_cast<int>(expertId), false, false});
    return;
  }
  demand.push_back({layer, static_cast<int>(expertId), false, false});
  layer->queued[expertId] = 1;
  wake.notify_all();
  changed.notify_all();
}

void ExpertCache::predict(int64_t layerId, int64_t expertId) {
  std::lock_guard<std::mutex> lock(mutex);
  Layer *layer = findLayer(layerId, expertId);
  if (!layer)
    return;
  ++counters.predictions;
  if (mode != MOE_CACHE_PREFETCH || layer->slotOf[expertId] >= 0 ||
      layer->queued[expertId])
    return;
  predictions.push_back({layer, static_cast<int>(expertId), true, false});
  layer->queued[expertId] = 1;
  wake.notify_all();
}

moe_cache_stats_t ExpertCache::stats() const {
  std::lock_guard<std::mutex> lock(mutex);
  return counters;
}

void ExpertCache::resetStats() {
  std::lock_guard<std::mutex> lock(mutex);
  moe_cache_stats_t fresh = {};
  fresh.slot_bytes = counters.slot_bytes;
  fresh.pinned = counters.pinned;
  fresh.direct_io = counters.direct_io;
  counters = fresh;
}
