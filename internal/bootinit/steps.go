package bootinit

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/osguard/osguard/disk"
	"github.com/osguard/osguard/initrd/bootconfig"
	"github.com/osguard/osguard/internal/dm"
	"github.com/osguard/osguard/internal/keyring"
	"github.com/osguard/osguard/internal/tpm"
	"github.com/osguard/osguard/verity"
)

// Paths the init works with.
const (
	Sysroot      = "/sysroot"
	UsrDMName    = "usr"
	securityfs   = "/sys/kernel/security"
	ipeDir       = securityfs + "/ipe"
	selinuxfs    = "/sys/fs/selinux"
	efivarsDir   = "/sys/firmware/efi/efivars"
	efiGlobalVar = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
)

// DeviceTimeout is how long the init waits for the usr partitions to show
// up after the disk drivers are loaded (they probe asynchronously).
var DeviceTimeout = 15 * time.Second

// Logger prints one line per step on the console.
type Logger struct {
	W     io.Writer
	Start time.Time
}

// Printf prints a line with the prefix and the time since the init started.
func (l *Logger) Printf(format string, args ...any) {
	fmt.Fprintf(l.W, "osguard-init: [%6.3fs] %s\n", time.Since(l.Start).Seconds(), fmt.Sprintf(format, args...))
}

// Run performs the boot up to and including switch_root and the exec of the
// userland's init; it only returns on failure. cmdline is /proc/cmdline's
// content once proc is mounted, so Run reads it itself.
func Run(log *Logger) (err error) {
	step := func(n int, name string) { log.Printf("step %d/8: %s", n, name) }

	step(1, "mount proc, sys, dev, securityfs, efivarfs; load modules")
	if err := mountAPI(); err != nil {
		return err
	}
	var uts unix.Utsname
	unix.Uname(&uts)
	lsm, _ := os.ReadFile("/sys/kernel/security/lsm")
	log.Printf("pid=%d kernel=%s lsm=%s", os.Getpid(), unix.ByteSliceToString(uts.Release[:]), strings.TrimSpace(string(lsm)))
	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("read /proc/cmdline: %w", err)
	}
	cl, err := ParseCmdline(string(raw))
	if err != nil {
		return err
	}
	cfgBytes, err := os.ReadFile(bootconfig.Path)
	if err != nil {
		return fmt.Errorf("read build config: %w", err)
	}
	cfg, err := bootconfig.Parse(cfgBytes)
	if err != nil {
		return err
	}
	st := Merge(cfg, cl)
	debugMode = st.Debug
	for _, u := range cl.Unknown {
		log.Printf("warning: unknown option %s", u)
	}
	n, slowest, err := loadModules(cfg.Modules)
	if err != nil {
		return err
	}
	// Without efivarfs (no UEFI) step 2 cannot read the Secure Boot state
	// and stops the boot unless osguard.insecure=1.
	if err := mount("efivarfs", efivarsDir, "efivarfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		log.Printf("warning: %v", err)
	}
	log.Printf("loaded %d modules (slowest: %s); ipe=%s selinux=%s on_corruption=%s init=%s", n, slowest, st.IPE, st.SELinux, st.OnCorruption, st.Init)
	// From here on a trial boot is bounded by the watchdog: a hang in the
	// initramfs or in the userland resets the machine, and the firmware,
	// its BootNext used up, boots the old slot (see watchdog.go).
	var watchdog time.Duration
	if TrialBoot() {
		if watchdog, err = armTrialWatchdog(log, cl.UpdateTimeout); err != nil {
			return err
		}
	}
	measurePhase(log, "enter-initrd")

	step(2, "check Secure Boot")
	sb, sbErr := readEFIBool("SecureBoot")
	setup, setupErr := readEFIBool("SetupMode")
	log.Printf("SecureBoot=%s SetupMode=%s", fmtBool(sb, sbErr), fmtBool(setup, setupErr))
	if sbErr != nil || setupErr != nil || !sb || setup {
		if !st.Insecure {
			return errors.New("Secure Boot is not enforced (need SecureBoot=1 and SetupMode=0): keys in db, and so in the kernel's .platform keyring, cannot be trusted; osguard.insecure=1 overrides")
		}
		log.Printf("WARNING: osguard.insecure=1: trusting .platform without Secure Boot")
	}

	step(3, "find the usr partitions")
	if len(st.UsrHash) == 0 {
		return errors.New("no usrhash= on the kernel command line")
	}
	slot, err := waitUsr(st.UsrHash)
	if err != nil {
		return err
	}
	log.Printf("usr=%s usr-verity=%s usr-verity-sig=%s (%s)", slot.Usr.Dev, slot.Verity.Dev, slot.Sig.Dev, slot.Usr.Name)

	step(4, "create the dm-verity device (the kernel checks the signature)")
	table, err := openVerity(slot, st)
	if err != nil {
		return err
	}
	log.Printf("/dev/mapper/%s: %s", UsrDMName, table)

	step(5, "mount /usr and the root")
	if err := mountSysroot(log); err != nil {
		return err
	}

	step(6, "load the IPE policy")
	if err := loadIPE(log, st); err != nil {
		return err
	}

	step(7, "SELinux")
	if err := loadSELinux(log, st); err != nil {
		return err
	}

	step(8, "switch_root to "+Sysroot+", exec "+st.Init)
	measurePhase(log, "leave-initrd")
	if watchdog > 0 {
		markHandover(log, watchdog)
	}
	return switchRoot(st.Init)
}

// measurePhase extends PCR 11 with a boot phase string, as systemd-pcrphase
// does, so that PCR 11 in the userland differs from PCR 11 in the initrd and
// equals the phase value 'osguard build' predicts. A machine without a TPM
// boots on; so does one whose TPM fails, with a warning (nothing the init
// does depends on PCR 11).
func measurePhase(log *Logger, phase string) {
	switch err := tpm.ExtendDevice(tpm.Device, 11, []byte(phase)); {
	case err == nil:
		log.Printf("PCR 11: measured phase %s", phase)
	case errors.Is(err, tpm.ErrNoTPM):
		log.Printf("PCR 11: no TPM, phase %s not measured", phase)
	default:
		log.Printf("warning: PCR 11: phase %s: %v", phase, err)
	}
}

var debugMode bool

// TrialBoot reports whether this boot is the one trial boot of an update's
// new slot: the marker `osguard update apply` left (bootconfig.TrialVarName)
// names the Boot#### entry the firmware says it booted (BootCurrent). A
// failed trial boot must reboot, not power off: BootNext is used up, so the
// firmware then boots the old slot from BootOrder.
func TrialBoot() bool {
	os.MkdirAll(efivarsDir, 0o755)
	unix.Mount("efivarfs", efivarsDir, "efivarfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "") // EBUSY when mounted
	marker, err := os.ReadFile(filepath.Join(efivarsDir, bootconfig.TrialVarName+"-"+bootconfig.TrialVarGUID))
	if err != nil || len(marker) != 6 {
		return false
	}
	current, err := os.ReadFile(filepath.Join(efivarsDir, "BootCurrent-"+efiGlobalVar))
	if err != nil || len(current) != 6 {
		return false
	}
	return marker[4] == current[4] && marker[5] == current[5]
}

// DebugMode reports whether osguard.debug=1 was on the command line (valid
// once Run has parsed it).
func DebugMode() bool { return debugMode }

func mount(src, dst, fstype string, flags uintptr, data string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("mkdir %s: %w", dst, err)
	}
	if err := unix.Mount(src, dst, fstype, flags, data); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mount %s on %s (%s): %w", src, dst, fstype, err)
	}
	return nil
}

func mountAPI() error {
	for _, m := range []struct {
		src, dst, fstype string
		flags            uintptr
		data             string
	}{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"securityfs", securityfs, "securityfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	} {
		if err := mount(m.src, m.dst, m.fstype, m.flags, m.data); err != nil {
			return err
		}
	}
	return nil
}

func loadModules(mods []bootconfig.Module) (int, string, error) {
	n := 0
	var slowest string
	var slowestD time.Duration
	for _, m := range mods {
		t0 := time.Now()
		f, err := os.Open(m.Path)
		if err != nil {
			return n, slowest, fmt.Errorf("module %s: %w", m.Name, err)
		}
		err = unix.FinitModule(int(f.Fd()), m.Params, 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return n, slowest, fmt.Errorf("load module %s: %w", m.Name, err)
		}
		if d := time.Since(t0); d > slowestD {
			slowest, slowestD = fmt.Sprintf("%s %.3fs", m.Name, d.Seconds()), d
		}
		n++
	}
	return n, slowest, nil
}

// readEFIBool reads a one-byte EFI global variable through efivarfs: four
// bytes of attributes, then the value.
func readEFIBool(name string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(efivarsDir, name+"-"+efiGlobalVar))
	if err != nil {
		return false, err
	}
	if len(b) != 5 {
		return false, fmt.Errorf("%s: %d bytes, want 5", name, len(b))
	}
	return b[4] == 1, nil
}

func fmtBool(v bool, err error) string {
	switch {
	case err != nil:
		return "unknown (" + err.Error() + ")"
	case v:
		return "1"
	}
	return "0"
}

func waitUsr(rootHash []byte) (*UsrSlot, error) {
	deadline := time.Now().Add(DeviceTimeout)
	for {
		parts, err := DefaultSys.Partitions()
		if err == nil {
			slot, err2 := FindUsr(parts, rootHash, ReadSigPartition)
			if err2 == nil {
				return slot, nil
			}
			err = err2
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("after %s: %w", DeviceTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// VerityTable returns the dm-verity table line for a slot: the parameters
// come from the usr-verity partition's superblock (only the root hash and
// the signature come from elsewhere), the hash tree starts one hash block
// in, after the superblock, as veritysetup lays it out.
func VerityTable(sb *verity.Superblock, dataDev, hashDev string, rootHash []byte, sigKeyDesc, onCorruption string) (dm.Target, error) {
	if sb.DataBlockSize == 0 || sb.HashBlockSize == 0 || sb.DataBlocks == 0 {
		return dm.Target{}, errors.New("verity superblock: zero block size or count")
	}
	if sb.DataBlocks > math.MaxUint64/uint64(sb.DataBlockSize) {
		return dm.Target{}, fmt.Errorf("verity superblock: %d data blocks of %d bytes overflow", sb.DataBlocks, sb.DataBlockSize)
	}
	salt := "-"
	if len(sb.Salt) > 0 {
		salt = fmt.Sprintf("%x", sb.Salt)
	}
	opts := []string{"root_hash_sig_key_desc", sigKeyDesc}
	switch onCorruption {
	case bootconfig.CorruptionRestart:
		opts = append(opts, "restart_on_corruption")
	case bootconfig.CorruptionPanic:
		opts = append(opts, "panic_on_corruption")
	}
	params := fmt.Sprintf("%d %s %s %d %d %d 1 %s %x %s %d %s", sb.HashType, dataDev, hashDev,
		sb.DataBlockSize, sb.HashBlockSize, sb.DataBlocks, sb.Algorithm, rootHash, salt, len(opts), strings.Join(opts, " "))
	return dm.Target{Start: 0, Length: sb.DataBlocks * uint64(sb.DataBlockSize) / 512, Type: "verity", Params: params}, nil
}

func openVerity(slot *UsrSlot, st Settings) (string, error) {
	f, err := os.Open(slot.Verity.Dev)
	if err != nil {
		return "", err
	}
	sb, err := verity.ReadSuperblock(f, 0)
	f.Close()
	if err != nil {
		return "", fmt.Errorf("%s: %w", slot.Verity.Dev, err)
	}
	if slot.Usr.LastLBA < slot.Usr.FirstLBA || slot.Usr.LastLBA-slot.Usr.FirstLBA >= math.MaxUint64/4096 {
		return "", fmt.Errorf("%s: bad GPT range %d-%d", slot.Usr.Dev, slot.Usr.FirstLBA, slot.Usr.LastLBA)
	}
	dataBytes := (slot.Usr.LastLBA - slot.Usr.FirstLBA + 1) * 512
	if sb.DataBlocks > dataBytes*8/uint64(sb.DataBlockSize) { // generous: sector size may be 4096
		return "", fmt.Errorf("verity superblock: %d data blocks do not fit in %s", sb.DataBlocks, slot.Usr.Dev)
	}
	sig, err := slot.Signature.SignatureBytes()
	if err != nil {
		return "", err
	}
	desc := fmt.Sprintf("osguard:usr:%x", st.UsrHash)
	if _, err := keyring.AddUser(desc, sig); err != nil {
		return "", err
	}
	t, err := VerityTable(sb, devNum(slot.Usr), devNum(slot.Verity), st.UsrHash, desc, st.OnCorruption)
	if err != nil {
		return "", err
	}
	// DM UUIDs hold at most 128 characters; 32 bytes of hash identify it.
	dev, err := dm.Create(UsrDMName, fmt.Sprintf("OSGUARD-USR-%x", st.UsrHash[:min(len(st.UsrHash), 32)]))
	if err != nil {
		return "", err
	}
	if err := dm.Load(UsrDMName, true, []dm.Target{t}); err != nil {
		dm.Remove(UsrDMName)
		if errors.Is(err, unix.ENOKEY) {
			return "", fmt.Errorf("the kernel refused the signature of the usr root hash (ENOKEY: its signer is not in the .platform keyring, i.e. not in UEFI db): %w", err)
		}
		return "", fmt.Errorf("the kernel refused the dm-verity table: %w", err)
	}
	if err := dm.Resume(UsrDMName); err != nil {
		dm.Remove(UsrDMName)
		return "", err
	}
	node := "/dev/mapper/" + UsrDMName
	os.MkdirAll("/dev/mapper", 0o755)
	if _, err := os.Stat(node); err != nil {
		if err := unix.Mknod(node, unix.S_IFBLK|0o600, int(unix.Mkdev(dev.Major, dev.Minor))); err != nil {
			return "", fmt.Errorf("mknod %s: %w", node, err)
		}
	}
	back, err := dm.Table(UsrDMName)
	if err != nil || len(back) != 1 || back[0].Type != "verity" || !strings.Contains(back[0].Params, "root_hash_sig_key_desc") {
		return "", fmt.Errorf("usr table read back as %v (%v)", back, err)
	}
	return back[0].String(), nil
}

func devNum(p Partition) string { return fmt.Sprintf("%d:%d", p.Major, p.Minor) }

func mountSysroot(log *Logger) error {
	if err := mount("tmpfs", Sysroot, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return err
	}
	if err := mount("/dev/mapper/"+UsrDMName, Sysroot+"/usr", "erofs", unix.MS_RDONLY|unix.MS_NODEV, ""); err != nil {
		return err
	}
	for _, d := range []struct {
		name string
		mode fs.FileMode
	}{{"dev", 0o755}, {"proc", 0o555}, {"sys", 0o555}, {"run", 0o755}, {"tmp", 0o1777}, {"var", 0o755}, {"root", 0o700}, {"home", 0o755}, {"srv", 0o755}, {"etc", 0o755}} {
		p := filepath.Join(Sysroot, d.name)
		if err := os.Mkdir(p, d.mode); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		os.Chmod(p, d.mode) // Mkdir applies the umask; sticky bit needs chmod
	}
	// Merged /usr: the top-level program and library directories live on
	// the verity volume.
	for _, l := range []string{"bin", "sbin", "lib", "lib64"} {
		if _, err := os.Lstat(filepath.Join(Sysroot, "usr", l)); err == nil {
			if err := os.Symlink("usr/"+l, filepath.Join(Sysroot, l)); err != nil {
				return err
			}
		}
	}
	factory := filepath.Join(Sysroot, "usr/share/factory/etc")
	if _, err := os.Stat(factory); err == nil {
		n, err := copyTree(factory, filepath.Join(Sysroot, "etc"))
		if err != nil {
			return fmt.Errorf("copy factory /etc: %w", err)
		}
		log.Printf("/etc: %d entries from /usr/share/factory/etc", n)
	}
	if err := mountVar(log); err != nil {
		return err
	}
	log.Printf("/usr: erofs on /dev/mapper/%s, read-only; / is tmpfs", UsrDMName)
	return nil
}

// mountVar mounts the first DPS var partition when there is one and it
// holds an ext4 file system (the kernel has ext4 built in).
func mountVar(log *Logger) error {
	parts, err := DefaultSys.Partitions()
	if err != nil {
		return err
	}
	for _, p := range parts {
		if p.Type != disk.TypeVar {
			continue
		}
		if !isExt4(p.Dev) {
			log.Printf("var partition %s holds no ext4 file system; /var stays on the tmpfs root", p.Dev)
			return nil
		}
		if err := mount(p.Dev, Sysroot+"/var", "ext4", unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
			return err
		}
		log.Printf("/var: %s (ext4)", p.Dev)
		return nil
	}
	return nil
}

func isExt4(dev string) bool {
	f, err := os.Open(dev)
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, 2)
	if _, err := f.ReadAt(b, 1024+56); err != nil {
		return false
	}
	return b[0] == 0x53 && b[1] == 0xef
}

// copyTree copies regular files, directories and symlinks, keeping modes.
func copyTree(src, dst string) (int, error) {
	n := 0
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.MkdirAll(to, 0o755); err != nil {
				return err
			}
			return os.Chmod(to, info.Mode().Perm()|info.Mode()&fs.ModeSticky)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			n++
			return os.Symlink(target, to)
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			n++
			if err := os.WriteFile(to, b, info.Mode().Perm()); err != nil {
				return err
			}
			return os.Chmod(to, info.Mode().Perm())
		}
		return nil
	})
	return n, err
}

func writeOnce(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(data) // one write(): securityfs files parse each write whole
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func loadIPE(log *Logger, st Settings) error {
	if st.IPEPolicy == "" {
		log.Printf("no IPE policy in this initramfs; skipped")
		return nil
	}
	pol, err := os.ReadFile(bootconfig.IPEPolicyPath)
	if err != nil {
		return err
	}
	if _, err := os.Stat(ipeDir); err != nil {
		return fmt.Errorf("the kernel does not run IPE (%s): %w", ipeDir, err)
	}
	if err := writeOnce(ipeDir+"/new_policy", pol); err != nil {
		if errors.Is(err, unix.ENOKEY) {
			return fmt.Errorf("the kernel refused the IPE policy signature (ENOKEY: signer not in .platform): %w", err)
		}
		return fmt.Errorf("the kernel refused the IPE policy: %w", err)
	}
	if err := writeOnce(filepath.Join(ipeDir, "policies", st.IPEPolicy, "active"), []byte("1")); err != nil {
		return err
	}
	enforce := []byte("1")
	if st.IPE == bootconfig.IPEAudit {
		enforce = []byte("0")
	}
	if err := writeOnce(ipeDir+"/enforce", enforce); err != nil {
		return err
	}
	log.Printf("IPE policy %q active, mode %s", st.IPEPolicy, st.IPE)
	return nil
}

func loadSELinux(log *Logger, st Settings) error {
	lsm, _ := os.ReadFile(securityfs + "/lsm")
	running := strings.Contains(","+string(lsm)+",", ",selinux,")
	pol, polErr := os.ReadFile(bootconfig.SELinuxPolicyPath)
	if written, err := setConfigMode(selinuxConfig, st.SELinux); err != nil {
		return fmt.Errorf("SELinux: %s: %w", selinuxConfig, err)
	} else if written != "" {
		log.Printf("SELinux: /etc/selinux/config says SELINUX=%s", written)
	}
	switch {
	case st.SELinux == bootconfig.SELinuxOff:
		log.Printf("SELinux off by configuration (kernel runs it: %v)", running)
		return nil
	case !running:
		if st.SELinux == bootconfig.SELinuxEnforcing {
			return errors.New("SELinux enforcing is configured but the kernel does not run SELinux (lsm= on the command line)")
		}
		log.Printf("WARNING: SELinux %s is configured but the kernel does not run it", st.SELinux)
		return nil
	case polErr != nil:
		return fmt.Errorf("SELinux %s is configured but there is no policy: %w", st.SELinux, polErr)
	}
	if err := mount("selinuxfs", selinuxfs, "selinuxfs", unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil {
		return err
	}
	if err := writeOnce(selinuxfs+"/load", pol); err != nil {
		return err
	}
	mode := []byte("0")
	if st.SELinux == bootconfig.SELinuxEnforcing {
		mode = []byte("1")
	}
	if err := writeOnce(selinuxfs+"/enforce", mode); err != nil {
		return err
	}
	log.Printf("SELinux policy loaded (%d bytes), %s", len(pol), st.SELinux)
	if !haveFileContexts() {
		log.Printf("no file contexts in this initramfs: the tmpfs root, /run and /dev stay unlabelled")
		return nil
	}
	start := time.Now()
	n, err := labelFiles(bootconfig.SELinuxFileContextsPath, labelTrees)
	if err != nil {
		return fmt.Errorf("SELinux labels: %w", err)
	}
	log.Printf("SELinux: labelled %d files of /, /run and /dev in %s", n, time.Since(start).Round(time.Millisecond))
	return nil
}

// switchRoot moves the API mounts into the new root, frees the initramfs,
// makes the new root / and execs init there (what util-linux switch_root
// does).
func switchRoot(init string) error {
	if _, err := os.Stat(filepath.Join(Sysroot, init)); err != nil {
		// Stat follows the absolute symlinks of the new root wrongly;
		// Lstat of the path is enough to fail early on a missing init.
		if _, err2 := os.Lstat(filepath.Join(Sysroot, init)); err2 != nil {
			return fmt.Errorf("userland init %s: %w", init, err)
		}
	}
	for _, m := range []string{"/dev", "/proc", "/sys", "/run"} {
		if err := unix.Mount(m, Sysroot+m, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s: %w", m, err)
		}
	}
	if err := os.Chdir(Sysroot); err != nil {
		return err
	}
	freeInitramfs()
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move %s to /: %w", Sysroot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	return unix.Exec(init, []string{init}, []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TERM=linux"})
}

// freeInitramfs deletes the initramfs's files (it is a ramfs whose memory
// is only given back that way), staying on its own file system.
func freeInitramfs() {
	var root unix.Stat_t
	if unix.Lstat("/", &root) != nil {
		return
	}
	var walk func(dir string)
	walk = func(dir string) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return
		}
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			var st unix.Stat_t
			if unix.Lstat(p, &st) != nil || st.Dev != root.Dev {
				continue // a mount point: /sysroot and the moved API mounts
			}
			if e.IsDir() {
				walk(p)
				unix.Rmdir(p)
			} else {
				unix.Unlink(p)
			}
		}
	}
	walk("/")
}
