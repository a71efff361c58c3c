package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/osguard/osguard/disk"
	"github.com/osguard/osguard/internal/artifacts"
	"github.com/osguard/osguard/internal/blobcache"
	"github.com/osguard/osguard/pcr"
	"github.com/osguard/osguard/verity"
)

// BuildOptions say what to build and where.
type BuildOptions struct {
	Config *Config
	// OutDir receives the outputs; it is created when missing.
	OutDir string
	// KeysDir overrides the config's keys. Empty in both: OutDir/keys,
	// generated when missing.
	KeysDir string
	// InitBinary is the static osguard-init; OsguardBinary the static
	// osguard put at /usr/bin/osguard.
	InitBinary, OsguardBinary string
	// Epoch is the build time (SOURCE_DATE_EPOCH), in Unix seconds.
	Epoch int64
	// Progress receives one line per step (nil: quiet).
	Progress io.Writer
	// ToolVersion goes into the SBOMs.
	ToolVersion string
	// CacheDir is where the build keeps what a warm build reuses instead
	// of computing it again (decompressed kernel modules, compressed
	// initramfs archives, SBOMs); empty: the .cache of the checkout.
	// Entries are keyed by all that decides their bytes, so they never
	// change the outputs. (Debian packages, unpacked roots and compiled
	// policies stay in .cache.)
	CacheDir string
}

// Outputs of a build, in OutDir.
const (
	DiskFile         = "disk.raw"
	UKIFile          = "uki.efi"
	PolicyFile       = "ipe.policy"
	SignedPolicyFile = "ipe.policy.p7s"
	MeasurementsFile = "measurements.json"
	SPDXFile         = "sbom.spdx.json"
	CycloneDXFile    = "sbom.cdx.json"
	VarsFile         = "ovmf-vars.fd"
)

// ESPMeasurementsPath is where the ESP carries measurements.json for
// `osguard status` on the node (the file cannot live in /usr or the UKI,
// whose hashes it records).
const ESPMeasurementsPath = "/osguard/measurements.json"

// Measurements is measurements.json: what the node should measure and show.
type Measurements struct {
	Image   string `json:"image"`
	Version string `json:"version"`
	Usr     struct {
		RootHash      string `json:"rootHash"`
		HashAlgorithm string `json:"hashAlgorithm"`
		Salt          string `json:"salt"`
		DataBlocks    uint64 `json:"dataBlocks"`
		DataBlockSize uint32 `json:"dataBlockSize"`
		HashBlockSize uint32 `json:"hashBlockSize"`
		PartUUID      string `json:"partUUID"`
		VerityUUID    string `json:"verityPartUUID"`
	} `json:"usr"`
	PCR11 struct {
		SHA256   string            `json:"sha256"`
		Phases   []pcr.PhaseValue  `json:"phases"`
		Sections []pcr.Measurement `json:"sections"`
	} `json:"pcr11"`
	PCR4 struct {
		UKIAuthenticodeSHA256 string `json:"ukiAuthenticodeSha256"`
		pcr.FirmwarePrediction
	} `json:"pcr4"`

	// PCR7 is the firmware's Secure Boot state and the db authority of the UKI.
	PCR7 pcr.FirmwarePrediction `json:"pcr7"`

	UKI struct {
		SHA256  string `json:"sha256"`
		Cmdline string `json:"cmdline"`
		Signer  string `json:"signer"`
	} `json:"uki"`
	IPE struct {
		PolicyName         string `json:"policyName"`
		PolicyVersion      string `json:"policyVersion"`
		Mode               string `json:"mode"`
		PolicySHA256       string `json:"policySha256"`
		SignedPolicySHA256 string `json:"signedPolicySha256"`
	} `json:"ipe"`
	SELinux string `json:"selinux"`
	Kernel  string `json:"kernel"`
	// Profile is the embedded profile the image was built from, or custom.
	Profile string `json:"profile"`
	// Flavour is guard or standard (spec.flavour).
	Flavour string `json:"flavour"`
	// DebugConsole is true when the node has a root shell on its console.
	DebugConsole bool `json:"debugConsole"`
}

// Result reports a finished build.
type Result struct {
	OutDir       string
	Measurements Measurements
	KeysDir      string
	KeysCreated  bool
	Files        int // regular files in /usr
	UsrSize      int64
	Durations    []StepDuration
}

// StepDuration is how long one build step took.
type StepDuration struct {
	Step     string
	Duration time.Duration
}

type builder struct {
	o     BuildOptions
	cfg   *Config
	stage string
	// se is the SELinux policy; nil when SELinux is off.
	se      *sePolicy
	res     *Result
	art     *artifacts.Set
	started time.Time
	last    time.Time
	stepMu  sync.Mutex
	failed  bool
}

// step starts a step of the build, ending the one before. Stages running
// at the same time share the list: a duration there runs to the next step
// of any stage.
func (b *builder) step(format string, args ...any) {
	b.stepMu.Lock()
	defer b.stepMu.Unlock()
	now := time.Now()
	if !b.last.IsZero() && len(b.res.Durations) > 0 {
		b.res.Durations[len(b.res.Durations)-1].Duration = now.Sub(b.last)
	}
	b.last = now
	msg := fmt.Sprintf(format, args...)
	b.res.Durations = append(b.res.Durations, StepDuration{Step: msg})
	if b.o.Progress != nil {
		fmt.Fprintf(b.o.Progress, "[%5.1fs] %s\n", now.Sub(b.started).Seconds(), msg)
	}
}

// artifacts loads the fetched Debian pieces, once, when the config relies on them.
func (b *builder) artifacts() (*artifacts.Set, error) {
	if b.art != nil {
		return b.art, nil
	}
	a, err := artifacts.Load()
	if err != nil {
		return nil, err
	}
	b.art = a
	return a, nil
}

// Build builds the image described by o.Config into o.OutDir. Nothing in
// OutDir changes unless the whole build succeeds: outputs are made in a
// staging directory inside OutDir and renamed into place at the end.
func Build(o BuildOptions) (*Result, error) {
	if o.Config == nil {
		return nil, errors.New("build: no config")
	}
	if o.OutDir == "" {
		o.OutDir = "out"
	}
	b := &builder{o: o, cfg: o.Config, res: &Result{OutDir: o.OutDir}, started: time.Now()}
	if _, err := os.Stat(o.OutDir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
			return nil, fmt.Errorf("build: %w", err)
		}
		// A failed build leaves no trace, not even the directory.
		defer func() {
			if b.failed {
				os.Remove(o.OutDir)
			}
		}()
	}
	stage, err := os.MkdirTemp(o.OutDir, ".build-")
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	b.stage = stage
	defer os.RemoveAll(stage)
	if err := b.run(); err != nil {
		b.failed = true
		os.RemoveAll(stage)
		return nil, fmt.Errorf("build: %w", err)
	}
	b.step("done")
	return b.res, nil
}

// run is the build pipeline. Each stage takes what earlier stages made and
// returns a typed result; the stages live in stages.go. Stages that do not
// need each other's results run at the same time (inBackground): the
// kernel, and then the initramfs, while the rootfs is read and /usr
// written; the SELinux labels while the rootfs is read; the manifest of
// /usr, and then the var file system, while /usr is written; the SBOMs
// from the root hash on, beside the UKI and the disk; the OVMF variables
// all along.
func (b *builder) run() error {
	keys, err := b.keys()
	if err != nil {
		return err
	}
	vars := inBackground(func() ([]byte, error) { return b.ovmfVars(keys) })
	defer vars.wait()
	kern := inBackground(b.kernel)
	defer kern.wait()
	if b.se, err = b.selinuxPolicy(); err != nil {
		return err
	}
	labels := inBackground(b.se.labels)
	defer labels.wait()
	boot := inBackground(func() (*bootFiles, error) {
		k, err := kern.wait()
		if err != nil {
			return nil, err
		}
		return b.boot(k, keys.db())
	})
	defer boot.wait()
	osRelease := b.osRelease()
	rfs, err := b.rootfs(osRelease)
	if err != nil {
		return err
	}
	defer rfs.Close()
	usrFS, err := usrTree(rfs.Root)
	if err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	man := inBackground(func() (*usrManifest, error) { return b.manifest(usrFS, rfs.digests) })
	defer man.wait()
	varFS := inBackground(func() (*os.File, error) { return b.varImage(man) })
	defer func() {
		if f, _ := varFS.wait(); f != nil {
			f.Close()
		}
	}()
	img, err := os.Create(filepath.Join(b.stage, DiskFile))
	if err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	defer img.Close()
	usr, err := b.usr(usrFS, man, labels, img, keys.db())
	if err != nil {
		return err
	}
	sboms := inBackground(func() (*sbomFiles, error) { return b.sboms(rfs, usr) })
	defer sboms.wait()
	bf, err := boot.wait()
	if err != nil {
		return err
	}
	k, err := kern.wait()
	if err != nil {
		return err
	}
	u, err := b.uki(k, bf.Initramfs, osRelease, usr, keys.db())
	if err != nil {
		return err
	}
	measurements, err := b.measurements(k, usr, bf.Policy, u, keys)
	if err != nil {
		return err
	}
	vf, err := varFS.wait()
	if err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	if err := b.disk(img, u.Signed, measurements, usr, vf); err != nil {
		return err
	}
	sb, err := sboms.wait()
	if err != nil {
		return err
	}
	varsFile, err := vars.wait()
	if err != nil {
		return err
	}
	return b.outputs(keys, map[string][]byte{
		UKIFile: u.Signed, PolicyFile: bf.Policy.Text, SignedPolicyFile: bf.Policy.Signed,
		MeasurementsFile: measurements, SPDXFile: sb.SPDX, CycloneDXFile: sb.CycloneDX,
		VarsFile: varsFile,
	})
}

// background is a stage running on a goroutine of its own.
type background[T any] struct {
	done chan struct{}
	v    T
	err  error
}

// inBackground starts stage f; wait returns its result. A pipeline that
// starts one defers a wait as well, so that no stage outlives the build
// (and its staging directory) on an early return.
func inBackground[T any](f func() (T, error)) *background[T] {
	bg := &background[T]{done: make(chan struct{})}
	go func() {
		defer close(bg.done)
		bg.v, bg.err = f()
	}()
	return bg
}

func (bg *background[T]) wait() (T, error) {
	<-bg.done
	return bg.v, bg.err
}

// blobCache returns the cache directory name under CacheDir (or the .cache
// of the checkout), which keeps at most max entries, or nil when there is
// no such place: then the build computes everything.
func (b *builder) blobCache(name string, max int) *blobcache.Dir {
	top := b.o.CacheDir
	if top == "" {
		p, err := artifacts.Path()
		if err != nil {
			return nil
		}
		top = filepath.Dir(p)
	}
	return &blobcache.Dir{Path: filepath.Join(top, filepath.FromSlash(name)), MaxEntries: max}
}

// ovmfVarsTemplate is Debian's empty OVMF variable store.
const ovmfVarsTemplate = "/usr/share/OVMF/OVMF_VARS_4M.fd"

// sigPartitionBytes is the size of the verity signature JSON, NUL padded.
const sigPartitionBytes = 16 << 10

// dpsUUIDs returns the usr and usr-verity partition UUIDs the Discoverable
// Partitions Specification derives from a root hash: its first and last
// 128 bits.
func dpsUUIDs(rootHash []byte) (usr, verity disk.GUID) {
	copy(usr[:], rootHash[:16])
	copy(verity[:], rootHash[len(rootHash)-16:])
	return uuidFromBytes(usr), uuidFromBytes(verity)
}

// uuidFromBytes reads 16 bytes as a UUID in its textual byte order and
// returns the GPT (mixed-endian) GUID that prints as that UUID.
func uuidFromBytes(b disk.GUID) disk.GUID {
	x := hex.EncodeToString(b[:])
	return disk.MustGUID(x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32])
}

// derivedGUID is a GUID made from the build's seed and a label.
func derivedGUID(seed [32]byte, label string) disk.GUID {
	h := sha256.Sum256(append(seed[:], label...))
	h[6] = h[6]&0x0f | 0x40
	h[8] = h[8]&0x3f | 0x80
	var g disk.GUID
	copy(g[:], h[:16])
	return uuidFromBytes(g)
}

func roundMiB(n int64) int64 { return (n + (1<<20 - 1)) &^ (1<<20 - 1) }

// writeDisk writes the GPT and the partitions around usr slot A, which the
// usr stage wrote into img already; varFS is the var file system, nil when
// the layout has none.
func (b *builder) writeDisk(img *os.File, signedUKI, measurements []byte, u *usrImage, varFS *os.File) error {
	vres, seed := u.Verity, u.Seed
	lay := b.cfg.Spec.Layout
	espSize, _ := ParseSize(lay.ESPSize)
	varSize, _ := ParseSize(lay.VarSize)
	usrPart := roundMiB(u.Size + u.Size/4)
	if lay.UsrSize != "auto" {
		usrPart, _ = ParseSize(lay.UsrSize)
		if usrPart < u.Size {
			return fmt.Errorf("layout.usrSize %s is smaller than the /usr image (%d bytes)", lay.UsrSize, u.Size)
		}
	}
	hashBytes := vres.HashDeviceSize
	if lay.UsrSize != "auto" {
		// A fixed usr partition is sized for the images of later updates:
		// size the verity partition for a tree over all of it.
		full := vres.Params
		full.DataBlocks = uint64(usrPart) / uint64(full.DataBlockSize)
		hashBytes = max(hashBytes, verity.HashDeviceSize(full))
	}
	hashPart := roundMiB(hashBytes + hashBytes/4 + (64 << 10))
	sigPart := int64(1 << 20)

	// The ESP is written in place, the first partition: only what the
	// FAT holds is written, the rest of its 64 MB stays a hole of img.
	espAt := disk.Start()
	if err := disk.WriteFAT32(io.NewOffsetWriter(img, espAt),
		disk.FATOptions{Size: espSize, Label: "ESP", VolumeID: uint32(seed[0])<<24 | uint32(seed[1])<<16 | uint32(seed[2])<<8 | uint32(seed[3])},
		[]disk.File{{Path: "/EFI/BOOT/BOOTX64.EFI", Data: signedUKI}, {Path: ESPMeasurementsPath, Data: measurements}}); err != nil {
		return fmt.Errorf("ESP: %w", err)
	}
	usrUUID, verityUUID := dpsUUIDs(vres.RootHash)
	parts := []disk.Partition{
		// No content for the ESP and usr-A: both are in place.
		{TypeGUID: disk.TypeESP, UUID: derivedGUID(seed, "esp"), Name: "ESP", Size: espSize},
		{TypeGUID: disk.TypeUsrX86_64, UUID: usrUUID, Name: "usr-A", Size: usrPart},
		{TypeGUID: disk.TypeUsrX86_64Verity, UUID: verityUUID, Name: "usr-A-verity", Size: hashPart, Content: bytes.NewReader(u.Hash), ContentSize: int64(len(u.Hash))},
		{TypeGUID: disk.TypeUsrX86_64VeritySig, UUID: derivedGUID(seed, "usr-A-verity-sig"), Name: "usr-A-verity-sig", Size: sigPart, Content: bytes.NewReader(u.SigJSON), ContentSize: int64(len(u.SigJSON))},
	}
	if lay.Slots == 2 {
		parts = append(parts,
			disk.Partition{TypeGUID: disk.TypeUsrX86_64, UUID: derivedGUID(seed, "usr-B"), Name: "usr-B", Size: usrPart},
			disk.Partition{TypeGUID: disk.TypeUsrX86_64Verity, UUID: derivedGUID(seed, "usr-B-verity"), Name: "usr-B-verity", Size: hashPart},
			disk.Partition{TypeGUID: disk.TypeUsrX86_64VeritySig, UUID: derivedGUID(seed, "usr-B-verity-sig"), Name: "usr-B-verity-sig", Size: sigPart},
		)
	}
	if varFS != nil {
		parts = append(parts, disk.Partition{TypeGUID: disk.TypeVar, UUID: derivedGUID(seed, "var"), Name: "var", Size: varSize, Content: varFS, ContentSize: varSize})
	}
	placed, err := disk.Build(img, disk.Layout{DiskGUID: derivedGUID(seed, "disk"), Partitions: parts})
	if err != nil {
		return err
	}
	if placed[0].Offset() != espAt || placed[1].Offset() != u.Offset {
		return fmt.Errorf("internal error: ESP and usr-A placed at %d and %d, written at %d and %d", placed[0].Offset(), placed[1].Offset(), espAt, u.Offset)
	}
	return img.Close()
}

// varImage makes the empty ext4 file system of the var partition in the
// staging directory and opens it, nil when the layout has none. Its UUID
// derives from the seed, so it waits for the manifest stage, and runs
// beside the usr stage.
func (b *builder) varImage(man *background[*usrManifest]) (*os.File, error) {
	varSize, _ := ParseSize(b.cfg.Spec.Layout.VarSize)
	if varSize <= 0 {
		return nil, nil
	}
	m, err := man.wait()
	if err != nil {
		return nil, err
	}
	p := filepath.Join(b.stage, "var.ext4")
	if err := mkfsExt4(p, varSize, derivedGUID(m.Seed, "var"), b.o.Epoch); err != nil {
		return nil, fmt.Errorf("var: %w", err)
	}
	return os.Open(p)
}

// memFile is a fixed-size in-memory io.WriterAt.
type memFile []byte

func (m memFile) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, fmt.Errorf("write of %d bytes at %d beyond %d", len(p), off, len(m))
	}
	return copy(m[off:], p), nil
}

// mkfsExt4 makes an empty ext4 file system for /var with e2fsprogs, with
// every random or time-based field fixed so that the bytes are reproducible.
func mkfsExt4(path string, size int64, uuid disk.GUID, epoch int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	f.Close()
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		if mkfs, err = exec.LookPath("/usr/sbin/mkfs.ext4"); err != nil {
			return errors.New("mkfs.ext4 not found (Debian package e2fsprogs); or set layout.varSize: \"0\"")
		}
	}
	cmd := exec.Command(mkfs, "-q", "-F", "-L", "var", "-U", uuid.String(),
		"-E", "root_owner=0:0,hash_seed="+uuid.String()+",lazy_itable_init=0,nodiscard",
		"-O", "^metadata_csum_seed", path)
	cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME="+strconv.FormatInt(epoch, 10), "MKE2FS_DETERMINISTIC=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4: %v: %s", err, out)
	}
	return nil
}

// staticBinary finds a static executable: the given path, or name next to
// the running osguard (bin/ after `make build`).
func staticBinary(given, name string) (string, error) {
	p := given
	if p == "" {
		self, err := os.Executable()
		if err != nil {
			return "", err
		}
		if name == "osguard" {
			p = self
		} else {
			p = filepath.Join(filepath.Dir(self), name)
		}
	}
	if err := checkStatic(p); err != nil {
		return "", fmt.Errorf("%s: %w (build it with CGO_ENABLED=0, e.g. 'make build', or name it with --%s-binary)", name, err, strings.TrimPrefix(name, "osguard-"))
	}
	return p, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// policyName turns an image name into an IPE policy_name token.
func policyName(image string) string {
	var b strings.Builder
	for _, r := range image {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_', r == '-', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}
