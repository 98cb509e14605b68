# Sourced by the benchmark launchers (bench/run.sh, bench/qmoe_run.sh): fixes
# the thread counts from the launcher's --threads N (default 2), which must
# be set before NumPy/OpenBLAS/torch load; the compiled layer gets
# OMP_NUM_THREADS too. OPENBLAS_CORETYPE is left as the environment has it.
#   set_bench_threads "$@"
set_bench_threads() {
  local threads=2 args=("$@") i
  for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
      --threads) threads="${args[i+1]}" ;;
      --threads=*) threads="${args[i]#--threads=}" ;;
    esac
  done
  export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"
}
