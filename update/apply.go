package update

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/osguard/osguard/disk"
	"github.com/osguard/osguard/image"
	"github.com/osguard/osguard/initrd/bootconfig"
	"github.com/osguard/osguard/internal/bootinit"
	"github.com/osguard/osguard/internal/efiboot"
	"github.com/osguard/osguard/internal/esp"
	"github.com/osguard/osguard/node"
	"github.com/osguard/osguard/secureboot"
	"github.com/osguard/osguard/verity"
)

// ErrRefused wraps the reasons apply declines a valid bundle: a version
// that is not newer, another architecture or disk layout.
var ErrRefused = errors.New("update: refused")

// ApplyOptions say what to apply.
type ApplyOptions struct {
	// Source is a bundle file, a block device holding one, or an http(s) URL.
	Source string
	// AllowDowngrade accepts an image version and an IPE policy version
	// that are not higher than the running ones.
	AllowDowngrade bool
	// Log receives one line per step (nil: quiet).
	Log io.Writer
	// Efivars is efivarfs (default /sys/firmware/efi/efivars).
	Efivars string
	// Securityfs is where IPE lives (default /sys/kernel/security).
	Securityfs string
	// SpoolDir holds the copy of a bundle that cannot be read twice (a
	// URL, a pipe) while it is verified: an unlinked file, gone when apply
	// ends. Default DefaultSpoolDir.
	SpoolDir string
}

// ApplyResult reports an applied update.
type ApplyResult struct {
	Manifest       *Manifest
	Slot, FromSlot string
	FromVersion    string
	BootEntry      uint16
	Bytes          int64 // payload bytes written
	// VerifyDuration is the verification pass (the whole bundle read and
	// checked), UsrDuration the write of the usr payload in the write pass.
	VerifyDuration time.Duration
	UsrDuration    time.Duration
	UsrBytes       int64
	// RecheckedUsr says the write pass checked usr again, because its
	// source could change between the passes.
	RecheckedUsr bool
	Duration     time.Duration
}

// trialVar is the marker osguard-init reads (bootconfig.TrialVarName).
var trialVar = secureboot.Variable{Name: bootconfig.TrialVarName, GUID: mustSBGUID(bootconfig.TrialVarGUID)}

func mustSBGUID(s string) secureboot.GUID {
	g, err := secureboot.ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

// target is the inactive slot apply writes.
type target struct {
	letter         string
	usr, ver, sig  bootinit.Partition
	running        *bootinit.UsrSlot
	runningLetter  string
	runningVersion string
	runningIPE     string
	esp            bootinit.Partition
}

// applier is apply's view of the node: its db and UEFI variables, the
// slot to write, the disk's GPT and the ESP. Apply uses the running
// node's; the unit tests put regular files and a directory in their place.
type applier struct {
	db       []*x509.Certificate
	vars     efiboot.Vars
	target   func(*Manifest) (*target, error)
	setUUIDs func(diskDev string, uuids map[int]disk.GUID) error
	// mountESP mounts the ESP of a disk read-write: its directory and how
	// to unmount it.
	mountESP func(diskDev string) (dir string, unmount func() error, err error)
	logf     func(format string, args ...any)
}

// Apply verifies a bundle against the node's UEFI db, writes it to the
// inactive slot and arranges its trial boot. It reads the bundle twice:
// the first pass checks the manifest's signature, the versions, the
// layout and every payload byte, and writes nothing (but a spool, see
// ApplyOptions.SpoolDir); the second pass checks every byte again as it
// writes.
func Apply(ctx context.Context, o ApplyOptions) (*ApplyResult, error) {
	t0 := time.Now()
	logf := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, "[%5.1fs] %s\n", time.Since(t0).Seconds(), fmt.Sprintf(format, args...))
		}
	}
	if o.Efivars == "" {
		o.Efivars = secureboot.DefaultEfivarfs
	}
	if o.Securityfs == "" {
		o.Securityfs = "/sys/kernel/security"
	}
	vars := secureboot.Efivarfs{Dir: o.Efivars}
	sb, err := secureboot.ReadState(vars)
	if err != nil {
		return nil, fmt.Errorf("update: read the UEFI db: %w", err)
	}
	if len(sb.DB) == 0 {
		return nil, errors.New("update: no certificates in the UEFI db to check the bundle with (not booted through UEFI with osguard's keys?)")
	}
	if !sb.Enforcing() {
		logf("warning: Secure Boot is not enforcing (SecureBoot=%v SetupMode=%v): db can be changed by anyone", sb.SecureBoot, sb.SetupMode)
	}
	src, err := openSource(ctx, o.Source, o.SpoolDir)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	a := &applier{
		db: sb.DB, vars: vars, logf: logf, setUUIDs: setUUIDs,
		target: func(m *Manifest) (*target, error) { return findTarget(o, m) },
		mountESP: func(diskDev string) (string, func() error, error) {
			m, err := esp.Mount(diskDev, false)
			if err != nil {
				return "", nil, err
			}
			return m.Dir, m.Close, nil
		},
	}
	res, err := a.apply(ctx, src)
	if err != nil {
		return nil, err
	}
	res.Duration = time.Since(t0)
	return res, nil
}

// errChanged is the write pass finding other bytes than the verification
// pass read, or a bundle file opened for writing during apply.
var errChanged = errors.New("update: the bundle changed after it was verified")

// maxKeptUKI is the largest UKI the verification pass keeps in memory for
// the write pass; a larger one is read and checked again.
const maxKeptUKI = 256 << 20

// apply runs the two passes over src.
func (a *applier) apply(ctx context.Context, src *source) (*ApplyResult, error) {
	// The verification pass: nothing is written to a partition, the ESP
	// or a UEFI variable before it has read the whole bundle.
	t1 := time.Now()
	br, err := Open(src.verify, a.db)
	if err != nil {
		return nil, err
	}
	if src.size >= 0 && src.size < br.Size {
		return nil, fmt.Errorf("update: the bundle is truncated: %s has %d bytes, the manifest describes %d", src.name, src.size, br.Size)
	}
	m := br.Manifest
	a.logf("bundle %s %s: manifest signed by %s", m.Image.Name, m.Image.Version, br.Signer.Subject)
	t, err := a.target(m)
	if err != nil {
		return nil, err
	}
	a.logf("running %s in slot %s (IPE policy %s); slot %s is to be written", orUnknown(t.runningVersion), t.runningLetter, orUnknown(t.runningIPE), t.letter)
	v, err := verifyPayloads(ctx, br)
	if err != nil {
		return nil, fmt.Errorf("%w; nothing was written", err)
	}
	var meas image.Measurements
	if err := json.Unmarshal(v.measurements, &meas); err != nil {
		return nil, fmt.Errorf("update: measurements.json: %w", err)
	}
	if meas.Usr.RootHash != m.Usr.RootHash || meas.Version != m.Image.Version {
		return nil, errors.New("update: measurements.json does not describe the manifest's image")
	}
	if err := checkSignatureJSON(v.sigJSON, m, a.db); err != nil {
		return nil, err
	}
	if err := src.changed(); err != nil {
		return nil, fmt.Errorf("%w; nothing was written", err)
	}
	res := &ApplyResult{Manifest: m, Slot: t.letter, FromSlot: t.runningLetter, FromVersion: t.runningVersion,
		VerifyDuration: time.Since(t1), RecheckedUsr: src.stable == ""}
	how := "in place"
	if src.spooled {
		how = "while spooling it to an unlinked file"
	}
	a.logf("verified every byte of the bundle (%d bytes, %s) in %.1fs", br.Size, how, res.VerifyDuration.Seconds())

	// The write pass. What the verification pass holds in memory (the
	// small payloads, the hash tree, the UKI) is written from there; usr
	// is read again, and checked again unless its source cannot change
	// (src.stable). Should a check fail, the write stops; the signature
	// partition was cleared first and is written after every other byte
	// of the slot and its UKI, so the slot is never bootable, and the boot
	// entry and BootNext are set only after that.
	if res.RecheckedUsr {
		a.logf("%s can change, so the write pass checks every block of usr again", src.name)
	} else {
		a.logf("%s is %s: the write pass reads usr again without checking it twice", src.name, src.stable)
	}
	usr, err := br.PayloadAt(src.at, PayloadUsr, res.RecheckedUsr)
	if err != nil {
		return nil, err
	}
	defer usr.Close()

	// From here on the inactive slot is written. Any earlier trial of
	// it is cancelled, and its signature partition is cleared first, so
	// that no partial state can boot.
	if err := efiboot.ClearBootNext(a.vars); err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	for _, v := range []secureboot.Variable{trialVar, watchdogVar} {
		if err := a.vars.Delete(v); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("update: %w", err)
		}
	}
	if err := zeroPartition(t.sig); err != nil {
		return nil, err
	}
	a.logf("cleared %s (%s)", t.sig.Dev, t.sig.Name)
	unbootable := func(err error) error {
		return fmt.Errorf("%w (slot %s is left without its root-hash signature, so nothing boots it; apply again)", err, t.letter)
	}
	t2 := time.Now()
	if err := writePartition(t.usr, usr); err != nil {
		if usr.Err() != nil {
			err = fmt.Errorf("%w: %w", errChanged, err)
		}
		return nil, unbootable(err)
	}
	res.UsrDuration, res.UsrBytes = time.Since(t2), usr.P.Size
	res.Bytes += usr.P.Size
	a.logf("wrote usr: %d bytes to %s (%s) in %.1fs", usr.P.Size, t.usr.Dev, t.usr.Name, res.UsrDuration.Seconds())
	if err := src.changed(); err != nil {
		return nil, unbootable(err)
	}
	verityImage := br.VerityImage()
	if err := writeSmall(t.ver, verityImage); err != nil {
		return nil, unbootable(err)
	}
	res.Bytes += int64(len(verityImage))
	a.logf("wrote usr-verity: %d bytes to %s (%s)", len(verityImage), t.ver.Dev, t.ver.Name)
	usrUUID, err := disk.ParseGUID(m.Usr.PartUUID)
	if err != nil {
		return nil, unbootable(err)
	}
	verUUID, err := disk.ParseGUID(m.Usr.VerityPartUUID)
	if err != nil {
		return nil, unbootable(err)
	}
	if err := a.setUUIDs(t.usr.Disk, map[int]disk.GUID{t.usr.Index: usrUUID, t.ver.Index: verUUID}); err != nil {
		return nil, unbootable(err)
	}
	a.logf("GPT: %s is now %s, %s %s", t.usr.Name, usrUUID, t.ver.Name, verUUID)
	// The UKI and the slot's measurements go to the ESP.
	dir, unmount, err := a.mountESP(t.esp.Disk)
	if err != nil {
		return nil, err
	}
	mounted := true
	defer func() {
		if mounted {
			unmount()
		}
	}()
	var uki io.Reader = bytes.NewReader(v.uki)
	ukiSize := m.Payload(PayloadUKI).Size
	if v.uki == nil { // too large to keep: read and check again
		p, err := br.PayloadAt(src.at, PayloadUKI, true)
		if err != nil {
			return nil, unbootable(err)
		}
		defer p.Close()
		uki = p
	}
	ukiPath := esp.SlotUKIPath(t.letter)
	if err := writeESPFile(dir+ukiPath, uki); err != nil {
		if p, ok := uki.(*PayloadReader); ok && p.Err() != nil {
			err = fmt.Errorf("%w: %w", errChanged, err)
		}
		return nil, unbootable(err)
	}
	res.Bytes += ukiSize
	a.logf("wrote the UKI to the ESP: %s (%d bytes)", ukiPath, ukiSize)
	if err := writeESPFile(dir+esp.SlotMeasurementsPath(t.letter), bytes.NewReader(v.measurements)); err != nil {
		return nil, unbootable(err)
	}
	// The slot's last byte: its root-hash signature.
	if err := writeSmall(t.sig, v.sigJSON); err != nil {
		return nil, unbootable(err)
	}
	res.Bytes += int64(len(v.sigJSON))
	a.logf("wrote the root-hash signature to %s (%s)", t.sig.Dev, t.sig.Name)
	opt := efiboot.LoadOption{
		Attributes: efiboot.LoadOptionActive, Description: "osguard slot " + t.letter,
		Disk: efiboot.HardDrive{Number: uint32(t.esp.Index), StartLBA: t.esp.FirstLBA, SizeLBA: t.esp.LastLBA - t.esp.FirstLBA + 1,
			PartUUID: mustSBGUID(t.esp.UUID.String())},
		Path: efiboot.ESPPath(ukiPath),
	}
	n, err := efiboot.SetEntry(a.vars, opt)
	if err != nil {
		return nil, fmt.Errorf("update: boot entry: %w", err)
	}
	res.BootEntry = n
	st := &node.UpdateState{LastResult: node.UpdateApplied, Slot: t.letter, Version: m.Image.Version,
		FromSlot: t.runningLetter, FromVersion: t.runningVersion, BootEntry: n}
	if err := node.WriteUpdateState(dir, st); err != nil {
		return nil, fmt.Errorf("update: state: %w", err)
	}
	mounted = false
	if err := unmount(); err != nil {
		return nil, err
	}
	// Last: the marker osguard-init reads, then BootNext.
	var num [2]byte
	num[0], num[1] = byte(n), byte(n>>8)
	if err := a.vars.Set(trialVar, efiboot.VarAttrs, num[:]); err != nil {
		return nil, fmt.Errorf("update: trial marker: %w", err)
	}
	if err := efiboot.SetBootNext(a.vars, n); err != nil {
		return nil, fmt.Errorf("update: BootNext: %w", err)
	}
	a.logf("Boot%04X %q → %s; BootNext=%04X: the next boot tries slot %s once", n, opt.Description, opt.Path, n, t.letter)
	return res, nil
}

// verified is what the verification pass keeps for the write pass.
type verified struct {
	measurements, sigJSON []byte
	uki                   []byte // nil when larger than maxKeptUKI
}

// verifyPayloads is the rest of the verification pass: it reads every
// payload of br to its end, each chunk checked against the signed
// manifest (usr against the hash tree), and keeps the small ones and the
// UKI.
func verifyPayloads(ctx context.Context, br *Reader) (*verified, error) {
	v := &verified{}
	for {
		p, err := br.Next()
		if err == io.EOF {
			return v, nil
		}
		if err != nil {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			p.Close()
			return nil, fmt.Errorf("update: %w", err)
		}
		switch {
		case p.P.Name == PayloadMeasurements:
			v.measurements, err = p.ReadAll()
		case p.P.Name == PayloadSignature:
			v.sigJSON, err = p.ReadAll()
		case p.P.Name == PayloadUKI && p.P.Size <= maxKeptUKI:
			v.uki, err = p.ReadAll()
		default:
			_, err = p.WriteTo(io.Discard)
		}
		if err != nil {
			p.Close()
			return nil, err
		}
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// findTarget checks that the bundle suits this node and finds the slot to
// write.
func findTarget(o ApplyOptions, m *Manifest) (*target, error) {
	if arch := map[string]string{"amd64": "x86-64"}[runtime.GOARCH]; m.Architecture != arch {
		return nil, fmt.Errorf("%w: the bundle is for %s, this node is %s", ErrRefused, m.Architecture, arch)
	}
	running, letter, err := node.RunningSlot()
	if err != nil {
		return nil, fmt.Errorf("update: which slot is running: %w", err)
	}
	if running.Signature.RootHash == m.Usr.RootHash {
		return nil, fmt.Errorf("%w: the node already runs this image (root hash %s) in slot %s", ErrRefused, m.Usr.RootHash, letter)
	}
	t := &target{running: running, runningLetter: letter}
	if mnt, err := esp.Mount(running.Usr.Disk, true); err == nil {
		if b, _, err := node.ReadSlotMeasurements(mnt.Dir, running.Signature.RootHash); err == nil {
			var rm image.Measurements
			if json.Unmarshal(b, &rm) == nil && rm.Usr.RootHash == running.Signature.RootHash {
				t.runningVersion = rm.Version
			}
		}
		mnt.Close()
	}
	if _, v, err := node.ActiveIPEPolicy(o.Securityfs); err == nil {
		t.runningIPE = v
	}
	if !o.AllowDowngrade {
		if t.runningVersion == "" {
			return nil, fmt.Errorf("%w: the running image's version is unknown (no measurements.json for root hash %s on the ESP); --allow-downgrade skips the check", ErrRefused, running.Signature.RootHash)
		}
		c, err := CompareVersions(m.Image.Version, t.runningVersion)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrRefused, err)
		}
		if c <= 0 {
			return nil, fmt.Errorf("%w: version %s is not newer than the running %s (--allow-downgrade to install it anyway)", ErrRefused, m.Image.Version, t.runningVersion)
		}
		if t.runningIPE == "" {
			return nil, fmt.Errorf("%w: no active IPE policy to compare the bundle's policy version with", ErrRefused)
		}
		if c, err := CompareVersions(m.IPE.PolicyVersion, t.runningIPE); err != nil || c <= 0 {
			return nil, fmt.Errorf("%w: IPE policy version %s is not higher than the running %s (--allow-downgrade to install it anyway)", ErrRefused, m.IPE.PolicyVersion, t.runningIPE)
		}
	}
	other := map[string]string{"A": "B", "B": "A"}[letter]
	if other == "" {
		return nil, fmt.Errorf("%w: the running usr partition %q is not usr-A or usr-B", ErrRefused, running.Usr.Name)
	}
	t.letter = other
	parts, err := bootinit.DefaultSys.Partitions()
	if err != nil {
		return nil, err
	}
	var found int
	for _, p := range parts {
		if p.Disk != running.Usr.Disk {
			continue
		}
		switch {
		case p.Type == disk.TypeUsrX86_64 && p.Name == "usr-"+other:
			t.usr, found = p, found|1
		case p.Type == disk.TypeUsrX86_64Verity && p.Name == "usr-"+other+"-verity":
			t.ver, found = p, found|2
		case p.Type == disk.TypeUsrX86_64VeritySig && p.Name == "usr-"+other+"-verity-sig":
			t.sig, found = p, found|4
		case p.Type == disk.TypeESP && t.esp.Dev == "":
			t.esp, found = p, found|8
		}
	}
	if found != 15 {
		return nil, fmt.Errorf("%w: this disk has no complete slot %s (usr-%s, usr-%s-verity, usr-%s-verity-sig) and ESP: it was built with one slot (another disk layout)", ErrRefused, other, other, other, other)
	}
	for _, p := range []bootinit.Partition{t.usr, t.ver, t.sig} {
		for _, r := range []bootinit.Partition{running.Usr, running.Verity, running.Sig} {
			if p.Dev == r.Dev {
				return nil, fmt.Errorf("update: slot %s shares %s with the running slot", other, p.Dev)
			}
		}
	}
	for _, c := range []struct {
		name string
		need int64
		part bootinit.Partition
	}{
		{PayloadUsr, m.Payload(PayloadUsr).Size, t.usr},
		{PayloadVerity, m.Payload(PayloadVerity).Size, t.ver},
		{PayloadSignature, m.Payload(PayloadSignature).Size, t.sig},
	} {
		if have := int64(c.part.LastLBA-c.part.FirstLBA+1) * 512; c.need > have {
			return nil, fmt.Errorf("%w: built for another disk layout: the %s payload (%d bytes) does not fit %s (%s, %d bytes)", ErrRefused, c.name, c.need, c.part.Dev, c.part.Name, have)
		}
	}
	return t, nil
}

// checkSignatureJSON checks the DPS signature JSON the bundle carries: the
// manifest's root hash, signed by a db certificate (the kernel checks it
// again at boot).
func checkSignatureJSON(b []byte, m *Manifest, db []*x509.Certificate) error {
	sj, err := verity.ParseSignatureJSON(b)
	if err != nil {
		return fmt.Errorf("update: usr-verity-sig: %w", err)
	}
	if sj.RootHash != m.Usr.RootHash {
		return fmt.Errorf("update: usr-verity-sig is for root hash %s, the manifest says %s", sj.RootHash, m.Usr.RootHash)
	}
	for _, c := range db {
		if sj.Verify(c) == nil {
			return nil
		}
	}
	return errors.New("update: usr-verity-sig: the root hash signature does not verify with any db certificate")
}

// openPart opens a partition for writing, and refuses one that is mounted
// or held by device-mapper (O_EXCL on a block device).
func openPart(p bootinit.Partition) (*os.File, error) {
	f, err := os.OpenFile(p.Dev, os.O_WRONLY|unix.O_EXCL, 0)
	if err != nil {
		return nil, fmt.Errorf("update: open %s (%s): %w", p.Dev, p.Name, err)
	}
	return f, nil
}

func syncClose(f *os.File, p bootinit.Partition) error {
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("update: %s (%s): %w", p.Dev, p.Name, err)
	}
	return nil
}

// zeroPartition clears a (small) partition.
func zeroPartition(p bootinit.Partition) error {
	f, err := openPart(p)
	if err != nil {
		return err
	}
	size := int64(p.LastLBA-p.FirstLBA+1) * 512
	if _, err := f.Write(make([]byte, min(size, 4<<20))); err != nil {
		f.Close()
		return fmt.Errorf("update: clear %s: %w", p.Dev, err)
	}
	return syncClose(f, p)
}

// writePartition streams checked chunks to the start of a partition,
// with direct I/O where they are aligned (see directio.go).
func writePartition(part bootinit.Partition, p *PayloadReader) error {
	defer p.Close()
	f, err := openPart(part)
	if err != nil {
		return err
	}
	w := &directWriter{buffered: f, name: fmt.Sprintf("%s (%s)", part.Dev, part.Name)}
	if d, err := os.OpenFile(part.Dev, os.O_WRONLY|unix.O_DIRECT, 0); err == nil {
		w.direct = d
		defer d.Close()
	}
	if _, err := p.WriteTo(w); err != nil {
		f.Close()
		return err
	}
	return syncClose(f, part)
}

// writeSmall writes data at the start of a partition.
func writeSmall(part bootinit.Partition, data []byte) error {
	f, err := openPart(part)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("update: write %s: %w", part.Dev, err)
	}
	return syncClose(f, part)
}

// setUUIDs edits the GPT of the whole disk.
func setUUIDs(diskDev string, uuids map[int]disk.GUID) error {
	f, err := os.OpenFile(diskDev, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	if err := disk.SetPartitionUUIDs(f, uuids); err != nil {
		f.Close()
		return fmt.Errorf("update: %s: %w", diskDev, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writeESPFile replaces a file on the mounted ESP with r's content. The
// file is written in place (the ESP has room for three UKIs, not four); the
// firmware refuses a partial UKI, and nothing boots it before BootNext.
func writeESPFile(path string, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("update: ESP: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("update: ESP: %w", err)
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("update: ESP: %s: %w", filepath.Base(path), err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("update: ESP: %w", err)
	}
	return f.Close()
}
