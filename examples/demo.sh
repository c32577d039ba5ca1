#!/usr/bin/env bash
# The main job: `vmabpf watch` on a workload with named VMAs, against a real kernel.
# On this host when its kernel can (vmabpf doctor exits 0), else inside the bundled
# 6.12 test guest (QEMU, see tests/vm/run). Installs what it needs first (.ci/setup).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup >/dev/null
if .venv/bin/python -m vmatrace_bpf doctor >/dev/null 2>&1; then
    echo "demo: this host's kernel can trace; running here"
    exec .venv/bin/python examples/watch_demo.py "$@"
fi
echo "demo: this host's kernel cannot trace (see: .venv/bin/vmabpf doctor); running in the ${VMABPF_DEMO_KERNEL:-6.12} test guest"
exec tests/vm/run --kernel "${VMABPF_DEMO_KERNEL:-6.12}" -- sh -c 'vmabpf doctor | tail -12 && python3 examples/watch_demo.py "$@"' demo "$@"
