"""vmatrace-bpf (vmabpf): eBPF tracing of named anonymous memory."""

__version__ = "0.1.0"
