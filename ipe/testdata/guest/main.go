// Command guest is the /init of the initramfs that ipe's kernel test boots.
// It mounts the pseudo file systems, loads the modules listed in
// /mod/order, then runs /script: one command per line, each reported on
// the console as "IPETEST <n> <result>" so that the host test can compare
// the kernel's verdicts with package ipe. It powers the machine off at the
// end.
package main

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func say(format string, args ...any) { fmt.Printf("IPETEST "+format+"\n", args...) }

func main() {
	defer unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	if err := run(); err != nil {
		say("FATAL %v", err)
	}
	unix.Sync()
}

func run() error {
	for _, m := range []struct{ src, dir, typ string }{
		{"proc", "/proc", "proc"}, {"sys", "/sys", "sysfs"}, {"dev", "/dev", "devtmpfs"},
		{"securityfs", "/sys/kernel/security", "securityfs"},
	} {
		os.MkdirAll(m.dir, 0o755)
		if err := unix.Mount(m.src, m.dir, m.typ, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s: %w", m.dir, err)
		}
	}
	order, err := os.ReadFile("/mod/order")
	if err != nil {
		return err
	}
	for _, spec := range strings.Split(strings.TrimSpace(string(order)), "\n") {
		name, params, _ := strings.Cut(spec, " ")
		f, err := os.Open("/mod/" + name + ".ko")
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), params, 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			say("module %s: %v", name, err)
		}
	}
	keys, _ := os.ReadFile("/proc/keys")
	for _, l := range strings.Split(string(keys), "\n") {
		if strings.Contains(l, "platform") || strings.Contains(l, "osguard") {
			say("key %s", strings.Join(strings.Fields(l), " "))
		}
	}
	return script()
}

// writeOnce writes b to path in a single write(2), as securityfs wants.
func writeOnce(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func result(n int, err error) {
	var errno syscall.Errno
	switch {
	case err == nil:
		say("%d OK", n)
	case errors.As(err, &errno):
		say("%d ERR %d", n, int(errno))
	default:
		say("%d FAIL %v", n, err)
	}
}

const ipe = "/sys/kernel/security/ipe"

// auditLog reads IPE's audit records from /dev/kmsg. Without auditd the
// kernel prints them (rate limited, hence printk_ratelimit=0).
type auditLog struct{ fd int }

var audit auditLog

func openAudit() error {
	if err := os.WriteFile("/proc/sys/kernel/printk_ratelimit", []byte("0"), 0); err != nil {
		return err
	}
	if err := writeOnce(ipe+"/success_audit", []byte("1")); err != nil {
		return err
	}
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	if _, err := unix.Seek(fd, 0, 2); err != nil {
		return err
	}
	audit.fd = fd
	return nil
}

// rule returns the rule="..." of the next record of hook (BPRM_CHECK,
// KERNEL_READ) for path, or "?".
func (a auditLog) rule(hook, path string) string {
	buf := make([]byte, 8192)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		n, err := unix.Read(a.fd, buf)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				time.Sleep(20 * time.Millisecond)
			}
			continue
		}
		rec := string(buf[:n])
		if !strings.Contains(rec, "ipe_hook="+hook+" ") || !strings.Contains(rec, ` path="`+path+`"`) {
			continue
		}
		rec, _, _ = strings.Cut(rec, "\n")
		// rule="..." is the last field; digests inside it carry their
		// algorithm as a quoted audit string (dmverity_roothash="sha256":HEX).
		if _, r, ok := strings.Cut(rec, ` rule="`); ok {
			return "rule=" + strings.TrimSuffix(r, `"`)
		}
	}
	return "?"
}

func script() error {
	if err := openAudit(); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	f, err := os.Open("/script")
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		args := strings.Fields(sc.Text())
		switch args[0] {
		case "load": // load FILE
			b, err := os.ReadFile(args[1])
			if err == nil {
				err = writeOnce(ipe+"/new_policy", b)
			}
			result(n, err)
		case "activate": // activate NAME
			result(n, writeOnce(ipe+"/policies/"+args[1]+"/active", []byte("1")))
		case "update": // update NAME FILE
			b, err := os.ReadFile(args[2])
			if err == nil {
				err = writeOnce(ipe+"/policies/"+args[1]+"/update", b)
			}
			result(n, err)
		case "cat": // cat FILE
			b, err := os.ReadFile(args[1])
			if err != nil {
				result(n, err)
			} else {
				say("%d TEXT %s", n, strings.TrimSpace(string(b)))
			}
		case "verity": // verity NAME DATA HASH BLOCKS ROOT SALT [SIGFILE]
			result(n, verity(args[1:]))
		case "mount": // mount DEV DIR FSTYPE [rw]
			os.MkdirAll(args[2], 0o755)
			flags := uintptr(unix.MS_RDONLY)
			if len(args) > 4 && args[4] == "rw" {
				flags = 0
			}
			result(n, unix.Mount(args[1], args[2], args[3], flags, ""))
		case "fskey": // fskey CERTFILE: add a DER certificate to .fs-verity
			result(n, fsKey(args[1]))
		case "fsverity": // fsverity FILE [SIGFILE]: enable fs-verity, print the digest
			d, err := fsVerity(args[1:])
			if err != nil {
				result(n, err)
			} else {
				say("%d TEXT %s", n, d)
			}
		case "kmod": // kmod FILE NAME: finit_module, then delete_module NAME
			f, err := os.Open(args[1])
			if err != nil {
				result(n, err)
				break
			}
			err = unix.FinitModule(int(f.Fd()), "", 0)
			f.Close()
			switch {
			case err == nil:
				rule := audit.rule("KERNEL_READ", args[1])
				if err := unix.DeleteModule(args[2], unix.O_NONBLOCK); err != nil {
					say("%d FAIL delete_module %s: %v", n, args[2], err)
				} else {
					say("%d ALLOW %s", n, rule)
				}
			case errors.Is(err, syscall.EACCES):
				say("%d DENY %s", n, audit.rule("KERNEL_READ", args[1]))
			default:
				say("%d FAIL finit_module: %v", n, err)
			}
		case "tmpfs": // tmpfs DIR
			os.MkdirAll(args[1], 0o755)
			result(n, unix.Mount("tmpfs", args[1], "tmpfs", 0, ""))
		case "copy": // copy SRC DST
			b, err := os.ReadFile(args[1])
			if err == nil {
				err = os.WriteFile(args[2], b, 0o755)
			}
			result(n, err)
		case "exec": // exec PATH ARGS...
			err := exec.Command(args[1], args[2:]...).Run()
			switch {
			case err == nil:
				say("%d ALLOW %s", n, audit.rule("BPRM_CHECK", args[1]))
			case errors.Is(err, syscall.EACCES):
				say("%d DENY %s", n, audit.rule("BPRM_CHECK", args[1]))
			default:
				say("%d FAIL %v", n, err)
			}
		default:
			say("%d FAIL unknown command %q", n, args[0])
		}
	}
	return sc.Err()
}

// verity creates a read-only dm-verity device /dev/NAME with the DM ioctls
// (DEV_CREATE, TABLE_LOAD, DEV_SUSPEND to resume). With SIGFILE the root
// hash signature goes into a user key that the table names.
func verity(a []string) error {
	name, data, hash, blocks, root, salt := a[0], a[1], a[2], a[3], a[4], a[5]
	nblocks, err := strconv.ParseUint(blocks, 10, 64)
	if err != nil {
		return err
	}
	params := fmt.Sprintf("1 %s %s 4096 4096 %d 1 sha256 %s %s", data, hash, nblocks, root, salt)
	if len(a) > 6 {
		sig, err := os.ReadFile(a[6])
		if err != nil {
			return err
		}
		desc := "ipetest:" + name
		if _, err := unix.AddKey("user", desc, sig, unix.KEY_SPEC_USER_KEYRING); err != nil {
			return fmt.Errorf("add_key: %w", err)
		}
		params += " 2 root_hash_sig_key_desc " + desc
	}
	ctl, err := os.OpenFile("/dev/mapper/control", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer ctl.Close()
	fd := int(ctl.Fd())
	if _, err := dmIoctl(fd, unix.DM_DEV_CREATE, name, 0, 0, nil); err != nil {
		return fmt.Errorf("DM_DEV_CREATE: %w", err)
	}
	spec := unix.DmTargetSpec{Length: nblocks * 8}
	copy(spec.Target_type[:], "verity")
	p := append([]byte(params), 0)
	for len(p)%8 != 0 {
		p = append(p, 0)
	}
	spec.Next = uint32(unsafe.Sizeof(spec)) + uint32(len(p))
	payload := append(unsafe.Slice((*byte)(unsafe.Pointer(&spec)), unsafe.Sizeof(spec)), p...)
	if _, err := dmIoctl(fd, unix.DM_TABLE_LOAD, name, unix.DM_READONLY_FLAG, 1, payload); err != nil {
		return fmt.Errorf("DM_TABLE_LOAD: %w", err)
	}
	h, err := dmIoctl(fd, unix.DM_DEV_SUSPEND, name, 0, 0, nil)
	if err != nil {
		return fmt.Errorf("DM_DEV_SUSPEND (resume): %w", err)
	}
	return unix.Mknod("/dev/"+name, unix.S_IFBLK|0o600, int(h.Dev))
}

// fsKey adds the DER certificate in file to the kernel's .fs-verity
// keyring, against which fs-verity builtin signatures are checked.
func fsKey(file string) error {
	der, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	keys, err := os.ReadFile("/proc/keys")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(string(keys), "\n") {
		f := strings.Fields(l)
		if len(f) >= 9 && f[7] == "keyring" && strings.TrimSuffix(f[8], ":") == ".fs-verity" {
			id, err := strconv.ParseUint(f[0], 16, 32)
			if err != nil {
				return err
			}
			_, err = unix.AddKey("asymmetric", "", der, int(id))
			return err
		}
	}
	return errors.New("no .fs-verity keyring in /proc/keys")
}

// fsVerity enables fs-verity (sha256, 4096-byte blocks, no salt) on a[0],
// with the builtin signature in a[1] if given, and returns the file's
// digest as FS_IOC_MEASURE_VERITY reports it (sha256:HEX).
func fsVerity(a []string) (string, error) {
	f, err := os.Open(a[0])
	if err != nil {
		return "", err
	}
	defer f.Close()
	arg := unix.FsverityEnableArg{Version: 1, Hash_algorithm: unix.FS_VERITY_HASH_ALG_SHA256, Block_size: 4096}
	var sig []byte
	if len(a) > 1 {
		if sig, err = os.ReadFile(a[1]); err != nil {
			return "", err
		}
		arg.Sig_size = uint32(len(sig))
		arg.Sig_ptr = uint64(uintptr(unsafe.Pointer(&sig[0])))
	}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.FS_IOC_ENABLE_VERITY, uintptr(unsafe.Pointer(&arg)))
	runtime.KeepAlive(sig)
	if errno != 0 {
		return "", errno
	}
	buf := make([]byte, 4+64)
	*(*unix.FsverityDigest)(unsafe.Pointer(&buf[0])) = unix.FsverityDigest{Size: 64}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.FS_IOC_MEASURE_VERITY, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		return "", errno
	}
	d := *(*unix.FsverityDigest)(unsafe.Pointer(&buf[0]))
	if d.Algorithm != unix.FS_VERITY_HASH_ALG_SHA256 {
		return "", fmt.Errorf("digest algorithm %d", d.Algorithm)
	}
	return "sha256:" + hex.EncodeToString(buf[4:4+d.Size]), nil
}

func dmIoctl(fd int, req uint, name string, flags, targets uint32, payload []byte) (*unix.DmIoctl, error) {
	var h unix.DmIoctl
	hsize := int(unsafe.Sizeof(h))
	buf := make([]byte, hsize+len(payload)+16384)
	h.Version = [3]uint32{4, 0, 0}
	h.Data_size = uint32(len(buf))
	h.Data_start = uint32(hsize)
	h.Target_count = targets
	h.Flags = flags
	copy(h.Name[:], name)
	copy(buf, unsafe.Slice((*byte)(unsafe.Pointer(&h)), hsize))
	copy(buf[hsize:], payload)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		return nil, errno
	}
	out := *(*unix.DmIoctl)(unsafe.Pointer(&buf[0]))
	return &out, nil
}
