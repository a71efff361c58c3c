package image

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path"
	"strings"

	"github.com/osguard/osguard/erofs"
)

// The default userland: busybox-static with merged /usr, a root shell on the
// serial console, and /etc as factory defaults the init copies to the tmpfs
// root at boot.
var defaultEtc = map[string]string{
	"inittab": `# osguard default userland (busybox init). rcS lives on the verity
# volume: IPE lets nothing execute from the tmpfs root, /etc included.
::sysinit:/usr/lib/osguard/rcS
::ctrlaltdel:/bin/reboot
::shutdown:/bin/sync
`,
	"../usr/lib/osguard/rcS": `#!/bin/sh
# Mount what the userland needs; osguard-init moved /proc, /sys and /dev here.
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
hostname -F /etc/hostname
# Commit an update's healthy trial boot, or record a failed one.
[ -x /usr/bin/osguard ] && /usr/bin/osguard update check-boot &
if [ -f /etc/osguard/attestation.json ]; then
  # spec.attestation: QEMU user networking ('osguard run --verifier'), then
  # the agent at boot and at its interval.
  ip link set lo up; ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0
  osguard attest agent >/dev/console 2>&1 &
fi
echo "osguard: userland ready"
`,
	"profile": `export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PS1='\h:\w# '
export HOME=/root
`,
	"passwd":   "root:x:0:0:root:/root:/bin/sh\n",
	"group":    "root:x:0:\n",
	"shadow":   "root:*:1::::::\n",
	"hostname": "osguard\n",
	"shells":   "/bin/sh\n",
}

// busyboxApplets lists the applets of a static busybox by running it.
func busyboxApplets(busybox string) ([]string, error) {
	out, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("list busybox applets (%s --list-full): %w", busybox, err)
	}
	var applets []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			applets = append(applets, l)
		}
	}
	return applets, nil
}

// defaultUserland returns the root tree of the built-in userland.
func defaultUserland(busybox, osguardBin string, osRelease string, mtime int64, debugConsole bool) (*erofs.Tree, error) {
	t := erofs.NewTree()
	dir := func(p string, mode uint32) error {
		return t.Add(p, &erofs.Inode{Mode: erofs.S_IFDIR | mode, Mtime: mtime})
	}
	file := func(p string, mode uint32, data []byte) error {
		return t.Add(p, &erofs.Inode{Mode: erofs.S_IFREG | mode, Mtime: mtime, Size: int64(len(data)), Open: erofs.BytesOpener(data)})
	}
	diskFile := func(p string, mode uint32, src string) error {
		st, err := os.Stat(src)
		if err != nil {
			return err
		}
		return t.Add(p, &erofs.Inode{Mode: erofs.S_IFREG | mode, Mtime: mtime, Size: st.Size(), Open: erofs.FileOpener(src)})
	}
	link := func(p, target string) error {
		return t.Add(p, &erofs.Inode{Mode: erofs.S_IFLNK | 0o777, Mtime: mtime, Target: target})
	}
	for _, d := range []string{"/", "/usr", "/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib/osguard", "/usr/share", "/etc", "/root", "/var"} {
		mode := uint32(0o755)
		if d == "/root" {
			mode = 0o700
		}
		if err := dir(d, mode); err != nil {
			return nil, err
		}
	}
	if err := diskFile("/usr/bin/busybox", 0o755, busybox); err != nil {
		return nil, fmt.Errorf("busybox: %w", err)
	}
	applets, err := busyboxApplets(busybox)
	if err != nil {
		return nil, err
	}
	for _, a := range applets {
		// Merged /usr: bin/x and sbin/x live in usr/bin and usr/sbin.
		p := "/" + a
		if !strings.HasPrefix(a, "usr/") {
			p = "/usr/" + a
		}
		if p == "/usr/bin/busybox" {
			continue
		}
		rel, _ := relPath(path.Dir(p), "/usr/bin/busybox")
		if err := link(p, rel); err != nil {
			return nil, err
		}
	}
	if osguardBin != "" {
		if err := diskFile("/usr/bin/osguard", 0o755, osguardBin); err != nil {
			return nil, fmt.Errorf("osguard binary: %w", err)
		}
	}
	for name, content := range defaultEtc {
		if name == "inittab" && debugConsole {
			// The debug console: a root shell on the serial line.
			content += "ttyS0::respawn:-/bin/sh\n"
		}
		mode := uint32(0o644)
		if strings.HasPrefix(content, "#!") {
			mode = 0o755
		}
		if name == "shadow" {
			mode = 0o600
		}
		if err := file(path.Join("/etc", name), mode, []byte(content)); err != nil {
			return nil, err
		}
	}
	if err := file("/usr/lib/os-release", 0o644, []byte(osRelease)); err != nil {
		return nil, err
	}
	if err := link("/etc/os-release", "../usr/lib/os-release"); err != nil {
		return nil, err
	}
	return t, nil
}

// relPath returns target relative to dir (both absolute, clean).
func relPath(dir, target string) (string, error) {
	d := strings.Split(strings.Trim(dir, "/"), "/")
	tp := strings.Split(strings.Trim(target, "/"), "/")
	i := 0
	for i < len(d) && i < len(tp) && d[i] == tp[i] && d[i] != "" {
		i++
	}
	var b bytes.Buffer
	for j := i; j < len(d); j++ {
		if d[j] != "" {
			b.WriteString("../")
		}
	}
	b.WriteString(strings.Join(tp[i:], "/"))
	return b.String(), nil
}

// usrTree re-roots the /usr of a rootfs tree into a tree of its own, and
// puts the rootfs's /etc at /usr/share/factory/etc, where the init finds
// the defaults of the node's /etc.
func usrTree(root *erofs.Tree) (*erofs.Tree, error) {
	usr := erofs.NewTree()
	if ino := root.Get("/usr"); ino == nil || !ino.IsDir() {
		return nil, fmt.Errorf("the rootfs has no /usr directory")
	} else if err := usr.Add("/", ino); err != nil {
		return nil, err
	}
	err := root.Walk(func(p string, ino *erofs.Inode) error {
		switch {
		case strings.HasPrefix(p, "/usr/"):
			if strings.HasPrefix(p, "/usr/share/factory/etc/") || p == "/usr/share/factory/etc" {
				return nil // replaced by the rootfs's /etc below
			}
			return usr.Add(strings.TrimPrefix(p, "/usr"), ino)
		case p == "/etc" || strings.HasPrefix(p, "/etc/"):
			return usr.Add("/share/factory"+p, ino)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("collect /usr: %w", err)
	}
	return usr, nil
}
