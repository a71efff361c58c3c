// Package dm drives the Linux device-mapper through its ioctl interface on
// /dev/mapper/control (include/uapi/linux/dm-ioctl.h), without libdevmapper
// or udev: create a device, load a table, resume it, read its table and
// status back, remove it. It is what osguard-init uses to set up the
// dm-verity /usr and what a node uses to inspect it.
//
// Each ioctl takes a struct dm_ioctl header (version 4) followed by a data
// area; for DM_TABLE_LOAD the data area holds struct dm_target_spec records,
// each followed by its NUL-terminated parameter string and padded to 8 bytes.
package dm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ControlPath is the device-mapper control node.
const ControlPath = "/dev/mapper/control"

// Commands, flags and sizes from include/uapi/linux/dm-ioctl.h.
const (
	DM_VERSION_CMD      = 0
	DM_DEV_CREATE_CMD   = 3
	DM_DEV_REMOVE_CMD   = 4
	DM_DEV_SUSPEND_CMD  = 6
	DM_DEV_STATUS_CMD   = 7
	DM_TABLE_LOAD_CMD   = 9
	DM_TABLE_STATUS_CMD = 12

	DM_READONLY_FLAG     = 1 << 0
	DM_SUSPEND_FLAG      = 1 << 1
	DM_STATUS_TABLE_FLAG = 1 << 4
	DM_BUFFER_FULL_FLAG  = 1 << 8

	DM_NAME_LEN = 128
	DM_UUID_LEN = 129

	dmIoctlSize      = 312 // sizeof(struct dm_ioctl)
	dmTargetSpecSize = 40  // sizeof(struct dm_target_spec)
	dmIoctlType      = 0xfd
)

// dmIoctl is struct dm_ioctl.
type dmIoctl struct {
	Version     [3]uint32
	DataSize    uint32
	DataStart   uint32
	TargetCount uint32
	OpenCount   int32
	Flags       uint32
	EventNr     uint32
	Padding     uint32
	Dev         uint64
	Name        [DM_NAME_LEN]byte
	UUID        [DM_UUID_LEN]byte
	Data        [7]byte
}

// dmTargetSpec is struct dm_target_spec.
type dmTargetSpec struct {
	SectorStart uint64
	Length      uint64
	Status      int32
	Next        uint32
	TargetType  [16]byte
}

func init() {
	if unsafe.Sizeof(dmIoctl{}) != dmIoctlSize || unsafe.Sizeof(dmTargetSpec{}) != dmTargetSpecSize {
		panic("dm: struct layout does not match dm-ioctl.h")
	}
}

// Target is one line of a device-mapper table.
type Target struct {
	Start  uint64 // in 512-byte sectors
	Length uint64 // in 512-byte sectors
	Type   string // e.g. "verity"
	Params string
}

// String prints the target the way dmsetup table does.
func (t Target) String() string {
	return fmt.Sprintf("%d %d %s %s", t.Start, t.Length, t.Type, t.Params)
}

// Device describes a device as DM_DEV_STATUS reports it.
type Device struct {
	Name      string
	UUID      string
	Major     uint32
	Minor     uint32
	Flags     uint32
	OpenCount int32
	Targets   uint32
}

// ReadOnly reports whether the device is read-only.
func (d Device) ReadOnly() bool { return d.Flags&DM_READONLY_FLAG != 0 }

// Error is a failed device-mapper ioctl; it unwraps to the errno.
type Error struct {
	Op   string
	Name string
	Err  error
}

func (e *Error) Error() string { return fmt.Sprintf("dm: %s %s: %v", e.Op, e.Name, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

func ioctlNum(cmd uintptr) uintptr {
	// _IOWR(DM_IOCTL, cmd, struct dm_ioctl)
	return 3<<30 | dmIoctlSize<<16 | dmIoctlType<<8 | cmd
}

func header(name string, flags uint32, dataSize int) (dmIoctl, error) {
	var h dmIoctl
	if len(name) >= DM_NAME_LEN || name == "" {
		return h, fmt.Errorf("dm: bad device name %q", name)
	}
	h.Version = [3]uint32{4, 0, 0}
	h.DataSize = uint32(dmIoctlSize + dataSize)
	h.DataStart = dmIoctlSize
	h.Flags = flags
	copy(h.Name[:], name)
	return h, nil
}

// call runs one ioctl with header h followed by payload, in a buffer of
// bufSize bytes (at least the header plus the payload); it returns the
// header and the buffer as the kernel left them.
func call(op string, cmd uintptr, h dmIoctl, payload []byte, bufSize int) (dmIoctl, []byte, error) {
	name := cstr(h.Name[:])
	if bufSize < dmIoctlSize+len(payload) {
		bufSize = dmIoctlSize + len(payload)
	}
	h.DataSize = uint32(bufSize)
	buf := make([]byte, bufSize)
	var hb bytes.Buffer
	binary.Write(&hb, binary.NativeEndian, &h)
	copy(buf, hb.Bytes())
	copy(buf[dmIoctlSize:], payload)
	f, err := os.OpenFile(ControlPath, os.O_RDWR, 0)
	if err != nil {
		return h, nil, &Error{Op: op, Name: name, Err: err}
	}
	defer f.Close()
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), ioctlNum(cmd), uintptr(unsafe.Pointer(&buf[0])))
	if errno != 0 {
		return h, nil, &Error{Op: op, Name: name, Err: errno}
	}
	var out dmIoctl
	if err := binary.Read(bytes.NewReader(buf), binary.NativeEndian, &out); err != nil {
		return h, nil, &Error{Op: op, Name: name, Err: err}
	}
	return out, buf, nil
}

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// Create makes an empty device called name, with an optional uuid.
func Create(name, uuid string) (Device, error) {
	h, err := header(name, 0, 0)
	if err != nil {
		return Device{}, err
	}
	if len(uuid) >= DM_UUID_LEN {
		return Device{}, fmt.Errorf("dm: uuid too long")
	}
	copy(h.UUID[:], uuid)
	out, _, err := call("create", DM_DEV_CREATE_CMD, h, nil, 0)
	if err != nil {
		return Device{}, err
	}
	return device(out), nil
}

// Load loads a table into the inactive slot of device name.
func Load(name string, readOnly bool, targets []Target) error {
	var data bytes.Buffer
	for i, t := range targets {
		if len(t.Type) >= 16 {
			return fmt.Errorf("dm: target type %q too long", t.Type)
		}
		params := append([]byte(t.Params), 0)
		for (dmTargetSpecSize+len(params))%8 != 0 {
			params = append(params, 0)
		}
		spec := dmTargetSpec{SectorStart: t.Start, Length: t.Length}
		copy(spec.TargetType[:], t.Type)
		if i < len(targets)-1 {
			spec.Next = uint32(dmTargetSpecSize + len(params))
		}
		binary.Write(&data, binary.NativeEndian, &spec)
		data.Write(params)
	}
	var flags uint32
	if readOnly {
		flags |= DM_READONLY_FLAG
	}
	h, err := header(name, flags, data.Len())
	if err != nil {
		return err
	}
	h.TargetCount = uint32(len(targets))
	_, _, err = call("load table", DM_TABLE_LOAD_CMD, h, data.Bytes(), 0)
	return err
}

// Resume swaps the loaded table in and resumes I/O on device name.
func Resume(name string) error {
	h, err := header(name, 0, 0)
	if err != nil {
		return err
	}
	_, _, err = call("resume", DM_DEV_SUSPEND_CMD, h, nil, 0)
	return err
}

// Remove deletes device name.
func Remove(name string) error {
	h, err := header(name, 0, 0)
	if err != nil {
		return err
	}
	_, _, err = call("remove", DM_DEV_REMOVE_CMD, h, nil, 0)
	return err
}

// Status returns the device's header fields.
func Status(name string) (Device, error) {
	h, err := header(name, 0, 0)
	if err != nil {
		return Device{}, err
	}
	out, _, err := call("status", DM_DEV_STATUS_CMD, h, nil, 0)
	if err != nil {
		return Device{}, err
	}
	return device(out), nil
}

// Table returns the active table of device name (what dmsetup table prints).
func Table(name string) ([]Target, error) { return tableStatus(name, DM_STATUS_TABLE_FLAG) }

// TargetStatus returns the status lines of device name (what dmsetup status
// prints; for verity "V" means verified, "C" corruption seen).
func TargetStatus(name string) ([]Target, error) { return tableStatus(name, 0) }

func tableStatus(name string, flags uint32) ([]Target, error) {
	for size := 16 << 10; size <= 4<<20; size *= 4 {
		h, err := header(name, flags, 0)
		if err != nil {
			return nil, err
		}
		out, buf, err := call("table status", DM_TABLE_STATUS_CMD, h, nil, size)
		if err != nil {
			return nil, err
		}
		if out.Flags&DM_BUFFER_FULL_FLAG != 0 {
			continue
		}
		return parseTargets(buf, out)
	}
	return nil, &Error{Op: "table status", Name: name, Err: errors.New("table larger than 4 MiB")}
}

func parseTargets(buf []byte, h dmIoctl) ([]Target, error) {
	var ts []Target
	off := int(h.DataStart)
	for i := uint32(0); i < h.TargetCount; i++ {
		if off < 0 || off+dmTargetSpecSize > len(buf) || off > int(h.DataSize) {
			return nil, errors.New("dm: table status: target outside the buffer")
		}
		var spec dmTargetSpec
		binary.Read(bytes.NewReader(buf[off:off+dmTargetSpecSize]), binary.NativeEndian, &spec)
		// next is the offset of the following record from the start of
		// the data area (dm-ioctl.c, retrieve_status), unlike for
		// DM_TABLE_LOAD where it is relative to the current record.
		end := len(buf)
		if n := int(h.DataStart) + int(spec.Next); spec.Next != 0 && n >= off+dmTargetSpecSize && n < end {
			end = n
		}
		ts = append(ts, Target{Start: spec.SectorStart, Length: spec.Length,
			Type: cstr(spec.TargetType[:]), Params: strings.TrimSpace(cstr(buf[off+dmTargetSpecSize : end]))})
		next := int(h.DataStart) + int(spec.Next)
		if spec.Next == 0 || next <= off {
			break
		}
		off = next
	}
	return ts, nil
}

func device(h dmIoctl) Device {
	return Device{Name: cstr(h.Name[:]), UUID: cstr(h.UUID[:]),
		Major: unix.Major(h.Dev), Minor: unix.Minor(h.Dev), Flags: h.Flags, OpenCount: h.OpenCount, Targets: h.TargetCount}
}
