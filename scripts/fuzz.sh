#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ in build-fuzz/ (clang, ASan + UBSan, ccache) and runs each for a bounded
# time. CI runs it with the default 30 s per target; a long run is the same script with a larger --seconds.
#   scripts/fuzz.sh [--seconds N] [--no-torch] [--learner] [--list] [--build-only] [target ...]
# Targets are the fuzzers' names (score_json_fuzzer ...; `--list` prints them); default: every target built.
# Inputs that grow coverage are kept in build-fuzz/corpus/<target>/, on top of the committed seeds
# (fuzz/corpus/<target>/) and seeds made from the reference fixtures (../shared/fixtures, when present).
# A crash, a leak, a timeout or an out-of-memory stops that target; the script prints the reproducer's path
# (build-fuzz/artifacts/<target>/...) and exits 1 after running the others. $SPARGO_FUZZ_BUILD_DIR overrides
# build-fuzz.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${SPARGO_FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
FIXTURES="${SPARGO_FIXTURES_DIR:-$ROOT/../shared/fixtures}"
seconds=30
torch=ON
learner=OFF
list=0
build_only=0
targets=()
while (($#)); do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --torch) torch=ON; shift ;;
    --no-torch) torch=OFF; shift ;;
    --learner) learner=ON; shift ;;
    --list) list=1; shift ;;
    --build-only) build_only=1; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown flag $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

# Largest input per target (bytes): enough for the seeds, small enough to keep executions fast.
declare -A MAX_LEN=(
  [score_json_fuzzer]=8192 [agent_answer_fuzzer]=4096 [dsml_fuzzer]=4096 [completion_parser_fuzzer]=4096
  [rubric_fuzzer]=4096 [tokenizer_fuzzer]=65536 [text_proto_fuzzer]=8192 [reward_request_fuzzer]=8192
  [generate_request_fuzzer]=4096 [safetensors_fuzzer]=16384 [weight_assembler_fuzzer]=8192
  [sample_proto_fuzzer]=4096 [experiment_config_fuzzer]=8192)
# Largest single allocation (MB) before libFuzzer calls it a crash. The weight assembler gets at most max_len bytes
# of data, so a large allocation there is memory promised to a client ahead of its data (issue: a 30-byte chunk
# declaring a 32 GiB tensor).
declare -A MALLOC_LIMIT=([weight_assembler_fuzzer]=16)
ALL=(score_json_fuzzer agent_answer_fuzzer dsml_fuzzer completion_parser_fuzzer rubric_fuzzer tokenizer_fuzzer
     text_proto_fuzzer reward_request_fuzzer generate_request_fuzzer)
[[ $torch == ON ]] && ALL+=(safetensors_fuzzer weight_assembler_fuzzer sample_proto_fuzzer)
[[ $learner == ON ]] && ALL+=(experiment_config_fuzzer)
if ((list)); then printf '%s\n' "${ALL[@]}"; exit 0; fi
((${#targets[@]})) || targets=("${ALL[@]}")
for t in "${targets[@]}"; do
  [[ -n "${MAX_LEN[$t]:-}" ]] || { echo "fuzz.sh: unknown target $t (--list shows them)" >&2; exit 2; }
done

# clang and its libFuzzer runtime (the libraries spargo needs come from scripts/setup.sh, which CI has run).
FUZZER_RUNTIME="/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a"
if ! command -v clang++ >/dev/null || ! compgen -G "$FUZZER_RUNTIME" >/dev/null; then
  echo "fuzz.sh: installing clang and its libFuzzer runtime"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends clang libclang-rt-dev >/dev/null
fi

export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
export CCACHE_BASEDIR="$ROOT"
export CCACHE_SLOPPINESS="pch_defines,time_macros,include_file_mtime,include_file_ctime"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"

SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
start=$(date +%s)
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_C_FLAGS="$SAN" -DCMAKE_CXX_FLAGS="$SAN" \
  -DCMAKE_C_FLAGS_RELEASE="-O1 -gline-tables-only" -DCMAKE_CXX_FLAGS_RELEASE="-O1 -gline-tables-only" \
  -DSPARGO_BUILD_TESTS=OFF -DSPARGO_BUILD_FUZZERS=ON \
  -DSPARGO_FUZZ_TORCH_TARGETS="$torch" -DSPARGO_FUZZ_LEARNER_TARGETS="$learner" >/dev/null
cmake --build "$BUILD" --target "${targets[@]}" -- -j"$(nproc)"
echo "fuzz.sh: built ${#targets[@]} targets in $(($(date +%s) - start)) s"
((build_only)) && exit 0

# Seeds from the reference fixtures, made fresh each run (never committed).
seeds="$BUILD/fixture-seeds"
rm -rf "$seeds"
if [[ -d "$FIXTURES" ]]; then
  python3 "$ROOT/fuzz/fixture_seeds.py" "$FIXTURES" "$seeds" "$ROOT"
else
  echo "fuzz.sh: no fixtures at $FIXTURES; committed seeds only"
fi

failed=()
for t in "${targets[@]}"; do
  corpus="$BUILD/corpus/$t"
  artifacts="$BUILD/artifacts/$t"
  rm -rf "$artifacts"
  mkdir -p "$corpus" "$artifacts"
  dirs=("$corpus")
  [[ -d "$ROOT/fuzz/corpus/$t" ]] && dirs+=("$ROOT/fuzz/corpus/$t")
  [[ -d "$seeds/$t" ]] && dirs+=("$seeds/$t")
  dict=()
  [[ -f "$ROOT/fuzz/dict/$t.dict" ]] && dict=(-dict="$ROOT/fuzz/dict/$t.dict")
  log="$BUILD/logs/$t.log"
  mkdir -p "$(dirname "$log")"
  echo "fuzz.sh: $t for ${seconds} s"
  rc=0
  ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1:${ASAN_OPTIONS:-}" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}" \
    "$BUILD/fuzz/$t" -max_total_time="$seconds" -max_len="${MAX_LEN[$t]}" -rss_limit_mb=2560 \
      -malloc_limit_mb="${MALLOC_LIMIT[$t]:-1024}" -timeout=20 -print_final_stats=1 \
      -artifact_prefix="$artifacts/" "${dict[@]}" "${dirs[@]}" >"$log" 2>&1 || rc=$?
  execs=$(grep -h 'stat::number_of_executed_units' "$log" | awk '{s+=$2} END {print s+0}')
  echo "fuzz.sh: $t: $execs executions, exit $rc, corpus $(ls "$corpus" | wc -l) inputs"
  if ((rc != 0)); then
    failed+=("$t")
    tail -n 60 "$log"
    for a in "$artifacts"/*; do [[ -e "$a" ]] && echo "fuzz.sh: reproducer: $a"; done
    echo "fuzz.sh: reproduce with: $BUILD/fuzz/$t <reproducer>   (log: $log)"
  fi
done
if ((${#failed[@]})); then
  echo "fuzz.sh: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz.sh: all ${#targets[@]} targets ran ${seconds} s without a crash"
