#!/usr/bin/env bash
# The full-size fork() experiment in the test guests: RUNS runs of `vmabpf bench fork --trace all` per kernel and
# pages setting, all in one boot per kernel, each written to docs/fork-cost-results/<kernel>-pages<P>[-run<I>].json;
# benchmarks/fork_summary.py then gives the median and spread of each ratio.  Under TCG absolute times mean
# nothing; the ratios do.
#   benchmarks/fork_cost.sh [FORKS] [PAGES...]
#   env: RUNS (default 1), ARCH (x86_64 or arm64; default x86_64), KERNELS ("6.1.192 6.12.117"; default every
#        kernel of ARCH in ../shared/vm), BENCH_ARGS (more `bench fork` options, e.g. --same-name), TAG (a
#        suffix of the file names, e.g. -same)
set -euo pipefail
cd "$(dirname "$0")/.."
forks=${1:-20}; shift || true
pages=("${@:-0}")
runs=${RUNS:-1}
arch=${ARCH:-x86_64}
img=bzImage; [ "$arch" = arm64 ] && img=Image
shared=${VMABPF_SHARED:-../shared}
kernels=${KERNELS:-$(for k in "$shared"/vm/"$arch"/$img-*; do echo "${k##*/$img-}"; done)}
mkdir -p docs/fork-cost-results
prefix=""; [ "$arch" = arm64 ] && prefix="arm64-"
for ver in $kernels; do
    script=""
    for p in "${pages[@]}"; do
        for i in $(seq 1 "$runs"); do
            suffix=""; [ "$runs" -gt 1 ] && suffix="-run$i"
            out=docs/fork-cost-results/$prefix$ver-pages$p${TAG:-}$suffix.json
            script+="vmabpf bench fork --forks $forks --pages $p --trace all ${BENCH_ARGS:-} -j > $out.tmp && mv $out.tmp $out; "
        done
    done
    # --pages 10: two processes of 65,030 VMAs x 10 pages (2.5 GiB each) must fit
    mem=3G; for p in "${pages[@]}"; do [ "$p" = 10 ] && mem=8G; done
    tests/vm/run --arch "$arch" --kernel "$ver" --memory "$mem" --timeout 5400 -- sh -c "$script"
done
python3 benchmarks/fork_summary.py docs/fork-cost-results/"$prefix"*.json
