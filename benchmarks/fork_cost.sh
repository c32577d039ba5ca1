#!/usr/bin/env bash
# The full-size fork() experiment in every x86_64 test guest: writes docs/fork-cost-results/<kernel>-<pages>.json
# (then summarised by hand into docs/fork-cost.md).  Under TCG absolute times mean nothing; the ratios do.
#   benchmarks/fork_cost.sh [FORKS] [PAGES...]
set -euo pipefail
cd "$(dirname "$0")/.."
forks=${1:-20}; shift || true
pages=("${@:-0}")
mkdir -p docs/fork-cost-results
for k in ${VMABPF_SHARED:-../shared}/vm/x86_64/bzImage-*; do
    ver=${k##*/bzImage-}
    for p in "${pages[@]}"; do
        out=docs/fork-cost-results/$ver-pages$p.json
        tests/vm/run --kernel "$ver" --timeout 3000 -- sh -c \
            "vmabpf bench fork --forks $forks --pages $p --trace all -j > $out.tmp && mv $out.tmp $out"
        .venv/bin/python -c "import json,sys; from vmatrace_bpf.render import bench_text; print(bench_text(json.load(open('$out'))))" \
            2>/dev/null || python3 -c "import json,sys; from vmatrace_bpf.render import bench_text; print(bench_text(json.load(open('$out'))))"
    done
done
