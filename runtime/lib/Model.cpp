//===- Model.cpp - Loading and invoking compiled models -------------------===//
//
// Implements moe_model_t over the ABI of docs/CompiledModelABI.md: dlopen the
// library, parse its signature, map the weights file, and translate tensors
// to and from memref descriptors.
//
//===----------------------------------------------------------------------===//

#include "ExpertCache.h"
#include "Internal.h"
#include "Signature.h"

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <map>
#include <memory>
#include <mutex>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace moe::runtime;

static_assert(sizeof(void *) == sizeof(int64_t),
              "memref descriptors need 64-bit pointers");

/// MLIR's lowering of memref.get_global stores this in the allocated pointer
/// of a memref that is not on the heap; such a result must not be freed.
static const uintptr_t kNonHeapAllocated = 0xdeadbeef;

static constexpr char kWeightsMagic[8] = {'M', 'O', 'E', 'W',
                                          'G', 'H', 'T', '1'};
static constexpr size_t kWeightsHeaderSize = 64;

struct moe_model {
  /// dlopen handle; NULL for moe_model_load_from_symbols.
  void *library = nullptr;
  /// Closes `library` when the model and every device tensor it allocated
  /// (whose memory its code frees) are gone.
  std::shared_ptr<void> libraryOwner;
  moe_model_run_fn_t run = nullptr;
  /// The optional `moe_model_take_error`; null if the model has none.
  moe_model_take_error_fn_t takeError = nullptr;
  /// The optional `moe_model_release` (frees what the library keeps between
  /// runs, e.g. device copies of the weights) and `moe_model_device_ms`.
  void (*release)(void) = nullptr;
  double (*deviceMs)(void) = nullptr;
  /// The optional device entry points of a `--target=cuda` library (used
  /// only when all of them and `takeError` are there).
  moe_model_run_fn_t runDevice = nullptr;
  void *(*deviceAlloc)(size_t) = nullptr;
  void (*deviceFree)(void *) = nullptr;
  int (*deviceCopy)(void *, const void *, size_t) = nullptr;
  /// The GPU tier of the expert cache (`moe_model_cuda_tier_api`), or null.
  const moe_cuda_tier_api_t *tierAPI = nullptr;
  std::string signatureText;
  Signature signature;
  /// Empty if no weights file is mapped.
  std::string weightsPath;
  void *mapping = nullptr;
  size_t mappingSize = 0;
  /// The data section inside the mapping.
  const uint8_t *weightsData = nullptr;
  uint64_t weightsDataSize = 0;

  /// The library's `moe_model_bind_host`, if it calls the runtime.
  void (*bindHost)(const HostAPI *) = nullptr;
  HostAPI host = {};
  /// The expert cache, for a signature with `cache` lines.
  std::unique_ptr<ExpertCache> cache;
  moe_cache_mode_t cacheMode = MOE_CACHE_PREFETCH;
  /// The configuration of the last moe_model_configure_cache, and whether
  /// its cache is still to be created (the GPU tier is created by the first
  /// run: it needs the GPU, which loading a model does not).
  bool cachePending = false;
  int64_t pendingBudgetBytes = -1;
  double pendingBudgetPercent = -1.0;

  /// The routing profile: per layer, expert counts and transitions to the
  /// next layer, plus this invocation's trace.
  struct LayerProfile {
    int64_t experts = 0;
    std::vector<uint64_t> counts;
    /// (token, expert) pairs of the current invocation.
    std::vector<std::pair<int64_t, int64_t>> trace;
    /// next[i * nextExperts + j].
    std::vector<uint64_t> next;
  };
  std::mutex profileMutex;
  std::map<int64_t, LayerProfile> profile;
  uint64_t profiledRuns = 0;
  std::string hookError;

  ~moe_model() {
    // The cache's worker must stop before the library goes.
    cache.reset();
    // Device copies of the weights must not outlive the mapping they were
    // made from: another model could map other weights at the same address.
    if (release)
      release();
    if (mapping)
      munmap(mapping, mappingSize);
    libraryOwner.reset();
  }
};

//===----------------------------------------------------------------------===//
// Runtime hooks of the compiled code (docs/ExpertCache.md)
//===----------------------------------------------------------------------===//

static int64_t hookAcquire(void *ctx, int64_t layer, int64_t expert) {
  auto *model = static_cast<moe_model_t *>(ctx);
  if (!model->cache) {
    model->hookError = "the model acquired an expert but has no expert cache";
    return 0;
  }
  return model->cache->acquire(layer, expert);
}
static void hookRelease(void *ctx, int64_t layer, int64_t expert) {
  auto *model = static_cast<moe_model_t *>(ctx);
  if (model->cache)
    model->cache->release(layer, expert);
}
static void hookPrefetch(void *ctx, int64_t layer, int64_t expert) {
  auto *model = static_cast<moe_model_t *>(ctx);
  if (model->cache)
    model->cache->prefetch(layer, expert);
}
static void hookPredict(void *ctx, int64_t layer, int64_t expert) {
  auto *model = static_cast<moe_model_t *>(ctx);
  if (model->cache)
    model->cache->predict(layer, expert);
}
namespace {
/// Where a failed run-time check of the compiled code returns to: the model
/// call in progress on this thread (callModel).
struct CheckTrap {
  std::jmp_buf env;
  const char *message = nullptr;
};
thread_local CheckTrap *activeTrap = nullptr;
} // namespace

/// `moe_rt_fail` (moe-lower-runtime-checks): ends the model call in progress
/// with `message`. The compiled code's frames are left without running
/// anything (they hold no destructors; the buffers they allocated are lost).
/// Outside a call (a hook called from another thread) the process cannot
/// continue safely, and stops with the message.
[[noreturn]] static void hookFail(void *, const char *message) {
  CheckTrap *trap = activeTrap;
  if (!trap) {
    std::fprintf(stderr,
                 "moe: a run-time check failed outside a model call: "
                 "%s\n",
                 message ? message : "(no message)");
    std::abort();
  }
  trap->message = message ? message : "a run-time check failed";
  std::longjmp(trap->env, 1);
}

static void hookTrace(void *ctx, int64_t layer, int64_t numExperts,
                      int64_t token, int64_t expert) {
  auto *model = static_cast<moe_model_t *>(ctx);
  std::lock_guard<std::mutex> lock(model->profileMutex);
  auto &entry = model->profile[layer];
  if (entry.experts == 0) {
    entry.experts = numExperts;
    entry.counts.assign(static_cast<size_t>(numExperts), 0);
  }
  if (numExperts != entry.experts || expert < 0 || expert >= numExperts ||
      token < 0) {
    model->hookError = "the model traced expert " + std::to_string(expert) +
                       " of layer " + std::to_string(layer) + " out of range";
    return;
  }
  entry.trace.push_back({token, expert});
}

/// Folds the invocation's trace into the profile.
static void finishProfile(moe_model_t &model) {
  std::lock_guard<std::mutex> lock(model.profileMutex);
  if (model.profile.empty())
    return;
  ++model.profiledRuns;
  for (auto it = model.profile.begin(); it != model.profile.end(); ++it) {
    auto &layer = it->second;
    for (auto [token, expert] : layer.trace)
      ++layer.counts[expert];
    auto nextIt = model.profile.find(it->first + 1);
    if (nextIt != model.profile.end()) {
      auto &next = nextIt->second;
      if (layer.next.empty())
        layer.next.assign(layer.experts * next.experts, 0);
      std::map<int64_t, std::vector<int64_t>> nextByToken;
      for (auto [token, expert] : next.trace)
        nextByToken[token].push_back(expert);
      for (auto [token, expert] : layer.trace) {
        auto found = nextByToken.find(token);
        if (found == nextByToken.end())
          continue;
        for (int64_t j : found->second)
          ++layer.next[expert * next.experts + j];
      }
    }
  }
  for (auto &entry : model.profile)
    entry.second.trace.clear();
}

/// Maps `path` and validates it against the model's weights.
static moe_status_t *mapWeights(moe_model_t &model, const std::string &path) {
  std::string file = "weights file " + quote(path);
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return makeStatus("cannot open " + file + ": " + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return makeStatus(file + " is not a regular file");
  }
  size_t fileSize = static_cast<size_t>(st.st_size);
  if (fileSize < kWeightsHeaderSize) {
    close(fd);
    return makeStatus(file + " is truncated: " + std::to_string(fileSize) +
                      " bytes is smaller than the 64-byte header");
  }
  void *mapping = mmap(nullptr, fileSize, PROT_READ, MAP_PRIVATE, fd, 0);
  int mapErrno = errno;
  close(fd);
  if (mapping == MAP_FAILED)
    return makeStatus("cannot map " + file + ": " + std::strerror(mapErrno));
  model.weightsPath = path;
  model.mapping = mapping;
  model.mappingSize = fileSize;

  const auto *bytes = static_cast<const uint8_t *>(mapping);
  if (std::memcmp(bytes, kWeightsMagic, sizeof(kWeightsMagic)) != 0)
    return makeStatus(file + " has a bad magic (expected 'MOEWGHT1')");
  uint64_t dataSize = 0;
  for (int i = 7; i >= 0; --i)
    dataSize = (dataSize << 8) | bytes[8 + i];
  uint64_t available = fileSize - kWeightsHeaderSize;
  if (dataSize > available)
    return makeStatus(file + " is truncated: the header declares " +
                      std::to_string(dataSize) + " data bytes but only " +
                      std::to_string(available) + " follow it");
  model.weightsData = bytes + kWeightsHeaderSize;
  model.weightsDataSize = dataSize;

  for (const ArgumentSpec &weight : model.signature.weights)
    if (weight.offset > dataSize || weight.bytes > dataSize - weight.offset)
      return makeStatus(file + ": weight " + quote(weight.name) +
                        " (offset=" + std::to_string(weight.offset) +
                        " bytes=" + std::to_string(weight.bytes) +
                        ") lies outside the " + std::to_string(dataSize) +
                        "-byte data section");

  // Resident weights are read in now, so that the first runs do not fault
  // them in from disk; weights in an expert cache are left to the cache.
  uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  for (const ArgumentSpec &weight : model.signature.weights) {
    if (weight.cacheLayer >= 0 || weight.bytes == 0)
      continue;
    auto begin = reinterpret_cast<uintptr_t>(model.weightsData + weight.offset);
    uintptr_t end = begin + weight.bytes;
    begin &= ~(page - 1);
#ifdef MADV_POPULATE_READ
    if (madvise(reinterpret_cast<void *>(begin), end - begin,
                MADV_POPULATE_READ) == 0)
      continue;
#endif
    madvise(reinterpret_cast<void *>(begin), end - begin, MADV_WILLNEED);
  }
  return nullptr;
}

/// Builds a model from its entry points; takes ownership of `library`. The
/// weights file is opened only if the signature has weights.
static moe_status_t *createModel(void *library, const char *signatureText,
                                 moe_model_run_fn_t run,
                                 const std::string &source,
                                 const char *weightsPath, moe_model_t **out) {
  auto *model = new moe_model;
  model->library = library;
  model->libraryOwner = std::shared_ptr<void>(library, [](void *handle) {
    if (handle)
      dlclose(handle);
  });
  model->run = run;
  // The optional entry points; a model given by its symbols (an executable
  // from --emit=exe) finds them among the process's, as moe_model_bind_host
  // below.
  void *scope = library ? library : RTLD_DEFAULT;
  model->takeError = reinterpret_cast<moe_model_take_error_fn_t>(
      dlsym(scope, "moe_model_take_error"));
  model->release =
      reinterpret_cast<void (*)(void)>(dlsym(scope, "moe_model_release"));
  model->deviceMs =
      reinterpret_cast<double (*)(void)>(dlsym(scope, "moe_model_device_ms"));
  model->runDevice = reinterpret_cast<moe_model_run_fn_t>(
      dlsym(scope, "moe_model_run_device"));
  model->deviceAlloc = reinterpret_cast<void *(*)(size_t)>(
      dlsym(scope, "moe_model_device_alloc"));
  model->deviceFree =
      reinterpret_cast<void (*)(void *)>(dlsym(scope, "moe_model_device_free"));
  model->deviceCopy = reinterpret_cast<int (*)(void *, const void *, size_t)>(
      dlsym(scope, "moe_model_device_copy"));
  if (auto tierAPI = reinterpret_cast<const moe_cuda_tier_api_t *(*)(void)>(
          dlsym(scope, "moe_model_cuda_tier_api")))
    model->tierAPI = tierAPI();
  if (moe_status_t *status =
          parseSignature(signatureText, source, model->signature)) {
    delete model;
    return status;
  }
  model->signatureText = signatureText;

  bool needsWeights = !model->signature.weights.empty();
  if (needsWeights && !weightsPath) {
    delete model;
    return makeStatus(quote(source) + " has " +
                      std::to_string(model->signature.weights.size()) +
                      " weights but no weights file was given");
  }
  if (needsWeights) {
    if (moe_status_t *status = mapWeights(*model, weightsPath)) {
      delete model;
      return status;
    }
  }

  // A library that calls the runtime gets the hook table.
  void *bindSymbol = library ? dlsym(library, "moe_model_bind_host")
                             : dlsym(RTLD_DEFAULT, "moe_model_bind_host");
  model->bindHost = reinterpret_cast<void (*)(const HostAPI *)>(bindSymbol);
  if (!model->signature.caches.empty() && !model->bindHost) {
    delete model;
    return makeStatus(quote(source) +
                      " has an expert cache but does not define "
                      "moe_model_bind_host");
  }
  if (model->bindHost) {
    model->host = {model,       hookAcquire, hookRelease, hookPrefetch,
                   hookPredict, hookTrace,   hookFail};
    model->bindHost(&model->host);
  }
  if (!model->signature.caches.empty()) {
    if (moe_status_t *status =
            moe_model_configure_cache(model, -1, -1.0, MOE_CACHE_PREFETCH)) {
      delete model;
      return status;
    }
  }
  *out = model;
  return nullptr;
}

int moe_parse_expert_budget(const char *text, int64_t *bytesOut,
                            double *percentOut) {
  if (!text || !bytesOut || !percentOut)
    return 0;
  std::string value = text;
  if (value.empty())
    return 0;
  if (value.back() == '%') {
    value.pop_back();
    char *end = nullptr;
    errno = 0;
    double p = value.empty() ? -1 : std::strtod(value.c_str(), &end);
    if (errno || !end || *end || !(p >= 0 && p <= 100))
      return 0;
    *percentOut = p;
    *bytesOut = -1;
    return 1;
  }
  uint64_t scale = 1;
  char last = value.back();
  if (last == 'K' || last == 'k')
    scale = 1ull << 10;
  else if (last == 'M')
    scale = 1ull << 20;
  else if (last == 'G')
    scale = 1ull << 30;
  if (scale != 1)
    value.pop_back();
  if (value.empty() || value[0] < '0' || value[0] > '9')
    return 0;
  char *end = nullptr;
  errno = 0;
  unsigned long long n = std::strtoull(value.c_str(), &end, 10);
  if (errno || *end || n > static_cast<uint64_t>(INT64_MAX) / scale)
    return 0;
  *bytesOut = static_cast<int64_t>(n * scale);
  *percentOut = -1;
  return 1;
}

int moe_model_has_cache(const moe_model_t *model) {
  return model && (model->cache || model->cachePending) ? 1 : 0;
}

/// Creates the cache configured last, if it is not there yet.
static moe_status_t *createPendingCache(moe_model_t *model) {
  if (!model->cachePending)
    return nullptr;
  std::unique_ptr<ExpertCache> cache;
  if (moe_status_t *status = ExpertCache::create(
          model->signature, model->weightsPath, kWeightsHeaderSize,
          model->pendingBudgetBytes, model->pendingBudgetPercent,
          model->cacheMode, model->tierAPI, cache))
    return status;
  model->cache = std::move(cache);
  model->cachePending = false;
  return nullptr;
}

moe_status_t *moe_model_configure_cache(moe_model_t *model,
                                        int64_t budget_bytes,
                                        double budget_percent,
                                        moe_cache_mode_t mode) {
  if (!model)
    return moe_status_make("no model given");
  if (model->signature.caches.empty())
    return moe_status_make("the model has no expert cache (compile it with "
                           "moe-compile --expert-budget)");
  if (mode != MOE_CACHE_ONDEMAND && mode != MOE_CACHE_LRU &&
      mode != MOE_CACHE_PREFETCH)
    return moe_status_make("unknown expert cache mode %d", (int)mode);
  if (budget_bytes < 0 && budget_percent > 100.0)
    return moe_status_make("expert budget percentage must be in [0, 100]");
  model->cache.reset();
  model->cacheMode = mode;
  model->pendingBudgetBytes = budget_bytes;
  model->pendingBudgetPercent = budget_percent;
  model->cachePending = true;
  // The GPU tier is created by the first run; the file tier now.
  if (model->tierAPI)
    return nullptr;
  moe_status_t *status = createPendingCache(model);
  model->cachePending = false;
  return status;
}

void moe_model_cache_stats(const moe_model_t *model, moe_cache_stats_t *out) {
  if (!out)
    return;
  *out = moe_cache_stats_t{};
  if (model && model->cache)
    *out = model->cache->stats();
}

void moe_model_reset_cache_stats(moe_model_t *model) {
  if (model && model->cache)
    model->cache->resetStats();
}

moe_status_t *moe_model_write_profile(const moe_model_t *model,
                                      const char *path) {
  if (!model || !path)
    return moe_status_make("moe_model_write_profile needs a model and a path");
  auto &mutableModel = const_cast<moe_model_t &>(*model);
  std::lock_guard<std::mutex> lock(mutableModel.profileMutex);
  if (model->profile.empty())
    return moe_status_make(
        "no routing was recorded: compile the model with moe-compile "
        "--instrument-routing and run it at least once");
  std::string json =
      "{\"version\": 1, \"runs\": " + std::to_string(model->profiledRuns) +
      ", \"layers\": [";
  int64_t expectedLayer = 0;
  for (const auto &[layer, entry] : model->profile) {
    if (layer != expectedLayer)
      return moe_status_make("the routing trace skips layer %lld",
                             (long long)expectedLayer);
    ++expectedLayer;
    json += layer ? ",\n  " : "\n  ";
    json += "{\"layer\": " + std::to_string(layer) +
            ", \"experts\": " + std::to_string(entry.experts) +
            ", \"counts\": [";
    for (size_t i = 0; i < entry.counts.size(); ++i)
      json += (i ? ", " : "") + std::to_string(entry.counts[i]);
    json += "]";
    if (!entry.next.empty()) {
      size_t nextExperts = entry.next.size() / entry.experts;
      json += ", \"next\": [";
      for (int64_t i = 0; i < entry.experts; ++i) {
        json += i ? ", [" : "[";
        for (size_t j = 0; j < nextExperts; ++j)
          json +=
              (j ? ", " : "") + std::to_string(entry.next[i * nextExperts + j]);
        json += "]";
      }
      json += "]";
    }
    json += "}";
  }
  json += "\n]}\n";
  std::string temp = std::string(path) + ".tmp";
  FILE *file = std::fopen(temp.c_str(), "wb");
  if (!file)
    return makeStatus("cannot write profile " + quote(path) + ": " +
                      std::strerror(errno));
  bool ok = std::fwrite(json.data(), 1, json.size(), file) == json.size();
  ok = std::fclose(file) == 0 && ok;
  if (!ok || std::rename(temp.c_str(), path) != 0) {
    std::remove(temp.c_str());
    return makeStatus("cannot write profile " + quote(path));
  }
  return nullptr;
}

/// Looks up both ABI symbols in `library`.
static moe_status_t *lookUpSymbols(void *library, const std::string &source,
                                   const char *hint,
                                   moe_model_signature_fn_t &signature,
                                   moe_model_run_fn_t &run) {
  for (const char *name : {"moe_model_signature", "moe_model_run"}) {
    void *symbol = dlsym(library, name);
    if (!symbol)
      return makeStatus(source + " does not define " + name + hint);
    if (std::strcmp(name, "moe_model_run") == 0)
      run = reinterpret_cast<moe_model_run_fn_t>(symbol);
    else
      signature = reinterpret_cast<moe_model_signature_fn_t>(symbol);
  }
  return nullptr;
}

moe_status_t *moe_model_load(const char *lib_path, const char *weights_path,
                             moe_model_t **out) {
  if (!lib_path || !*lib_path)
    return moe_status_make("no model library path given");
  std::string path = lib_path;
  // Without a slash dlopen would search the library path, not the directory.
  std::string openPath =
      path.find('/') == std::string::npos ? "./" + path : path;
  dlerror();
  void *library = dlopen(openPath.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    const char *error = dlerror();
    return makeStatus("cannot load model library " + quote(path) + ": " +
                      (error ? error : "unknown error"));
  }
  moe_model_signature_fn_t signature = nullptr;
  moe_model_run_fn_t run = nullptr;
  if (moe_status_t *status = lookUpSymbols(
          library, "model library " + quote(path), "", signature, run)) {
    dlclose(library);
    return status;
  }

  std::string weights;
  if (weights_path) {
    weights = weights_path;
  } else {
    size_t n = path.size();
    weights = n > 3 && path.compare(n - 3, 3, ".so") == 0
                  ? path.substr(0, n - 3) + ".weights"
                  : path + ".weights";
  }
  return createModel(library, signature(), run, path, weights.c_str(), out);
}

moe_status_t *moe_model_load_from_self(const char *weights_path,
                                       moe_model_t **out) {
  void *self = dlopen(nullptr, RTLD_NOW);
  if (!self)
    return moe_status_make("cannot open the executable's own symbols");
  moe_model_signature_fn_t signature = nullptr;
  moe_model_run_fn_t run = nullptr;
  if (moe_status_t *status =
          lookUpSymbols(self, "the executable", " (link it with -rdynamic)",
                        signature, run)) {
    dlclose(self);
    return status;
  }
  return createModel(self, signature(), run, "the executable", weights_path,
                     out);
}

moe_status_t *moe_model_load_from_symbols(moe_model_signature_fn_t signature,
                                          moe_model_run_fn_t run,
                                          const char *weights_path,
                                          moe_model_t **out) {
  if (!signature || !run)
    return moe_status_make("moe_model_load_from_symbols needs both entry "
                           "points");
  return createModel(nullptr, signature(), run, "the linked model",
                     weights_path, out);
}

void moe_model_set_take_error(moe_model_t *model,
                              moe_model_take_error_fn_t take_error) {
  if (model)
    model->takeError = take_error;
}

void moe_model_free(moe_model_t *model) { delete model; }

double moe_model_last_device_ms(const moe_model_t *model) {
  return model && model->deviceMs ? model->deviceMs() : -1.0;
}

const char *moe_model_signature_text(const moe_model_t *model) {
  return model->signatureText.c_str();
}

const char *moe_model_weights_path(const moe_model_t *model) {
  return model->mapping ? model->weightsPath.c_str() : nullptr;
}

size_t moe_model_num_inputs(const moe_model_t *model) {
  return model->signature.inputs.size();
}

const char *moe_model_input_name(const moe_model_t *model, size_t index) {
  return model->signature.inputs[index].name.c_str();
}

moe_dtype_t moe_model_input_dtype(const moe_model_t *model, size_t index) {
  return model->signature.inputs[index].dtype;
}

size_t moe_model_input_rank(const moe_model_t *model, size_t index) {
  return model->signature.inputs[index].dims.size();
}

const int64_t *moe_model_input_dims(const moe_model_t *model, size_t index) {
  const std::vector<int64_t> &dims = model->signature.inputs[index].dims;
  return dims.empty() ? nullptr : dims.data();
}

size_t moe_model_num_outputs(const moe_model_t *model) {
  return model->signature.outputs.size();
}

const char *moe_model_output_name(const moe_model_t *model, size_t index) {
  return model->signature.outputs[index].name.c_str();
}

moe_dtype_t moe_model_output_dtype(const moe_model_t *model, size_t index) {
  return model->signature.outputs[index].dtype;
}

size_t moe_model_output_rank(const moe_model_t *model, size_t index) {
  return model->signature.outputs[index].rank;
}

//===----------------------------------------------------------------------===//
// Invocation
//===----------------------------------------------------------------------===//

static std::string plural(size_t n, const char *noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}

/// Checks `tensor` against input `index` of the signature.
static moe_status_t *checkInput(const ArgumentSpec &spec, size_t index,
                                const moe_tensor_t *tensor) {
  std::string what =
      "input " + std::to_string(index) + " (" + quote(spec.name) + ")";
  if (!tensor)
    return makeStatus(what + " is NULL");
  moe_dtype_t dtype = moe_tensor_dtype(tensor);
  size_t rank = moe_tensor_rank(tensor);
  const int64_t *shape = moe_tensor_shape(tensor);
  bool matches = dtype == spec.dtype && rank == spec.dims.size();
  for (size_t i = 0; matches && i < rank; ++i)
    matches = spec.dims[i] == MOE_DYNAMIC_DIM || spec.dims[i] == shape[i];
  if (matches)
    return nullptr;
  // numpy has no bfloat16: a uint16 .npy is read as bf16 bits (npy.h).
  const char *hint = dtype == MOE_DTYPE_BF16 && spec.dtype != MOE_DTYPE_BF16
                         ? " (a uint16 .npy holds bf16 bits)"
                         : "";
  return makeStatus(
      what + ": expected " + moe_dtype_name(spec.dtype) + " tensor of shape " +
      formatDims(spec.dims.data(), spec.dims.size()) + ", got " +
      moe_dtype_name(dtype) + " " + formatDims(shape, rank) + hint);
}

/// Appends an identity-strided descriptor for `data` with extents `shape`.
static void appendDescriptor(std::vector<int64_t> &block, const void *data,
                             const int64_t *shape, size_t rank) {
  int64_t pointer;
  std::memcpy(&pointer, &data, sizeof(pointer));
  block.push_back(pointer); // allocated
  block.push_back(pointer); // aligned
  block.push_back(0);       // offset
  block.insert(block.end(), shape, shape + rank);
  size_t stridesAt = block.size();
  block.resize(stridesAt + rank);
  int64_t stride = 1;
  for (size_t i = rank; i-- > 0;) {
    block[stridesAt + i] = stride;
    stride *= shape[i];
  }
}

namespace {
/// One result descriptor read back from the result block.
struct ResultView {
  void *allocated;
  const uint8_t *aligned;
  int64_t offset;
  const int64_t *sizes;
  const int64_t *strides;
  size_t rank;
};
} // namespace

static ResultView readResult(const int64_t *descriptor, size_t rank) {
  ResultView view;
  std::memcpy(&view.allocated, &descriptor[0], sizeof(void *));
  std::memcpy(&view.aligned, &descriptor[1], sizeof(void *));
  view.offset = descriptor[2];
  view.sizes = descriptor + 3;
  view.strides = descriptor + 3 + rank;
  view.rank = rank;
  return view;
}

/// Whether the elements of `view` are contiguous in row-major order.
static bool isRowMajor(const ResultView &view) {
  int64_t expected = 1;
  for (size_t i = view.rank; i-- > 0;) {
    if (view.sizes[i] != 1 && view.strides[i] != expected)
      return false;
    expected *= view.sizes[i];
  }
  return true;
}

/// Copies a (possibly strided) result into a new row-major tensor.
static moe_status_t *copyResult(const OutputSpec &spec, size_t index,
                                const ResultView &view, moe_tensor_t **out) {
  std::string what =
      "output " + std::to_string(index) + " (" + quote(spec.name) + ")";
  for (size_t i = 0; i < view.rank; ++i)
    if (view.sizes[i] < 0)
      return makeStatus(what + ": the model returned negative extent " +
                        std::to_string(view.sizes[i]));
  moe_tensor_t *tensor;
  if (moe_status_t *status =
          moe_tensor_create(spec.dtype, view.rank, view.sizes, &tensor))
    return makeStatus(what + ": " + moe_status_message(status));
  int64_t numElements = moe_tensor_num_elements(tensor);
  if (numElements == 0) {
    *out = tensor;
    return nullptr;
  }
  if (!view.aligned) {
    moe_tensor_free(tensor);
    return makeStatus(what + ": the model returned a NULL buffer");
  }

  size_t elementSize = moe_dtype_size(spec.dtype);
  auto *dst = static_cast<uint8_t *>(moe_tensor_data(tensor));
  const uint8_t *base = view.aligned + view.offset * (int64_t)elementSize;

  if (isRowMajor(view)) {
    std::memcpy(dst, base, moe_tensor_byte_size(tensor));
    *out = tensor;
    return nullptr;
  }

  // Walk the index space in row-major order, innermost dimension fastest.
  std::vector<int64_t> position(view.rank, 0);
  for (int64_t n = 0; n < numElements; ++n) {
    int64_t element = 0;
    for (size_t i = 0; i < view.rank; ++i)
      element += position[i] * view.strides[i];
    std::memcpy(dst + n * (int64_t)elementSize,
                base + element * (int64_t)elementSize, elementSize);
    for (size_t i = view.rank; i-- > 0;) {
      if (++position[i] < view.sizes[i])
        break;
      position[i] = 0;
    }
  }
  *out = tensor;
  return nullptr;
}

static bool pointsInto(const void *p, const void *begin, size_t size) {
  auto address = reinterpret_cast<uintptr_t>(p);
  auto start = reinterpret_cast<uintptr_t>(begin);
  return address >= start && (address - start < size || address == start);
}

static bool hasDevice(const moe_model_t &model) {
  return model.runDevice && model.deviceAlloc && model.deviceFree &&
         model.deviceCopy && model.takeError;
}

int moe_model_has_device(const moe_model_t *model) {
  return model && hasDevice(*model) ? 1 : 0;
}

/// The error of a device operation on a model without a device.
static moe_status_t *noDevice(const char *what) {
  return moe_status_make("%s needs a model compiled with moe-compile "
                         "--target=cuda; this one has no device",
                         what);
}

moe_status_t *moe_model_check_inputs(const moe_model_t *model,
                                     const moe_tensor_t *const *inputs,
                                     size_t n_inputs) {
  const Signature &sig = model->signature;
  if (n_inputs != sig.inputs.size())
    return makeStatus("the model expects " +
                      plural(sig.inputs.size(), "input") + ", got " +
                      std::to_string(n_inputs));
  for (size_t i = 0; i < n_inputs; ++i)
    if (moe_status_t *status = checkInput(sig.inputs[i], i, inputs[i]))
      return status;
  if (!hasDevice(*model))
    for (size_t i = 0; i < n_inputs; ++i)
      if (moe_tensor_is_device(inputs[i]))
        return makeStatus("input " + std::to_string(i) + " (" +
                          quote(sig.inputs[i].name) +
                          ") is in device memory, but the model was not "
                          "compiled with moe-compile --target=cuda");
  return nullptr;
}

/// The memref descriptors of one invocation: the argument array for the
/// library's run function, over the result block and the descriptors of the
/// inputs and weights.
namespace {
struct Invocation {
  std::vector<int64_t> argBlock;
  std::vector<int64_t> resultBlock;
  std::vector<size_t> resultOffsets;
  std::vector<void *> args;
  /// A run-time check stopped the call: the result slots were not written.
  bool failedCheck = false;
};
} // namespace

/// Checks the inputs and output slots and builds the descriptors.
static moe_status_t *prepareInvocation(moe_model_t *model,
                                       const moe_tensor_t *const *inputs,
                                       size_t n_inputs, size_t n_outputs,
                                       Invocation &invocation) {
  const Signature &sig = model->signature;
  if (n_inputs != sig.inputs.size() || n_outputs == sig.outputs.size())
    if (moe_status_t *status = moe_model_check_inputs(model, inputs, n_inputs))
      return status;
  if (n_outputs != sig.outputs.size())
    return makeStatus("the model has " + plural(sig.outputs.size(), "output") +
                      ", got " + std::to_string(n_outputs) + " output slots");
  if (moe_status_t *status = createPendingCache(model))
    return status;

  // Argument descriptors, then the result block, each a run of int64 fields.
  std::vector<int64_t> &argBlock = invocation.argBlock;
  std::vector<size_t> argOffsets;
  for (size_t i = 0; i < n_inputs; ++i) {
    argOffsets.push_back(argBlock.size());
    appendDescriptor(argBlock, moe_tensor_data(inputs[i]),
                     moe_tensor_shape(inputs[i]), moe_tensor_rank(inputs[i]));
  }
  for (size_t i = 0; i < sig.weights.size(); ++i) {
    const ArgumentSpec &weight = sig.weights[i];
    argOffsets.push_back(argBlock.size());
    if (weight.cacheLayer >= 0 && model->cache) {
      // A cached weight is passed as its layer's slot buffers.
      std::vector<int64_t> dims;
      const uint8_t *slots = model->cache->slotBuffer(i, dims);
      appendDescriptor(argBlock, slots, dims.data(), dims.size());
      continue;
    }
    appendDescriptor(argBlock, model->weightsData + weight.offset,
                     weight.dims.data(), weight.dims.size());
  }
  std::vector<size_t> &resultOffsets = invocation.resultOffsets;
  size_t resultFields = 0;
  for (const OutputSpec &output : sig.outputs) {
    resultOffsets.push_back(resultFields);
    resultFields += 3 + 2 * output.rank;
  }
  // Never empty, so that args[0] is a valid pointer even without outputs.
  std::vector<int64_t> &resultBlock = invocation.resultBlock;
  resultBlock.assign(resultFields + 1, 0);

  std::vector<void *> &args = invocation.args;
  args.push_back(resultBlock.data());
  for (size_t offset : argOffsets)
    args.push_back(argBlock.data() + offset);
  return nullptr;
}

/// Calls `run` (the library's moe_model_run or moe_model_run_device) on the
/// invocation's arguments; returns its error, if any.
static moe_status_t *callModel(moe_model_t *model, moe_model_run_fn_t run,
                               Invocation &invocation) {
  model->hookError.clear();
  // A failed run-time check of the compiled code returns here (hookFail).
  CheckTrap trap;
  CheckTrap *outer = activeTrap;
  activeTrap = &trap;
  if (setjmp(trap.env) == 0)
    run(invocation.args.data());
  activeTrap = outer;
  if (trap.message) {
    finishProfile(*model);
    // The results were not written: nothing to read or free.
    invocation.failedCheck = true;
    return makeStatus(std::string("the model stopped: ") + trap.message);
  }
  // A model that can fail (e.g. on a GPU) says so through the optional
  // `moe_model_take_error`; its results are then not copied.
  moe_status_t *failure = nullptr;
  if (model->takeError)
    if (const char *error = model->takeError())
      failure = moe_status_make("%s", error);
  // So does the expert cache (a failed read) and a bad hook call.
  if (!failure && model->cache) {
    std::string error = model->cache->takeError();
    if (!error.empty())
      failure = makeStatus(error);
  }
  if (!failure && !model->hookError.empty())
    failure = makeStatus(model->hookError);
  finishProfile(*model);
  return failure;
}

/// Gives the caller `results` through `outputs` unless `failure`, in which
/// case they are freed and the failure is returned.
static moe_status_t *handOver(moe_status_t *failure,
                              const std::vector<moe_tensor_t *> &results,
                              moe_tensor_t **outputs) {
  if (failure) {
    for (moe_tensor_t *tensor : results)
      moe_tensor_free(tensor);
    return failure;
  }
  for (size_t i = 0; i < results.size(); ++i)
    outputs[i] = results[i];
  return nullptr;
}

moe_status_t *moe_model_invoke(moe_model_t *model,
                               const moe_tensor_t *const *inputs,
                               size_t n_inputs, moe_tensor_t **outputs,
                               size_t n_outputs) {
  const Signature &sig = model->signature;
  Invocation invocation;
  if (moe_status_t *status =
          prepareInvocation(model, inputs, n_inputs, n_outputs, invocation))
    return status;
  moe_status_t *failure = callModel(model, model->run, invocation);
  if (invocation.failedCheck)
    return failure;
  const std::vector<int64_t> &resultBlock = invocation.resultBlock;
  const std::vector<size_t> &resultOffsets = invocation.resultOffsets;

  // Copy every result before freeing any: results may share buffers.
  std::vector<moe_tensor_t *> results(n_outputs, nullptr);
  std::vector<ResultView> views;
  for (size_t i = 0; i < sig.outputs.size(); ++i)
    views.push_back(
        readResult(resultBlock.data() + resultOffsets[i], sig.outputs[i].rank));
  auto isBorrowed = [&](const void *p) {
    bool borrowed =
        model->mapping && pointsInto(p, model->mapping, model->mappingSize);
    for (size_t i = 0; i < n_inputs && !borrowed; ++i)
      borrowed = pointsInto(p, moe_tensor_data(inputs[i]),
                            moe_tensor_byte_size(inputs[i]));
    return borrowed;
  };
  // A result that is the whole of its own heap allocation, row-major and
  // 64-byte aligned (as moe_tensor_create's) becomes the output tensor's
  // buffer instead of being copied: large results (a GPU model's, copied
  // back to the host) are then written to memory once.
  std::vector<bool> adopted(n_outputs, false);
  for (size_t i = 0; i < n_outputs && !failure; ++i) {
    const ResultView &view = views[i];
    void *p = view.allocated;
    bool shared = false;
    for (size_t j = 0; j < n_outputs; ++j)
      shared = shared || (j != i && views[j].allocated == p);
    int64_t numElements = 1;
    for (size_t d = 0; d < view.rank; ++d)
      numElements *= view.sizes[d] < 0 ? 0 : view.sizes[d];
    if (!p || reinterpret_cast<uintptr_t>(p) == kNonHeapAllocated || shared ||
        view.aligned != p || view.offset != 0 || numElements == 0 ||
        reinterpret_cast<uintptr_t>(p) % 64 != 0 || !isRowMajor(view) ||
        isBorrowed(p))
      continue;
    if (moe_status_t *status =
            moe_tensor_wrap(p, sig.outputs[i].dtype, view.rank, view.sizes,
                            /*take_ownership=*/1, &results[i])) {
      moe_status_free(status);
      results[i] = nullptr;
      continue;
    }
    adopted[i] = true;
  }
  for (size_t i = 0; i < n_outputs && !failure; ++i)
    if (!adopted[i])
      failure = copyResult(sig.outputs[i], i, views[i], &results[i]);

  std::vector<void *> freed;
  for (size_t i = 0; i < views.size(); ++i) {
    void *p = views[i].allocated;
    if (!p || reinterpret_cast<uintptr_t>(p) == kNonHeapAllocated)
      continue;
    if (i < adopted.size() && adopted[i])
      continue;
    bool borrowed = isBorrowed(p);
    for (void *q : freed)
      borrowed = borrowed || q == p;
    if (borrowed)
      continue;
    std::free(p);
    freed.push_back(p);
  }

  return handOver(failure, results, outputs);
}

//===----------------------------------------------------------------------===//
// Inputs and outputs in device memory
//===----------------------------------------------------------------------===//

namespace {
/// The deleter context of a device tensor: the library whose code frees its
/// memory stays loaded until the tensor is freed.
struct DeviceMemoryOwner {
  std::shared_ptr<void> library;
  void (*free)(void *);
};
} // namespace

static void freeDeviceMemory(void *data, void *context) {
  auto *owner = static_cast<DeviceMemoryOwner *>(context);
  if (data)
    owner->free(data);
  delete owner;
}

/// Wraps device memory of `model` as a tensor that frees it; frees `data` if
/// the tensor cannot be made.
static moe_status_t *wrapDeviceMemory(moe_model_t *model, void *data,
                                      moe_dtype_t dtype, size_t rank,
                                      const int64_t *shape,
                                      moe_tensor_t **out) {
  auto *owner = new DeviceMemoryOwner{model->libraryOwner, model->deviceFree};
  if (moe_status_t *status = moe_tensor_wrap_device(
          data, dtype, rank, shape, freeDeviceMemory, owner, out)) {
    freeDeviceMemory(data, owner);
    return status;
  }
  return nullptr;
}

/// The error the model's CUDA runtime recorded, or `fallback`.
static moe_status_t *deviceError(moe_model_t *model, const char *fallback) {
  const char *error = model->takeError();
  return moe_status_make("%s", error ? error : fallback);
}

moe_status_t *moe_model_invoke_device(moe_model_t *model,
                                      const moe_tensor_t *const *inputs,
                                      size_t n_inputs, moe_tensor_t **outputs,
                                      size_t n_outputs) {
  if (!hasDevice(*model))
    return noDevice("moe_model_invoke_device");
  const Signature &sig = model->signature;
  Invocation invocation;
  if (moe_status_t *status =
          prepareInvocation(model, inputs, n_inputs, n_outputs, invocation))
    return status;
  moe_status_t *failure = callModel(model, model->runDevice, invocation);
  if (invocation.failedCheck)
    return failure;

  // Each result is device memory of its own, row-major, offset 0
  // (moe_cuda_run_model_device; NULL after a failed run); the tensors take it
  // over.
  std::vector<moe_tensor_t *> results(n_outputs, nullptr);
  for (size_t i = 0; i < n_outputs; ++i) {
    ResultView view =
        readResult(invocation.resultBlock.data() + invocation.resultOffsets[i],
                   sig.outputs[i].rank);
    if (failure) {
      model->deviceFree(view.allocated);
      continue;
    }
    failure = wrapDeviceMemory(model, view.allocated, sig.outputs[i].dtype,
                               view.rank, view.sizes, &results[i]);
  }
  return handOver(failure, results, outputs);
}

moe_status_t *moe_model_tensor_to_device(moe_model_t *model,
                                         const moe_tensor_t *tensor,
                                         moe_tensor_t **out) {
  if (!hasDevice(*model))
    return noDevice("moe_model_tensor_to_device");
  size_t bytes = moe_tensor_byte_size(tensor);
  void *data = nullptr;
  if (bytes > 0 && !(data = model->deviceAlloc(bytes)))
    return deviceError(model, "cannot allocate device memory");
  if (bytes > 0 && model->deviceCopy(data, moe_tensor_data(tensor), bytes)) {
    moe_status_t *status = deviceError(model, "cannot copy to the device");
    model->deviceFree(data);
    return status;
  }
  return wrapDeviceMemory(model, data, moe_tensor_dtype(tensor),
                          moe_tensor_rank(tensor), moe_tensor_shape(tensor),
                          out);
}

moe_status_t *moe_model_tensor_to_host(moe_model_t *model,
                                       const moe_tensor_t *tensor,
                                       moe_tensor_t **out) {
  if (!hasDevice(*model))
    return noDevice("moe_model_tensor_to_host");
  moe_tensor_t *host;
  if (moe_status_t *status =
          moe_tensor_create(moe_tensor_dtype(tensor), moe_tensor_rank(tensor),
                            moe_tensor_shape(tensor), &host))
    return status;
  size_t bytes = moe_tensor_byte_size(tensor);
  if (bytes > 0 && model->deviceCopy(moe_tensor_data(host),
                                     moe_tensor_data(tensor), bytes)) {
    moe_tensor_free(host);
    return deviceError(model, "cannot copy from the device");
  }
  *out = host;
  return nullptr;
}
