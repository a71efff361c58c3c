package uki

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/osguard/osguard/pe"
)

// Options are the inputs of a UKI. Stub and Linux are required; empty
// text fields and a nil Initrds leave their sections out.
type Options struct {
	Stub      []byte   // systemd-stub (linuxx64.efi.stub), unsigned
	Linux     []byte   // the kernel as an EFI PE image (bzImage with EFI stub)
	Initrds   [][]byte // concatenated into .initrd
	Cmdline   string   // .cmdline, as is
	OSRelease string   // .osrel, the os-release file's content
	Uname     string   // .uname, the kernel release
	// SBAT is an SBAT CSV whose first line is the "sbat,1,..." header; nil
	// means ukify's default UKI entry.
	SBAT []byte
	// Spare is capacity to leave after the UKI, so that a signature can be
	// appended without copying it (secureboot.CertTableRoom for
	// secureboot.SignPEInPlace).
	Spare int
}

// sbatHeader is the first line of every merged SBAT section (ukify's merge_sbat).
const sbatHeader = "sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md"

// DefaultSBAT is ukify's STUB_SBAT, used when Options.SBAT is nil.
const DefaultSBAT = sbatHeader + "\n" +
	"uki,1,UKI,uki,1,https://uapi-group.org/specifications/specs/unified_kernel_image/\n"

// Build assembles an unsigned UKI.
func Build(o Options) ([]byte, error) {
	stub, err := pe.Parse(o.Stub)
	if err != nil {
		return nil, fmt.Errorf("uki: stub: %w", err)
	}
	kernel, err := pe.Parse(o.Linux)
	if err != nil {
		return nil, fmt.Errorf("uki: linux is not an EFI PE image (compressed vmlinux is not supported): %w", err)
	}
	if _, ok := stub.Section(".linux"); ok {
		return nil, errors.New("uki: the stub already holds a .linux section")
	}
	im := stub.Clone()

	type sec struct {
		name  string
		data  []byte
		chars uint32
	}
	const data = pe.IMAGE_SCN_MEM_READ | pe.IMAGE_SCN_CNT_INITIALIZED_DATA
	var secs []sec
	if o.OSRelease != "" {
		secs = append(secs, sec{".osrel", []byte(o.OSRelease), data})
	}
	if o.Cmdline != "" {
		secs = append(secs, sec{".cmdline", []byte(o.Cmdline), data})
	}
	if o.Uname != "" {
		secs = append(secs, sec{".uname", []byte(o.Uname), data})
	}
	// .linux is code: old kernels using the EFI handover protocol run in place.
	secs = append(secs, sec{".linux", o.Linux, pe.IMAGE_SCN_MEM_READ | pe.IMAGE_SCN_CNT_CODE})
	if ir := JoinInitrds(o.Initrds); len(ir) > 0 {
		secs = append(secs, sec{".initrd", ir, data})
	}
	// One buffer for the whole UKI: the sections, .sbat (the lines of the
	// stub, the kernel and ours), alignment, and o.Spare.
	room := len(DefaultSBAT) + len(o.SBAT) + 4096 + int(im.FileAlign) + o.Spare
	for _, s := range secs {
		room += len(s.data) + int(im.FileAlign)
	}
	im.Grow(room)
	for _, s := range secs {
		if err := im.Append(pe.NewSection{Name: s.name, Data: s.data, Characteristics: s.chars}); err != nil {
			return nil, fmt.Errorf("uki: %w", err)
		}
	}

	user := o.SBAT
	if user == nil {
		user = []byte(DefaultSBAT)
	}
	sbat, err := MergeSBAT(user, stub, kernel)
	if err != nil {
		return nil, err
	}
	if _, ok := im.Section(".sbat"); ok {
		err = im.Replace(".sbat", sbat)
	} else {
		err = im.Append(pe.NewSection{Name: ".sbat", Data: sbat, Characteristics: data})
	}
	if err != nil {
		return nil, fmt.Errorf("uki: .sbat: %w", err)
	}

	// The UKI and the kernel it runs must agree on NX_COMPAT, or firmware
	// that enforces it will refuse the kernel later.
	if kernel.DllChars&pe.IMAGE_DLLCHARACTERISTICS_NX_COMPAT == 0 {
		im.ClearDllCharacteristics(pe.IMAGE_DLLCHARACTERISTICS_NX_COMPAT)
	}
	return im.Bytes(), nil
}

// JoinInitrds concatenates initrds the way ukify does: one is used as is,
// several are each padded with NULs to a multiple of 4 bytes (the kernel
// reads concatenated cpio archives at 4-byte boundaries).
func JoinInitrds(initrds [][]byte) []byte {
	switch len(initrds) {
	case 0:
		return nil
	case 1:
		return initrds[0]
	}
	var b bytes.Buffer
	for _, ir := range initrds {
		b.Write(ir)
		b.Write(make([]byte, (4-len(ir)%4)%4))
	}
	return b.Bytes()
}

// MergeSBAT builds the .sbat content as ukify's merge_sbat: the SBAT header
// line once, then the entries of each PE image's .sbat section, then the
// caller's entries, then a newline and a NUL.
func MergeSBAT(user []byte, images ...*pe.Image) ([]byte, error) {
	var lines []string
	for _, im := range images {
		s, ok := im.Section(".sbat")
		if !ok {
			continue
		}
		text := strings.TrimRight(string(im.SectionData(s)), "\x00")
		l := splitLines(text)
		if len(l) == 0 || !strings.HasPrefix(l[0], "sbat,") {
			continue // ukify skips an invalid section too
		}
		lines = append(lines, l[1:]...)
	}
	l := splitLines(string(user))
	if len(l) == 0 || !strings.HasPrefix(l[0], "sbat,") {
		return nil, errors.New(`uki: SBAT data must start with the "sbat,1,..." header line`)
	}
	lines = append(lines, l[1:]...)
	return []byte(sbatHeader + "\n" + strings.Join(lines, "\n") + "\n\x00"), nil
}

// splitLines splits like Python's str.splitlines for \n and \r\n.
func splitLines(s string) []string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
