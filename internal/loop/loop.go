// Package loop attaches regular files to loop block devices (loop(4))
// through /dev/loop-control and LOOP_CONFIGURE, with golang.org/x/sys/unix.
// The osguard snapshotter puts each converted container layer (an EROFS
// image followed by its dm-verity hash tree) on a read-only loop device, so
// that device-mapper can stack a verity target on it.
//
// Devices are attached with LO_FLAGS_AUTOCLEAR: the kernel detaches a
// device when its last opener closes it, so a loop device outlives Attach
// only while something (the verity target) holds it open, and nothing needs
// to detach it by hand.
package loop

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Device is an attached loop device. Close releases this process's hold on
// it; the device itself stays until its last opener closes it.
type Device struct {
	Path         string // /dev/loopN
	Major, Minor uint32
	f            *os.File
}

// Close drops the caller's open file of the device.
func (d *Device) Close() error { return d.f.Close() }

// DevNum is "major:minor", the way device-mapper tables name a device.
func (d *Device) DevNum() string { return fmt.Sprintf("%d:%d", d.Major, d.Minor) }

// AttachReadOnly attaches the file at path, read-only and autoclearing, to a
// free loop device.
func AttachReadOnly(path string) (*Device, error) {
	backing, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("loop: %w", err)
	}
	defer backing.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loop: %w (is the loop module loaded?)", err)
	}
	defer ctl.Close()
	// Another process may take the free device between GET_FREE and
	// CONFIGURE; the configure then fails with EBUSY and we ask again.
	for attempt := 0; attempt < 16; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("loop: LOOP_CTL_GET_FREE: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("loop: %w", err)
		}
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:], path)
		if err := unix.IoctlLoopConfigure(int(f.Fd()), &cfg); err != nil {
			f.Close()
			if errors.Is(err, unix.EBUSY) {
				continue
			}
			return nil, fmt.Errorf("loop: LOOP_CONFIGURE %s with %s: %w", dev, path, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			f.Close()
			return nil, fmt.Errorf("loop: stat %s: %w", dev, err)
		}
		return &Device{Path: dev, Major: unix.Major(st.Rdev), Minor: unix.Minor(st.Rdev), f: f}, nil
	}
	return nil, errors.New("loop: no free loop device after 16 attempts")
}
