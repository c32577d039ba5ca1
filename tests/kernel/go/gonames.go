// gonames: a Go program whose runtime names its own mappings, for tests/kernel/test_go_names.py.
//
// Go 1.25's runtime names every anonymous mapping it makes with prctl(PR_SET_VMA,
// PR_SET_VMA_ANON_NAME) (runtime/set_vma_name_linux.go: " Go: " + what, e.g. " Go: heap"; on by
// default, GODEBUG=decoratemappings=0 turns it off).  Built by tests/vm/gobuild.py (CGO_ENABLED=0:
// no C library, so every name in the process is the Go runtime's).
//
//	gonames             allocate some heap, print {"pid": N, "go": VERSION}, wait for a line on stdin, exit
//	gonames gated       print {"pid": N, "go": VERSION}, wait for a line (a tracer attaches), then allocate a
//	                    256 MiB object (more than the runtime has mapped at start-up: the heap grows,
//	                    a new mapping is named " Go: heap"), print {"pid": N, "big": ADDRESS, "big_len": N},
//	                    wait for a line, exit
//	gonames exec-gated  print {"pid": N, "go": VERSION}, wait for a line, then execve this program again
//	                    as "gonames gated" (same PID, a fresh address space): a tracer attached at the
//	                    first gate sees the new runtime name its mappings from its very first one, before
//	                    main, and then (second gate) the heap grow
//
// The runtime names its first mappings before main runs, so "gated" cannot show those to a tracer
// that attaches at its gate; "exec-gated" can.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"unsafe"
)

var keep [][]byte

func say(v map[string]any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	os.Stdout.Write(append(b, '\n'))
}

// gate reads one line from stdin a byte at a time (nothing read ahead is lost across the exec)
func gate() {
	var b [1]byte
	for {
		if n, err := os.Stdin.Read(b[:]); err != nil {
			os.Exit(0) // stdin closed: the test is gone
		} else if n == 1 && b[0] == '\n' {
			return
		}
	}
}

func main() {
	pid := os.Getpid()
	mode := ""
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	switch mode {
	case "":
		// 64 objects of 256 KiB (large objects: spans of their own) and many small ones: 16+ MiB of heap
		for i := 0; i < 64; i++ {
			b := make([]byte, 256<<10)
			b[0], b[len(b)-1] = 1, 1
			keep = append(keep, b)
		}
		for i := 0; i < 10000; i++ {
			keep = append(keep, make([]byte, 100))
		}
		say(map[string]any{"pid": pid, "go": runtime.Version()})
		gate()
	case "gated":
		say(map[string]any{"pid": pid, "go": runtime.Version()})
		gate()
		big := make([]byte, 256<<20)
		big[0], big[len(big)-1] = 1, 1
		keep = append(keep, big)
		say(map[string]any{"pid": pid, "big": uintptr(unsafe.Pointer(&big[0])), "big_len": len(big)})
		gate()
	case "exec-gated":
		say(map[string]any{"pid": pid, "go": runtime.Version()})
		gate()
		exe, err := os.Executable()
		if err == nil {
			err = syscall.Exec(exe, []string{os.Args[0], "gated"}, os.Environ())
		}
		fmt.Fprintf(os.Stderr, "gonames: cannot exec myself: %v\n", err)
		os.Exit(1)
	default:
		fmt.Fprintf(os.Stderr, "usage: gonames [gated|exec-gated]\n")
		os.Exit(2)
	}
}
