//===- Runner.cpp - The moe-run command line ------------------------------===//
//
// moe_run_main: parse flags, load the model, read .npy inputs, run (and time)
// the model, and write .npy outputs atomically.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/runner.h"
#include "Internal.h"
#include "moe/runtime/npy.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace moe::runtime;

/// Untimed runs before a benchmark.
static constexpr int kWarmUpRuns = 3;

namespace {
struct Options {
  std::string modelPath;
  std::vector<std::string> inputs;
  std::vector<std::string> outputs;
  std::string weightsPath;
  long benchmarkRuns = 0;
  /// --benchmark-inputs: the first input of each run, in turn.
  std::string benchmarkStack;
  /// --expert-budget: bytes, or a percentage (budgetPercent >= 0).
  int64_t budgetBytes = -1;
  double budgetPercent = -1;
  int cacheMode = -1;
  std::string profilePath;
  /// --device-io: inputs copied to device memory once, outputs left there.
  bool deviceIO = false;
  bool printSignature = false;
  bool help = false;
};

/// Owns tensors and frees them on scope exit.
struct TensorList {
  std::vector<moe_tensor_t *> tensors;
  TensorList() = default;
  TensorList(const TensorList &) = delete;
  TensorList &operator=(const TensorList &) = delete;
  ~TensorList() { clear(); }
  void clear() {
    for (moe_tensor_t *tensor : tensors)
      moe_tensor_free(tensor);
    tensors.clear();
  }
};

/// Temporary output files, removed unless committed.
struct PendingOutputs {
  std::vector<std::string> temps;
  ~PendingOutputs() {
    for (const std::string &temp : temps)
      unlink(temp.c_str());
  }
};
} // namespace

static void printUsage(const char *program, bool fromSelf) {
  std::printf(
      "usage: %s%s --input=@IN.npy... [--output=@OUT.npy...] "
      "[--weights=PATH] [--benchmark=N] [--print-signature]\n"
      "       [--expert-budget=SIZE] [--expert-cache=MODE] [--profile=PATH]\n"
      "       [--benchmark-inputs=@STACK.npy] [--device-io]\n"
      "\n"
      "Runs the compiled model on .npy inputs given in model order and writes\n"
      "its results to .npy files, one --output per model output.\n"
      "  --weights=PATH     weights file (default: %s)\n"
      "  --benchmark=N      time N runs after %d warm-up runs and print\n"
      "                     'median_ms: M min_ms: A max_ms: B mean_ms: C'\n"
      "                     (and the same with device_ for a CUDA model's\n"
      "                     device time)\n"
      "  --benchmark-inputs=@STACK.npy  the warm-up and timed runs take their\n"
      "                     first input from STACK's rows in turn (its shape:\n"
      "                     [N] + that input's), e.g. N different tokens, so\n"
      "                     that a decode benchmark does not find the experts\n"
      "                     of the previous run in cache\n"
      "  --print-signature  print the model signature\n"
      "  --device-io        (models compiled for CUDA) copy the inputs to\n"
      "                     device memory once and leave the outputs there:\n"
      "                     every run, timed ones included, works on device\n"
      "                     memory; --output copies the results back once\n"
      "  --expert-budget=SIZE  slot memory of the model's expert cache\n"
      "                     (docs/ExpertCache.md): bytes (K, M, G\n"
      "                     suffixes) or P%% of all cached expert bytes\n"
      "  --expert-cache=MODE   ondemand, lru or prefetch (default)\n"
      "  --profile=PATH     write the routing profile (JSON) of a model\n"
      "                     compiled to instrument its routing\n"
      "The expert cache's counters go to standard error after the runs.\n",
      program, fromSelf ? "" : " MODEL.so",
      fromSelf ? "this executable's path + .weights"
               : "MODEL.so with .so replaced by .weights",
      kWarmUpRuns);
}

static bool parseBudget(const std::string &value, int64_t &bytes,
                        double &percent) {
  return moe_parse_expert_budget(value.c_str(), &bytes, &percent) != 0;
}

/// Prints the expert cache's counters over `runs` runs to standard error.
static void printCacheStats(const moe_model_t *model, long runs) {
  moe_cache_stats_t s;
  moe_model_cache_stats(model, &s);
  double accuracy =
      s.prefetch_loads ? 100.0 * s.prefetch_used / s.prefetch_loads : 0.0;
  std::fprintf(
      stderr,
      "expert cache: runs=%ld acquires=%llu hits=%llu misses=%llu "
      "stall_ms=%.3f demand_loads=%llu prefetch_loads=%llu "
      "prefetch_used=%llu prefetch_accuracy=%.1f%% predictions=%llu "
      "bytes_read=%llu read_ms=%.3f evictions=%llu slot_bytes=%llu "
      "pinned=%llu direct_io=%s\n",
      runs, (unsigned long long)s.acquires, (unsigned long long)s.hits,
      (unsigned long long)s.misses, s.stall_ns / 1e6,
      (unsigned long long)s.demand_loads, (unsigned long long)s.prefetch_loads,
      (unsigned long long)s.prefetch_used, accuracy,
      (unsigned long long)s.predictions, (unsigned long long)s.bytes_read,
      s.read_ns / 1e6, (unsigned long long)s.evictions,
      (unsigned long long)s.slot_bytes, (unsigned long long)s.pinned,
      s.direct_io ? "yes" : "no");
}

/// Parses `--flag=@path` values.
static bool parseFileFlag(const std::string &arg, const char *flag,
                          std::vector<std::string> &list, std::string &error) {
  std::string value = arg.substr(std::strlen(flag));
  if (value.size() < 2 || value[0] != '@') {
    error = std::string("expected ") + flag + "@FILE.npy, got '" + arg + "'";
    return false;
  }
  list.push_back(value.substr(1));
  return true;
}

static bool startsWith(const std::string &s, const char *prefix) {
  return s.compare(0, std::strlen(prefix), prefix) == 0;
}

static std::string parseOptions(int argc, char **argv, bool fromSelf,
                                Options &options) {
  std::string error;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      options.help = true;
    } else if (startsWith(arg, "--input=")) {
      if (!parseFileFlag(arg, "--input=", options.inputs, error))
        return error;
    } else if (startsWith(arg, "--output=")) {
      if (!parseFileFlag(arg, "--output=", options.outputs, error))
        return error;
    } else if (startsWith(arg, "--weights=")) {
      options.weightsPath = arg.substr(std::strlen("--weights="));
      if (options.weightsPath.empty())
        return "--weights= needs a path";
    } else if (startsWith(arg, "--benchmark=")) {
      std::string value = arg.substr(std::strlen("--benchmark="));
      char *end = nullptr;
      errno = 0;
      long runs = value.empty() || value[0] < '0' || value[0] > '9'
                      ? 0
                      : std::strtol(value.c_str(), &end, 10);
      if (runs <= 0 || runs > 1000000000 || errno || *end)
        return "--benchmark needs a positive run count, got '" + value + "'";
      options.benchmarkRuns = runs;
    } else if (startsWith(arg, "--benchmark-inputs=")) {
      std::vector<std::string> stack;
      if (!parseFileFlag(arg, "--benchmark-inputs=", stack, error))
        return error;
      options.benchmarkStack = stack.front();
    } else if (arg == "--print-signature") {
      options.printSignature = true;
    } else if (arg == "--device-io") {
      options.deviceIO = true;
    } else if (startsWith(arg, "--expert-budget=")) {
      std::string value = arg.substr(std::strlen("--expert-budget="));
      if (!parseBudget(value, options.budgetBytes, options.budgetPercent))
        return "--expert-budget needs bytes (e.g. 512M, 2G) or a percentage "
               "(e.g. 25%), got '" +
               value + "'";
    } else if (startsWith(arg, "--expert-cache=")) {
      std::string value = arg.substr(std::strlen("--expert-cache="));
      if (value == "ondemand")
        options.cacheMode = MOE_CACHE_ONDEMAND;
      else if (value == "lru")
        options.cacheMode = MOE_CACHE_LRU;
      else if (value == "prefetch")
        options.cacheMode = MOE_CACHE_PREFETCH;
      else
        return "--expert-cache needs ondemand, lru or prefetch, got '" + value +
               "'";
    } else if (startsWith(arg, "--profile=")) {
      options.profilePath = arg.substr(std::strlen("--profile="));
      if (options.profilePath.empty())
        return "--profile= needs a path";
    } else if (arg.size() > 1 && arg[0] == '-') {
      return "unknown flag '" + arg + "'";
    } else if (fromSelf) {
      return "unexpected argument '" + arg +
             "' (the model is built into this executable)";
    } else if (!options.modelPath.empty()) {
      return "more than one model given ('" + options.modelPath + "' and '" +
             arg + "')";
    } else {
      options.modelPath = arg;
    }
  }
  if (!options.benchmarkStack.empty() && options.benchmarkRuns == 0)
    return "--benchmark-inputs needs --benchmark=N";
  if (!options.benchmarkStack.empty() && options.deviceIO)
    return "--benchmark-inputs does not work with --device-io";
  if (!fromSelf && !options.modelPath.empty())
    return "";
  if (!fromSelf && !options.help)
    return "no model library given";
  return "";
}

/// The default weights file of an executable with a built-in model.
static std::string selfWeightsPath(const char *argv0) {
  std::vector<char> buffer(4096);
  ssize_t n = readlink("/proc/self/exe", buffer.data(), buffer.size() - 1);
  if (n > 0)
    return std::string(buffer.data(), static_cast<size_t>(n)) + ".weights";
  return std::string(argv0) + ".weights";
}

static double milliseconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

/// Writes `tensor` to a temporary file beside `path`, recording it in
/// `pending`.
static moe_status_t *writeTemp(const std::string &path,
                               const moe_tensor_t *tensor,
                               PendingOutputs &pending) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  if (dir.empty())
    dir = "/";
  std::string temp = dir + "/.moe-run-XXXXXX";
  int fd = mkstemp(&temp[0]);
  if (fd < 0)
    return makeStatus("cannot create output " + quote(path) + ": " +
                      std::strerror(errno));
  pending.temps.push_back(temp);
  // mkstemp creates the file 0600; give it the permissions of a new file.
  mode_t mask = umask(0);
  umask(mask);
  fchmod(fd, 0666 & ~mask);
  close(fd);
  return moe_npy_write(temp.c_str(), tensor);
}

/// Runs everything after option parsing; returns an error or NULL.
static moe_status_t *run(const Options &options, const char *argv0,
                         const moe_runner_config_t &config) {
  bool fromSelf = config.model_from_self != 0;
  moe_model_t *model = nullptr;
  moe_status_t *status;
  const char *weights =
      options.weightsPath.empty() ? nullptr : options.weightsPath.c_str();
  std::string defaultWeights;
  if (!fromSelf) {
    status = moe_model_load(options.modelPath.c_str(), weights, &model);
  } else {
    if (!weights) {
      defaultWeights = config.default_weights_path ? config.default_weights_path
                                                   : selfWeightsPath(argv0);
      weights = defaultWeights.c_str();
    }
    status = config.signature_fn && config.run_fn
                 ? moe_model_load_from_symbols(config.signature_fn,
                                               config.run_fn, weights, &model)
                 : moe_model_load_from_self(weights, &model);
  }
  if (status)
    return status;
  struct ModelDeleter {
    moe_model_t *model;
    ~ModelDeleter() { moe_model_free(model); }
  } modelDeleter{model};

  if (options.printSignature) {
    const char *text = moe_model_signature_text(model);
    size_t length = std::strlen(text);
    std::fputs(text, stdout);
    if (length == 0 || text[length - 1] != '\n')
      std::fputc('\n', stdout);
    if (options.inputs.empty() && options.outputs.empty() &&
        options.benchmarkRuns == 0)
      return nullptr;
  }

  bool hasCache = moe_model_has_cache(model);
  if (options.budgetBytes >= 0 || options.budgetPercent >= 0 ||
      options.cacheMode >= 0) {
    if (!hasCache)
      return moe_status_make(
          "--expert-budget and --expert-cache need a model compiled with "
          "moe-compile --expert-budget");
    if ((status = moe_model_configure_cache(
             model, options.budgetBytes, options.budgetPercent,
             options.cacheMode >= 0
                 ? static_cast<moe_cache_mode_t>(options.cacheMode)
                 : MOE_CACHE_PREFETCH)))
      return status;
  }

  if (options.deviceIO && !moe_model_has_device(model))
    return moe_status_make("--device-io needs a model compiled with "
                           "moe-compile --target=cuda");

  size_t numInputs = moe_model_num_inputs(model);
  size_t numOutputs = moe_model_num_outputs(model);
  if (options.inputs.size() != numInputs)
    return moe_status_make("the model expects %zu input%s, got %zu --input",
                           numInputs, numInputs == 1 ? "" : "s",
                           options.inputs.size());
  if (!options.outputs.empty() && options.outputs.size() != numOutputs)
    return moe_status_make("the model has %zu output%s, got %zu --output",
                           numOutputs, numOutputs == 1 ? "" : "s",
                           options.outputs.size());

  TensorList inputs;
  for (const std::string &path : options.inputs) {
    moe_tensor_t *tensor;
    if ((status = moe_npy_read(path.c_str(), &tensor)))
      return status;
    inputs.tensors.push_back(tensor);
  }

  // --benchmark-inputs: views of the stack's rows, each checked against the
  // first input's type.
  TensorList stack, stackRows;
  if (!options.benchmarkStack.empty()) {
    if (numInputs == 0)
      return moe_status_make("--benchmark-inputs needs a model with inputs");
    moe_tensor_t *tensor;
    if ((status = moe_npy_read(options.benchmarkStack.c_str(), &tensor)))
      return status;
    stack.tensors.push_back(tensor);
    const moe_tensor_t *first = inputs.tensors.front();
    size_t rank = moe_tensor_rank(first);
    const int64_t *shape = moe_tensor_shape(first);
    const int64_t *stackShape = moe_tensor_shape(tensor);
    bool fits = moe_tensor_dtype(tensor) == moe_tensor_dtype(first) &&
                moe_tensor_rank(tensor) == rank + 1 && stackShape[0] > 0 &&
                std::equal(shape, shape + rank, stackShape + 1);
    if (!fits)
      return makeStatus(
          "--benchmark-inputs file " + quote(options.benchmarkStack) +
          " holds " + moe_dtype_name(moe_tensor_dtype(tensor)) + " " +
          formatDims(stackShape, moe_tensor_rank(tensor)) +
          "; the rows of the first input need " +
          (rank ? "Nx" + formatDims(shape, rank) : std::string("N")) + " " +
          moe_dtype_name(moe_tensor_dtype(first)) + " (N >= 1)");
    size_t rowBytes = moe_tensor_byte_size(first);
    auto *data = static_cast<uint8_t *>(moe_tensor_data(tensor));
    for (int64_t i = 0; i < stackShape[0]; ++i) {
      moe_tensor_t *row;
      if ((status =
               moe_tensor_wrap(data + i * rowBytes, moe_tensor_dtype(first),
                               rank, shape, 0, &row)))
        return status;
      stackRows.tensors.push_back(row);
    }
  }

  // With --device-io the runs read copies of the inputs in device memory
  // (made once, after the inputs are checked) and leave their outputs there.
  TensorList deviceInputs;
  if (options.deviceIO) {
    if ((status =
             moe_model_check_inputs(model, inputs.tensors.data(), numInputs)))
      return status;
    for (moe_tensor_t *tensor : inputs.tensors) {
      moe_tensor_t *copy;
      if ((status = moe_model_tensor_to_device(model, tensor, &copy)))
        return status;
      deviceInputs.tensors.push_back(copy);
    }
  }
  auto invoke = [&](moe_tensor_t **results) {
    return options.deviceIO
               ? moe_model_invoke_device(model, deviceInputs.tensors.data(),
                                         numInputs, results, numOutputs)
               : moe_model_invoke(model, inputs.tensors.data(), numInputs,
                                  results, numOutputs);
  };

  TensorList outputs;
  outputs.tensors.assign(numOutputs, nullptr);
  if ((status = invoke(outputs.tensors.data())))
    return status;

  long statsRuns = 1;
  if (options.benchmarkRuns > 0) {
    std::vector<double> times, deviceTimes;
    std::vector<moe_tensor_t *> runInputs(inputs.tensors);
    for (long i = 0; i < kWarmUpRuns + options.benchmarkRuns; ++i) {
      if (i == kWarmUpRuns) {
        moe_model_reset_cache_stats(model);
        statsRuns = options.benchmarkRuns;
      }
      TensorList results;
      results.tensors.assign(numOutputs, nullptr);
      if (!stackRows.tensors.empty())
        runInputs[0] =
            stackRows
                .tensors[static_cast<size_t>(i) % stackRows.tensors.size()];
      auto start = std::chrono::steady_clock::now();
      status = stackRows.tensors.empty()
                   ? invoke(results.tensors.data())
                   : moe_model_invoke(model, runInputs.data(), numInputs,
                                      results.tensors.data(), numOutputs);
      auto end = std::chrono::steady_clock::now();
      if (status)
        return status;
      if (i >= kWarmUpRuns) {
        times.push_back(milliseconds(end - start));
        double deviceMs = moe_model_last_device_ms(model);
        if (deviceMs >= 0)
          deviceTimes.push_back(deviceMs);
      }
    }
    auto summary = [](const char *prefix, std::vector<double> &values) {
      std::sort(values.begin(), values.end());
      size_t n = values.size();
      double median =
          n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
      double mean = 0;
      for (double v : values)
        mean += v / static_cast<double>(n);
      std::printf("%smedian_ms: %.4f %smin_ms: %.4f %smax_ms: %.4f %smean_ms: "
                  "%.4f\n",
                  prefix, median, prefix, values.front(), prefix, values.back(),
                  prefix, mean);
    };
    summary("", times);
    // Models that time their device work (--target=cuda) report it too.
    if (deviceTimes.size() == times.size())
      summary("device_", deviceTimes);
  } else if (options.outputs.empty()) {
    for (size_t i = 0; i < numOutputs; ++i) {
      const moe_tensor_t *tensor = outputs.tensors[i];
      std::printf("%s: %s %s\n", moe_model_output_name(model, i),
                  moe_dtype_name(moe_tensor_dtype(tensor)),
                  formatDims(moe_tensor_shape(tensor), moe_tensor_rank(tensor))
                      .c_str());
    }
  }

  if (hasCache)
    printCacheStats(model, statsRuns);
  if (!options.profilePath.empty() &&
      (status = moe_model_write_profile(model, options.profilePath.c_str())))
    return status;

  // Outputs in device memory are copied back once, to be written.
  TensorList hostOutputs;
  for (size_t i = 0; options.deviceIO && i < options.outputs.size(); ++i) {
    moe_tensor_t *copy;
    if ((status = moe_model_tensor_to_host(model, outputs.tensors[i], &copy)))
      return status;
    hostOutputs.tensors.push_back(copy);
  }
  const TensorList &written = options.deviceIO ? hostOutputs : outputs;

  // Write every output beside its destination, then move them all in place,
  // so that a failure leaves no partial output behind.
  PendingOutputs pending;
  for (size_t i = 0; i < options.outputs.size(); ++i)
    if ((status = writeTemp(options.outputs[i], written.tensors[i], pending)))
      return status;
  for (size_t i = 0; i < options.outputs.size(); ++i) {
    if (std::rename(pending.temps[i].c_str(), options.outputs[i].c_str()) != 0)
      return makeStatus("cannot write output " + quote(options.outputs[i]) +
                        ": " + std::strerror(errno));
    pending.temps[i].clear();
  }
  return nullptr;
}

int moe_run_main(int argc, char **argv, const moe_runner_config_t *config) {
  moe_runner_config_t defaults = {};
  if (!config)
    config = &defaults;
  std::string program;
  if (config->program_name) {
    program = config->program_name;
  } else {
    program = argc > 0 && argv[0] ? argv[0] : "moe-run";
    size_t slash = program.rfind('/');
    if (slash != std::string::npos)
      program = program.substr(slash + 1);
  }
  bool fromSelf = config->model_from_self != 0;

  Options options;
  std::string error = parseOptions(argc, argv, fromSelf, options);
  if (!error.empty()) {
    std::fprintf(stderr, "%s: error: %s\n", program.c_str(), error.c_str());
    return 1;
  }
  if (options.help) {
    printUsage(program.c_str(), fromSelf);
    return 0;
  }
  moe_status_t *status = run(options, argc > 0 ? argv[0] : "", *config);
  if (std::fflush(stdout) != 0 && !status)
    status = moe_status_make("cannot write to standard output");
  if (!status)
    return 0;
  std::fprintf(stderr, "%s: error: %s\n", program.c_str(),
               moe_status_message(status));
  moe_status_free(status);
  return 1;
}
