package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/osguard/osguard/internal/tarfs"
)

// hwdbPath is where systemd-hwdb's --usr database goes. With it in /usr,
// systemd-hwdb-update.service (ConditionPathExists=|!/usr/lib/udev/hwdb.bin)
// does not rebuild the database in /etc at every boot of a node whose /etc
// is new each time: 12 s of a 60 s boot under TCG.
const hwdbPath = "usr/lib/udev/hwdb.bin"

// compileHWDB builds hwdb.bin for a root tar the way udev's package trigger
// does, with the root's own systemd-hwdb and libraries: nothing of the
// host's but the kernel. It returns nil when the root has no systemd-hwdb.
func compileHWDB(rootTar string, tempDir string) ([]byte, error) {
	dir, err := os.MkdirTemp(tempDir, "hwdb-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	want := func(name string) bool {
		return strings.HasPrefix(name, "usr/lib/udev/hwdb.d/") || name == "usr/bin/systemd-hwdb" ||
			strings.HasPrefix(name, "usr/lib/x86_64-linux-gnu/") || strings.HasPrefix(name, "usr/lib64/")
	}
	f, err := os.Open(rootTar)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	found := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		name, err := tarfs.Clean(h.Name)
		if err != nil || !want(name) {
			continue
		}
		p := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeSymlink:
			os.MkdirAll(filepath.Dir(p), 0o755)
			err = os.Symlink(h.Linkname, p)
		case tar.TypeReg:
			os.MkdirAll(filepath.Dir(p), 0o755)
			var out *os.File
			if out, err = os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755); err == nil {
				_, err = io.Copy(out, tr)
				if cerr := out.Close(); err == nil {
					err = cerr
				}
			}
			found = found || name == "usr/bin/systemd-hwdb"
		}
		if err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("hwdb: unpack %s: %w", name, err)
		}
	}
	if !found {
		return nil, nil
	}
	// systemd-hwdb records the path of each source file in hwdb.bin, so it
	// runs chrooted into the unpacked pieces, where they are at the paths
	// a node has: the same bytes wherever the build runs. The chroot is
	// made in a user namespace of our own: no root needed.
	if err := os.Symlink("usr/lib64", filepath.Join(dir, "lib64")); err != nil {
		return nil, fmt.Errorf("hwdb: %w", err)
	}
	cmd := exec.Command("/usr/bin/systemd-hwdb", "update", "--usr", "--strict")
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:      dir,
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("hwdb: systemd-hwdb update in a user namespace: %v: %s", err, bytes.TrimSpace(out))
	}
	return os.ReadFile(filepath.Join(dir, hwdbPath))
}

// appendTarFile adds a regular file to the end of a tar that Go's
// tar.Writer closed (two zero blocks and nothing after them).
func appendTarFile(f *os.File, name string, data []byte, mtime int64) error {
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if end < 1024 {
		return errors.New("append to tar: too short")
	}
	if _, err := f.Seek(end-1024, io.SeekStart); err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o444, Size: int64(len(data)),
		ModTime: time.Unix(mtime, 0).UTC(), Format: tar.FormatPAX}); err != nil {
		return err
	}
	if _, err := tw.Write(data); err != nil {
		return err
	}
	return tw.Close()
}
