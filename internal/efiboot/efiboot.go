// Package efiboot reads and writes the UEFI boot manager's variables
// (UEFI 2.10, section 3.1): Boot#### load options, BootOrder, BootNext and
// BootCurrent, through the secureboot.Vars interface (efivarfs on a node).
//
// osguard's A/B updates use them for the trial boot: the new slot gets a
// Boot#### entry and BootNext points at it, which the firmware deletes before
// it boots that entry once; BootOrder, which still starts with the old slot,
// decides every later boot until the node commits the new slot by putting
// its entry first.
package efiboot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"unicode/utf16"

	"github.com/osguard/osguard/secureboot"
)

// Attributes of the boot manager's variables: non-volatile, boot service
// and runtime access.
const VarAttrs = 0x7

// LoadOptionActive is LOAD_OPTION_ACTIVE.
const LoadOptionActive = 0x1

// Vars is a variable store that can also delete.
type Vars interface {
	secureboot.Vars
	Delete(v secureboot.Variable) error
}

// HardDrive is a GPT partition as a device path node (MEDIA_HARDDRIVE_DP).
type HardDrive struct {
	Number   uint32
	StartLBA uint64
	SizeLBA  uint64
	PartUUID secureboot.GUID // the partition's unique GUID, EFI byte order
}

// LoadOption is an EFI_LOAD_OPTION whose file path is HD(...)/File(...),
// the form a boot manager entry for a file on the ESP takes.
type LoadOption struct {
	Attributes  uint32
	Description string
	Disk        HardDrive
	Path        string // on the ESP, with backslashes, e.g. \EFI\osguard\slot-B.efi
}

// Marshal encodes the option.
func (o LoadOption) Marshal() []byte {
	var dp bytes.Buffer
	// HD(): type 4, subtype 1, length 42.
	hd := make([]byte, 42)
	hd[0], hd[1] = 4, 1
	binary.LittleEndian.PutUint16(hd[2:], 42)
	binary.LittleEndian.PutUint32(hd[4:], o.Disk.Number)
	binary.LittleEndian.PutUint64(hd[8:], o.Disk.StartLBA)
	binary.LittleEndian.PutUint64(hd[16:], o.Disk.SizeLBA)
	copy(hd[24:40], o.Disk.PartUUID[:])
	hd[40], hd[41] = 2, 2 // GPT, GUID signature
	dp.Write(hd)
	// File(): type 4, subtype 4, a NUL-terminated UCS-2 path.
	path := ucs2(o.Path)
	fp := make([]byte, 4, 4+len(path))
	fp[0], fp[1] = 4, 4
	binary.LittleEndian.PutUint16(fp[2:], uint16(4+len(path)))
	dp.Write(append(fp, path...))
	dp.Write([]byte{0x7f, 0xff, 4, 0}) // end of the device path
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, o.Attributes)
	binary.Write(&b, binary.LittleEndian, uint16(dp.Len()))
	b.Write(ucs2(o.Description))
	b.Write(dp.Bytes())
	return b.Bytes()
}

func ucs2(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u)+2)
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

// ParseLoadOption decodes an EFI_LOAD_OPTION. Options whose device path is
// not HD()/File() come back with Description and Attributes only.
func ParseLoadOption(b []byte) (*LoadOption, error) {
	if len(b) < 8 {
		return nil, errors.New("efiboot: load option too short")
	}
	o := &LoadOption{Attributes: binary.LittleEndian.Uint32(b)}
	dpLen := int(binary.LittleEndian.Uint16(b[4:]))
	rest := b[6:]
	var desc []uint16
	for {
		if len(rest) < 2 {
			return nil, errors.New("efiboot: load option description not terminated")
		}
		c := binary.LittleEndian.Uint16(rest)
		rest = rest[2:]
		if c == 0 {
			break
		}
		desc = append(desc, c)
	}
	o.Description = string(utf16.Decode(desc))
	if dpLen > len(rest) {
		return nil, errors.New("efiboot: device path longer than the load option")
	}
	dp := rest[:dpLen]
	for len(dp) >= 4 {
		typ, sub, n := dp[0], dp[1], int(binary.LittleEndian.Uint16(dp[2:]))
		if n < 4 || n > len(dp) {
			return nil, errors.New("efiboot: bad device path node length")
		}
		node := dp[:n]
		switch {
		case typ == 4 && sub == 1 && n == 42:
			o.Disk.Number = binary.LittleEndian.Uint32(node[4:])
			o.Disk.StartLBA = binary.LittleEndian.Uint64(node[8:])
			o.Disk.SizeLBA = binary.LittleEndian.Uint64(node[16:])
			copy(o.Disk.PartUUID[:], node[24:40])
		case typ == 4 && sub == 4:
			u := make([]uint16, (n-4)/2)
			for i := range u {
				u[i] = binary.LittleEndian.Uint16(node[4+2*i:])
			}
			if k := indexOf(u, 0); k >= 0 {
				u = u[:k]
			}
			o.Path = string(utf16.Decode(u))
		case typ == 0x7f && sub == 0xff:
			return o, nil
		}
		dp = dp[n:]
	}
	return o, nil
}

func indexOf(u []uint16, v uint16) int {
	for i, c := range u {
		if c == v {
			return i
		}
	}
	return -1
}

func bootVar(n uint16) secureboot.Variable {
	return secureboot.Variable{Name: fmt.Sprintf("Boot%04X", n), GUID: secureboot.EFIGlobalVariable}
}

var (
	varBootOrder   = secureboot.Variable{Name: "BootOrder", GUID: secureboot.EFIGlobalVariable}
	varBootNext    = secureboot.Variable{Name: "BootNext", GUID: secureboot.EFIGlobalVariable}
	varBootCurrent = secureboot.Variable{Name: "BootCurrent", GUID: secureboot.EFIGlobalVariable}
)

// maxEntry bounds the Boot#### numbers searched for a free or matching one.
const maxEntry = 0x200

// Entry reads Boot####.
func Entry(v Vars, n uint16) (*LoadOption, error) {
	_, b, err := v.Get(bootVar(n))
	if err != nil {
		return nil, err
	}
	return ParseLoadOption(b)
}

// SetEntry writes o as an entry: the existing one with the same
// description, or the first free number. It returns the number.
func SetEntry(v Vars, o LoadOption) (uint16, error) {
	free := -1
	for n := 0; n < maxEntry; n++ {
		e, err := Entry(v, uint16(n))
		if errors.Is(err, fs.ErrNotExist) {
			if free < 0 {
				free = n
			}
			continue
		}
		if err == nil && e.Description == o.Description {
			free = n
			break
		}
	}
	if free < 0 {
		return 0, fmt.Errorf("efiboot: no free Boot#### below %04X", maxEntry)
	}
	if err := v.Set(bootVar(uint16(free)), VarAttrs, o.Marshal()); err != nil {
		return 0, err
	}
	return uint16(free), nil
}

func readU16s(v Vars, x secureboot.Variable) ([]uint16, error) {
	_, b, err := v.Get(x)
	if err != nil {
		return nil, err
	}
	if len(b)%2 != 0 {
		return nil, fmt.Errorf("efiboot: %s has %d bytes, not a list of u16", x.Name, len(b))
	}
	out := make([]uint16, len(b)/2)
	for i := range out {
		out[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return out, nil
}

func writeU16s(v Vars, x secureboot.Variable, vals []uint16) error {
	b := make([]byte, 2*len(vals))
	for i, n := range vals {
		binary.LittleEndian.PutUint16(b[2*i:], n)
	}
	return v.Set(x, VarAttrs, b)
}

// BootOrder reads BootOrder (empty when unset).
func BootOrder(v Vars) ([]uint16, error) {
	o, err := readU16s(v, varBootOrder)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return o, err
}

// SetFirst puts entry n first in BootOrder, keeping the others in order.
func SetFirst(v Vars, n uint16) error {
	order, err := BootOrder(v)
	if err != nil {
		return err
	}
	out := []uint16{n}
	for _, x := range order {
		if x != n {
			out = append(out, x)
		}
	}
	return writeU16s(v, varBootOrder, out)
}

// SetBootNext asks the firmware to boot entry n once, at the next boot.
func SetBootNext(v Vars, n uint16) error { return writeU16s(v, varBootNext, []uint16{n}) }

// ClearBootNext deletes BootNext (no error when it is not set).
func ClearBootNext(v Vars) error {
	if err := v.Delete(varBootNext); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// BootNext reads BootNext; ok is false when it is not set.
func BootNext(v Vars) (n uint16, ok bool, err error) { return readOne(v, varBootNext) }

// BootCurrent reads the entry the firmware booted.
func BootCurrent(v Vars) (n uint16, ok bool, err error) { return readOne(v, varBootCurrent) }

func readOne(v Vars, x secureboot.Variable) (uint16, bool, error) {
	vals, err := readU16s(v, x)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	if len(vals) != 1 {
		return 0, false, fmt.Errorf("efiboot: %s has %d values", x.Name, len(vals))
	}
	return vals[0], true, nil
}

// ESPPath turns a path on the ESP (slashes) into the firmware's form.
func ESPPath(p string) string {
	return `\` + strings.ReplaceAll(strings.TrimPrefix(p, "/"), "/", `\`)
}
