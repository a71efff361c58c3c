package bootinit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/osguard/osguard/initrd/bootconfig"
	"github.com/osguard/osguard/selinux"
)

// xattrSELinux is the extended attribute that holds a file's context.
const xattrSELinux = "security.selinux"

// labelTree is one tree osguard-init labels: Dir in the initramfs, which is
// Node on the userland's side.
type labelTree struct {
	Dir, Node string
	// Skip are directories (initramfs paths) left alone: /usr is a
	// read-only EROFS whose labels the build wrote.
	Skip []string
}

// labelTrees are what the initramfs made before the policy was loaded and
// the userland keeps: the tmpfs root (with the /etc copied from the
// factory defaults), /run and /dev. Without labels their files
// would carry the file system's default type (tmpfs_t, device_t), and the
// userland's domains are not allowed to use them. systemd relabels /dev
// and /run only when it loads the policy itself, which on osguard it does
// not.
var labelTrees = []labelTree{
	{Dir: Sysroot, Node: "/", Skip: []string{Sysroot + "/usr"}},
	{Dir: "/run", Node: "/run"},
	{Dir: "/dev", Node: "/dev"},
}

// labelFiles labels the trees from the file contexts in the initramfs, as
// restorecon(8) would, and returns how many files it labelled.
func labelFiles(fcPath string, trees []labelTree) (int, error) {
	// The build compiled every regex of this file when it labelled /usr.
	fc, err := selinux.LoadFileContextsLazy(fcPath)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, t := range trees {
		var top unix.Stat_t
		if err := unix.Lstat(t.Dir, &top); err != nil {
			return n, fmt.Errorf("label %s: %w", t.Dir, err)
		}
		err := filepath.WalkDir(t.Dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			for _, s := range t.Skip {
				if p == s {
					return filepath.SkipDir
				}
			}
			node := filepath.Join(t.Node, strings.TrimPrefix(p, t.Dir))
			info, err := d.Info()
			if err != nil {
				return err
			}
			ctx, ok := fc.Lookup(node, info.Mode())
			// Another file system mounted in the tree (the var partition)
			// keeps its labels from boot to boot; only its top directory
			// is labelled, and only while it has none (a new file system).
			var st unix.Stat_t
			if d.IsDir() && unix.Lstat(p, &st) == nil && st.Dev != top.Dev {
				if ok && !hasLabel(p) {
					if err := unix.Lsetxattr(p, xattrSELinux, append([]byte(ctx), 0), 0); err != nil {
						return fmt.Errorf("label %s (%s) %s: %w", p, node, ctx, err)
					}
					n++
				}
				return filepath.SkipDir
			}
			if !ok {
				return nil
			}
			if err := unix.Lsetxattr(p, xattrSELinux, append([]byte(ctx), 0), 0); err != nil {
				if errors.Is(err, unix.ENOENT) {
					return nil // gone meanwhile (a device node udev never made)
				}
				return fmt.Errorf("label %s (%s) %s: %w", p, node, ctx, err)
			}
			n++
			return nil
		})
		if err != nil {
			return n, err
		}
	}
	return n, fc.Err()
}

// hasLabel reports whether a file carries a label of its own: the kernel
// shows a file without one as file_t (or unlabeled_t).
func hasLabel(p string) bool {
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(p, xattrSELinux, buf)
	if err != nil || n <= 0 {
		return false
	}
	ctx := string(buf[:n])
	return !strings.Contains(ctx, ":file_t:") && !strings.Contains(ctx, ":unlabeled_t:")
}

// haveFileContexts reports whether the initramfs carries file contexts.
func haveFileContexts() bool {
	_, err := os.Stat(bootconfig.SELinuxFileContextsPath)
	return err == nil
}

// selinuxConfig is the userland's SELinux configuration, on the tmpfs root.
const selinuxConfig = Sysroot + "/etc/selinux/config"

// setConfigMode writes the mode this boot runs in (the build's, or the
// command line's osguard.selinux=) into the userland's /etc/selinux/config
// when the image has one. systemd loads the policy again from /etc/selinux
// at its start and sets the mode that file names, so it must agree with
// the init's: "off" becomes SELINUX=disabled, and systemd loads nothing.
func setConfigMode(path, mode string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	} else if err != nil {
		return "", err
	}
	if mode == bootconfig.SELinuxOff {
		mode = "disabled"
	}
	lines := strings.Split(string(b), "\n")
	found := false
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "SELINUX=") {
			lines[i], found = "SELINUX="+mode, true
		}
	}
	if !found {
		lines = append([]string{"SELINUX=" + mode}, lines...)
	}
	return mode, os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644)
}
