package main

import (
	"bytes"
	"debug/elf"
	"fmt"
)

// checkStatic requires an x86-64 ELF executable without a program
// interpreter: the images hold no dynamic loader and no libc, so a dynamically
// linked binary (say busybox from the `busybox` package instead of
// `busybox-static`) would fail only when the container starts.
func checkStatic(data []byte) error {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("not an ELF executable: %w", err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 || f.Class != elf.ELFCLASS64 {
		return fmt.Errorf("ELF for %v %v, want x86-64 (the image is linux/amd64)", f.Class, f.Machine)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("ELF type %v, want an executable", f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			interp := make([]byte, p.Filesz)
			if _, err := p.ReadAt(interp, 0); err != nil {
				return fmt.Errorf("dynamically linked: %w", err)
			}
			return fmt.Errorf("dynamically linked (interpreter %s): the image has no libc; build with CGO_ENABLED=0, or for busybox install busybox-static", bytes.TrimRight(interp, "\x00"))
		}
	}
	return nil
}
