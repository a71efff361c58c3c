// Package esp finds and mounts a node's EFI system partition. The ESP holds
// what the running image cannot carry in /usr or in its UKI, whose hashes
// would change: measurements.json for each slot and the update state.
package esp

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/osguard/osguard/disk"
	"github.com/osguard/osguard/internal/bootinit"
)

// Paths on the ESP.
const (
	// StatePath is the update state (node.UpdateState).
	StatePath = "/osguard/update.json"
)

// SlotMeasurementsPath is where an update puts the measurements of the
// image it wrote to slot ("A" or "B").
func SlotMeasurementsPath(slot string) string { return "/osguard/measurements-" + slot + ".json" }

// SlotUKIPath is where an update puts the UKI of slot.
func SlotUKIPath(slot string) string { return "/EFI/osguard/slot-" + slot + ".efi" }

// Mounted is a mounted ESP.
type Mounted struct {
	Dir  string
	Part bootinit.Partition
}

// Find returns the ESP on diskDev (the whole-disk node, e.g. /dev/vda), or
// the first ESP of any disk when diskDev is empty.
func Find(parts []bootinit.Partition, diskDev string) (bootinit.Partition, error) {
	for _, p := range parts {
		if p.Type == disk.TypeESP && (diskDev == "" || p.Disk == diskDev) {
			return p, nil
		}
	}
	if diskDev != "" {
		return bootinit.Partition{}, fmt.Errorf("esp: no EFI system partition on %s", diskDev)
	}
	return bootinit.Partition{}, errors.New("esp: no EFI system partition found")
}

// Mount mounts the ESP of diskDev (see Find) on a new temporary directory.
func Mount(diskDev string, readOnly bool) (*Mounted, error) {
	parts, err := bootinit.DefaultSys.Partitions()
	if err != nil {
		return nil, err
	}
	p, err := Find(parts, diskDev)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "osguard-esp-")
	if err != nil {
		return nil, err
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if readOnly {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount(p.Dev, dir, "vfat", flags, ""); err != nil {
		os.Remove(dir)
		return nil, fmt.Errorf("esp: mount %s: %w", p.Dev, err)
	}
	return &Mounted{Dir: dir, Part: p}, nil
}

// Close syncs and unmounts the ESP.
func (m *Mounted) Close() error {
	unix.Sync()
	err := unix.Unmount(m.Dir, 0)
	os.Remove(m.Dir)
	if err != nil {
		return fmt.Errorf("esp: unmount %s: %w", m.Dir, err)
	}
	return nil
}

// Path returns the host path of a path on the ESP.
func (m *Mounted) Path(p string) string { return m.Dir + p }
