#!/usr/bin/env bash
# Fuzz every target with coverage guidance (cargo-fuzz: libFuzzer, sanitizer coverage,
# AddressSanitizer) for SECONDS each (default 300), one target at a time in one process,
# then measure source coverage over each corpus (`cargo fuzz coverage` + `llvm-cov`) and
# print one table. Needs Rust with the nightly toolchain; installs cargo-fuzz and
# llvm-tools-preview when missing.
#
#   bash fuzz/run.sh [SECONDS]
#
# Corpora grow in fuzz/corpus/<target> (git-ignored; seeds come from fuzz/seeds/<target>),
# crashes land in fuzz/artifacts/<target>, logs in fuzz/logs; fuzz/regressions holds the
# minimised inputs of bugs found (and fixed), replayed as seeds.
set -euo pipefail

secs=${1:-300}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
targets=(legacy_keys native_key_parser create_sizes)
logs=fuzz/logs
mkdir -p "$logs"

cargo +nightly --version >/dev/null
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
host=$(rustc +nightly -vV | sed -n 's/^host: //p')
tools="$(rustc +nightly --print sysroot)/lib/rustlib/$host/bin"
if [ ! -x "$tools/llvm-cov" ]; then
    rustup component add llvm-tools-preview --toolchain nightly
fi
llvm_cov="$tools/llvm-cov"

# "lines% / regions%" of one file in an llvm-cov report
file_cover() { # report file
    awk -v f="/$2" '{ p = "/" $1 } substr(p, length(p) - length(f) + 1) == f {
        printf "%s / %s", $10, $4; found = 1 } END { if (!found) printf "-" }' "$1"
}
# "lines% / regions%" of one function (by its mangled name's end) in a -show-functions report
fn_cover() { # report name
    awk -v n="$2" 'substr($1, length($1) - length(n) + 1) == n { printf "%s / %s", $7, $4; found = 1 }
        END { if (!found) printf "-" }' "$1"
}

rows=()
objects=()
profiles=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    echo "== fuzzing $t for ${secs}s" >&2
    status=ok
    dirs=("fuzz/corpus/$t" "fuzz/seeds/$t")
    if [ -d "fuzz/regressions/$t" ]; then dirs+=("fuzz/regressions/$t"); fi
    if ! cargo +nightly fuzz run "$t" "${dirs[@]}" -- \
        -max_total_time="$secs" -print_final_stats=1 >"$logs/$t.fuzz.log" 2>&1; then
        status="CRASH: $(grep -o "fuzz/artifacts/$t/[^ ]*" "$logs/$t.fuzz.log" | head -1)"
    fi
    final() { sed -n "s/^stat::$1: *//p" "$logs/$t.fuzz.log" | tail -1; }
    execs=$(final number_of_executed_units)
    rate=$(final average_exec_per_sec)
    last=$(grep -E '^#[0-9]+.*cov: ' "$logs/$t.fuzz.log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
    files=$(find "fuzz/corpus/$t" -type f | wc -l)

    echo "== coverage of $t" >&2
    cargo +nightly fuzz coverage "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" >"$logs/$t.coverage.log" 2>&1
    bin="target/$host/coverage/$host/release/$t"
    profile="fuzz/coverage/$t/coverage.profdata"
    objects+=("$bin")
    profiles+=("$profile")
    "$llvm_cov" report "$bin" -instr-profile="$profile" >"$logs/$t.report.txt"
    "$llvm_cov" report -show-functions "$bin" -instr-profile="$profile" src/shared_memory.rs \
        >"$logs/$t.functions.txt"
    r="$logs/$t.report.txt"
    f="$logs/$t.functions.txt"
    rows+=("$t|$execs|$rate|$corp / $files|$cov|$ft|$(file_cover "$r" src/key.rs)|$(file_cover "$r" src/error.rs)|$(file_cover "$r" src/shared_memory.rs)|$(fn_cover "$f" 12checked_size)|$(fn_cover "$f" 12SharedMemory12create_inner)|$status")
done

# all targets together: the union of covered lines, from each target's lcov export (a merged
# profile over several binaries is unreliable: every target defines functions of the same
# name, e.g. rust_fuzzer_test_input, and llvm-cov drops those as "mismatched data")
for o in "${!objects[@]}"; do
    "$llvm_cov" export -format=lcov "${objects[$o]}" -instr-profile="${profiles[$o]}" \
        src/key.rs src/error.rs src/shared_memory.rs
done >"$logs/all.lcov"
union_lines() { # file
    awk -F '[:,]' -v f="/$1" '
        /^SF:/ { p = substr($0, 4); on = substr(p, length(p) - length(f) + 1) == f }
        on && /^DA:/ { if (!($2 in seen)) { seen[$2] = 1; n++ } if ($3 > 0 && !($2 in hit)) { hit[$2] = 1; h++ } }
        END { if (n) printf "%.2f%% / -", 100 * h / n; else printf "-" }' \
        "$logs/all.lcov"
}
rows+=("all targets (union)||||||$(union_lines src/key.rs)|$(union_lines src/error.rs)|$(union_lines src/shared_memory.rs)|||")

echo
echo "fuzzing ${secs}s per target; coverage as lines% / regions% (llvm-cov over each corpus)"
{
    echo "target|executions|exec/s|corpus units/files|cov|ft|key.rs|error.rs|shared_memory.rs|checked_size|create_inner|result"
    printf '%s\n' "${rows[@]}"
} | awk -F '|' '{ for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) }
    if (NF > n) n = NF }
    END { for (r = 1; r <= NR; r++) { line = ""
        for (i = 1; i <= n; i++) line = line sprintf("%-" w[i] "s", cell[r, i]) (i < n ? " | " : "")
        print line } }'
