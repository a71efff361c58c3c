package update

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
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
}

// ApplyResult reports an applied update.
type ApplyResult struct {
	Manifest       *Manifest
	Slot, FromSlot string
	FromVersion    string
	BootEntry      uint16
	Bytes          int64 // payload bytes written
	UsrDuration    time.Duration
	UsrBytes       int64
	Duration       time.Duration
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

// openSource opens a bundle file, device or URL, and says how long it is
// (-1 when unknown).
func openSource(ctx context.Context, src string) (io.ReadCloser, int64, error) {
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return nil, 0, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, 0, fmt.Errorf("update: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, 0, fmt.Errorf("update: %s: %s", src, resp.Status)
		}
		return resp.Body, resp.ContentLength, nil
	}
	f, err := os.Open(src)
	if err != nil {
		return nil, 0, fmt.Errorf("update: %w", err)
	}
	// Seeking to the end gives the size of a file and of a block device.
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		size = -1
	} else if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("update: %w", err)
	}
	return f, size, nil
}

// Apply verifies a bundle against the node's UEFI db, writes it to the
// inactive slot and arranges its trial boot. Nothing is written before the
// manifest's signature, the versions and the layout have been checked.
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
	src, srcSize, err := openSource(ctx, o.Source)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	br, err := Open(src, sb.DB)
	if err != nil {
		return nil, err
	}
	if srcSize >= 0 && srcSize < br.Size {
		return nil, fmt.Errorf("update: the bundle is truncated: %s has %d bytes, the manifest describes %d", o.Source, srcSize, br.Size)
	}
	m := br.Manifest
	logf("bundle %s %s verified: signed by %s", m.Image.Name, m.Image.Version, br.Signer.Subject)

	t, err := findTarget(o, m)
	if err != nil {
		return nil, err
	}
	logf("running %s in slot %s (IPE policy %s); writing slot %s", orUnknown(t.runningVersion), t.runningLetter, orUnknown(t.runningIPE), t.letter)

	res := &ApplyResult{Manifest: m, Slot: t.letter, FromSlot: t.runningLetter, FromVersion: t.runningVersion}
	// The small payloads first, checked before anything is written.
	p, err := br.Next()
	if err != nil {
		return nil, err
	}
	measurements, err := p.ReadAll()
	if err != nil {
		return nil, err
	}
	var meas image.Measurements
	if err := json.Unmarshal(measurements, &meas); err != nil {
		return nil, fmt.Errorf("update: measurements.json: %w", err)
	}
	if meas.Usr.RootHash != m.Usr.RootHash || meas.Version != m.Image.Version {
		return nil, errors.New("update: measurements.json does not describe the manifest's image")
	}
	if p, err = br.Next(); err != nil {
		return nil, err
	}
	sigJSON, err := p.ReadAll()
	if err != nil {
		return nil, err
	}
	if err := checkSignatureJSON(sigJSON, m, sb.DB); err != nil {
		return nil, err
	}

	// From here on the inactive slot is written. Any earlier trial of
	// it is cancelled, and its signature partition is cleared first, so
	// that no partial state can boot.
	if err := efiboot.ClearBootNext(vars); err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	if err := vars.Delete(trialVar); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("update: %w", err)
	}
	if err := zeroPartition(t.sig); err != nil {
		return nil, err
	}
	logf("cleared %s (%s)", t.sig.Dev, t.sig.Name)
	for _, w := range []struct {
		part bootinit.Partition
		name string
	}{{t.usr, PayloadUsr}, {t.ver, PayloadVerity}} {
		p, err := br.Next()
		if err != nil {
			return nil, err
		}
		if p.P.Name != w.name {
			return nil, fmt.Errorf("update: payload %s where %s belongs", p.P.Name, w.name)
		}
		t1 := time.Now()
		if err := writePartition(w.part, p); err != nil {
			return nil, err
		}
		if w.name == PayloadUsr {
			res.UsrDuration, res.UsrBytes = time.Since(t1), p.P.Size
		}
		res.Bytes += p.P.Size
		logf("wrote %s: %d bytes to %s (%s) in %.1fs", w.name, p.P.Size, w.part.Dev, w.part.Name, time.Since(t1).Seconds())
	}
	usrUUID, err := disk.ParseGUID(m.Usr.PartUUID)
	if err != nil {
		return nil, err
	}
	verUUID, err := disk.ParseGUID(m.Usr.VerityPartUUID)
	if err != nil {
		return nil, err
	}
	if err := setUUIDs(t.usr.Disk, map[int]disk.GUID{t.usr.Index: usrUUID, t.ver.Index: verUUID}); err != nil {
		return nil, err
	}
	logf("GPT: %s is now %s, %s %s", t.usr.Name, usrUUID, t.ver.Name, verUUID)
	if err := writeSmall(t.sig, sigJSON); err != nil {
		return nil, err
	}
	res.Bytes += int64(len(sigJSON))
	logf("wrote the root-hash signature to %s (%s)", t.sig.Dev, t.sig.Name)

	// The UKI and the slot's measurements go to the ESP.
	mnt, err := esp.Mount(t.esp.Disk, false)
	if err != nil {
		return nil, err
	}
	defer mnt.Close()
	p, err = br.Next()
	if err != nil {
		return nil, err
	}
	ukiPath := esp.SlotUKIPath(t.letter)
	if err := writeESPFile(mnt.Path(ukiPath), p); err != nil {
		return nil, err
	}
	res.Bytes += p.P.Size
	logf("wrote the UKI to the ESP: %s (%d bytes)", ukiPath, p.P.Size)
	if err := writeESPFile(mnt.Path(esp.SlotMeasurementsPath(t.letter)), bytes.NewReader(measurements)); err != nil {
		return nil, err
	}
	opt := efiboot.LoadOption{
		Attributes: efiboot.LoadOptionActive, Description: "osguard slot " + t.letter,
		Disk: efiboot.HardDrive{Number: uint32(t.esp.Index), StartLBA: t.esp.FirstLBA, SizeLBA: t.esp.LastLBA - t.esp.FirstLBA + 1,
			PartUUID: mustSBGUID(t.esp.UUID.String())},
		Path: efiboot.ESPPath(ukiPath),
	}
	n, err := efiboot.SetEntry(vars, opt)
	if err != nil {
		return nil, fmt.Errorf("update: boot entry: %w", err)
	}
	res.BootEntry = n
	st := &node.UpdateState{LastResult: node.UpdateApplied, Slot: t.letter, Version: m.Image.Version,
		FromSlot: t.runningLetter, FromVersion: t.runningVersion, BootEntry: n}
	if err := node.WriteUpdateState(mnt.Dir, st); err != nil {
		return nil, fmt.Errorf("update: state: %w", err)
	}
	if err := mnt.Close(); err != nil {
		return nil, err
	}
	// Last: the marker osguard-init reads, then BootNext.
	var num [2]byte
	num[0], num[1] = byte(n), byte(n>>8)
	if err := vars.Set(trialVar, efiboot.VarAttrs, num[:]); err != nil {
		return nil, fmt.Errorf("update: trial marker: %w", err)
	}
	if err := efiboot.SetBootNext(vars, n); err != nil {
		return nil, fmt.Errorf("update: BootNext: %w", err)
	}
	logf("Boot%04X %q → %s; BootNext=%04X: the next boot tries slot %s once", n, opt.Description, opt.Path, n, t.letter)
	res.Duration = time.Since(t0)
	return res, nil
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

// writePartition streams verified chunks to the start of a partition.
func writePartition(part bootinit.Partition, p *PayloadReader) error {
	defer p.Close()
	f, err := openPart(part)
	if err != nil {
		return err
	}
	for {
		c, err := p.NextChunk()
		if err == io.EOF {
			return syncClose(f, part)
		}
		if err != nil { // the bundle's fault: the chunk was not written
			f.Close()
			return err
		}
		if _, err := f.Write(c); err != nil {
			f.Close()
			return fmt.Errorf("update: write %s (%s): %w", part.Dev, part.Name, err)
		}
	}
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
