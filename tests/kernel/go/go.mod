module vmabpf.test/gonames

go 1.25
