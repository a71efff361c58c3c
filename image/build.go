package image

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/osguard/osguard/disk"
	"github.com/osguard/osguard/erofs"
	"github.com/osguard/osguard/initrd"
	"github.com/osguard/osguard/initrd/bootconfig"
	"github.com/osguard/osguard/internal/artifacts"
	"github.com/osguard/osguard/ipe"
	"github.com/osguard/osguard/pcr"
	"github.com/osguard/osguard/sbom"
	"github.com/osguard/osguard/secureboot"
	"github.com/osguard/osguard/selinux"
	"github.com/osguard/osguard/uki"
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
	o       BuildOptions
	cfg     *Config
	stage   string
	res     *Result
	art     *artifacts.Set
	started time.Time
	last    time.Time
	failed  bool
}

func (b *builder) step(format string, args ...any) {
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

func (b *builder) run() error {
	cfg, o := b.cfg, b.o
	epoch := o.Epoch
	mtime := epoch

	// Keys.
	keysDir := o.KeysDir
	if keysDir == "" {
		keysDir = cfg.Path(cfg.Spec.Keys)
	}
	stagedKeys := ""
	if keysDir == "" {
		keysDir = filepath.Join(o.OutDir, "keys")
		if _, err := os.Stat(keysDir); errors.Is(err, os.ErrNotExist) {
			b.step("keys: creating PK, KEK and db in %s", keysDir)
			stagedKeys = filepath.Join(b.stage, "keys")
			if err := secureboot.GenerateKeys(stagedKeys, secureboot.KeygenOptions{
				SubjectPrefix: cfg.Metadata.Name, Time: time.Unix(epoch, 0).UTC(),
			}); err != nil {
				return err
			}
		}
	}
	b.res.KeysDir, b.res.KeysCreated = keysDir, stagedKeys != ""
	loadFrom := keysDir
	if stagedKeys != "" {
		loadFrom = stagedKeys
	}
	keys, err := secureboot.LoadHierarchy(loadFrom)
	if err != nil {
		if _, serr := os.Stat(loadFrom); serr != nil {
			return fmt.Errorf("keys: %s does not exist; create it with 'osguard keys init %s', or leave keys unset to have the build create %s", loadFrom, loadFrom, filepath.Join(o.OutDir, "keys"))
		}
		return fmt.Errorf("keys: %w", err)
	}
	db := keys.DB

	// Kernel and stub.
	b.step("kernel: reading")
	var kernel *initrd.Kernel
	switch {
	case cfg.Spec.Kernel.Deb != "":
		kernel, err = initrd.ReadDeb(cfg.Path(cfg.Spec.Kernel.Deb))
	case cfg.Spec.Kernel.Vmlinuz != "":
		kernel, err = kernelFromFiles(cfg.Path(cfg.Spec.Kernel.Vmlinuz), cfg.Path(cfg.Spec.Kernel.Modules))
	default:
		var a *artifacts.Set
		if a, err = b.artifacts(); err == nil {
			kernel, err = initrd.OpenDir(a.KernelRoot)
		}
	}
	if err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	stubPath := cfg.Path(cfg.Spec.Kernel.Stub)
	if stubPath == "" {
		a, err := b.artifacts()
		if err != nil {
			return err
		}
		stubPath = a.SystemdStub
	}
	stub, err := os.ReadFile(stubPath)
	if err != nil {
		return fmt.Errorf("stub: %w", err)
	}

	// Root file system.
	osRelease := fmt.Sprintf("ID=osguard\nNAME=osguard\nPRETTY_NAME=\"osguard %s %s\"\nVERSION_ID=%s\nIMAGE_ID=%s\nIMAGE_VERSION=%s\n",
		cfg.Metadata.Name, cfg.Metadata.Version, cfg.Metadata.Version, cfg.Metadata.Name, cfg.Metadata.Version)
	b.step("rootfs: reading %s", orDefault(cfg.Spec.Rootfs.Path, "the built-in busybox userland"))
	osguardBin := ""
	if *cfg.Spec.Rootfs.AddOsguard {
		if osguardBin, err = staticBinary(o.OsguardBinary, "osguard"); err != nil {
			return err
		}
	}
	var root *erofs.Tree
	if cfg.Spec.Rootfs.Path == "" {
		a, err := b.artifacts()
		if err != nil {
			return err
		}
		root, err = defaultUserland(a.Busybox, osguardBin, osRelease, mtime)
		if err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
	} else {
		root, err = readRootfs(cfg.Path(cfg.Spec.Rootfs.Path), b.stage)
		if err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
		if osguardBin != "" {
			st, err := os.Stat(osguardBin)
			if err != nil {
				return err
			}
			if err := root.Add("/usr/bin/osguard", &erofs.Inode{Mode: erofs.S_IFREG | 0o755, Mtime: mtime, Size: st.Size(), Open: erofs.FileOpener(osguardBin)}); err != nil {
				return err
			}
		}
	}
	defer root.Close()
	if err := addAttestation(root, cfg.Spec.Attestation, mtime); err != nil {
		return err
	}
	usr, err := usrTree(root)
	if err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}

	// SBOM inputs: every regular file of /usr, and dpkg's package list.
	b.step("sbom: hashing the files of /usr")
	files, manifest, err := hashFiles(usr)
	if err != nil {
		return fmt.Errorf("sbom: %w", err)
	}
	b.res.Files = len(files)
	var pkgs []sbom.Package
	if ino := root.Get("/var/lib/dpkg/status"); ino != nil && ino.Open != nil {
		rc, err := ino.Open()
		if err != nil {
			return fmt.Errorf("sbom: dpkg status: %w", err)
		}
		pkgs, err = sbom.ParseDpkgStatus(rc)
		rc.Close()
		if err != nil {
			return err
		}
	}

	// /usr as EROFS.
	var labeler erofs.Labeler
	if cfg.Spec.SELinux.Mode != "off" {
		fc, err := selinux.LoadFileContexts(cfg.Path(cfg.Spec.SELinux.FileContexts))
		if err != nil {
			return fmt.Errorf("selinux: %w", err)
		}
		labeler = fc
	}
	b.step("usr: writing the EROFS image")
	usrPath := filepath.Join(b.stage, "usr.erofs")
	// The seed from which UUIDs and salts derive: everything that decides
	// the bytes of the usr image.
	seedIn := fmt.Sprintf("%s\x00%s\x00%d\x00%s\x00", cfg.Metadata.Name, cfg.Metadata.Version, epoch, cfg.Spec.SELinux.Mode)
	if labeler != nil {
		fc, err := os.ReadFile(cfg.Path(cfg.Spec.SELinux.FileContexts))
		if err != nil {
			return fmt.Errorf("selinux: %w", err)
		}
		seedIn += fmt.Sprintf("%x\x00", sha256.Sum256(fc))
	}
	seed := sha256.Sum256(append([]byte(seedIn), manifest...))
	usrSize, err := writeFile(usrPath, func(w io.WriterAt) (int64, error) {
		return usr.WriteImage(w, erofs.Options{
			BuildTime: epoch, UUID: verity.DeriveUUID(append([]byte("erofs-usr"), seed[:]...)),
			Label: "usr", Labeler: labeler, MountPoint: "/usr", ClampMtime: true,
		})
	})
	if err != nil {
		return fmt.Errorf("usr: %w", err)
	}
	b.res.UsrSize = usrSize

	// dm-verity.
	b.step("usr: dm-verity hash tree")
	// The seed already covers every byte that goes into the image (paths,
	// metadata and file digests), so the salt needs no second read of it.
	vp := verity.DefaultParams()
	vp.Salt = verity.DeriveSalt(append([]byte("verity-salt"), seed[:]...))
	vp.UUID = verity.DeriveUUID(append([]byte("verity-uuid"), seed[:]...))
	hashPath := filepath.Join(b.stage, "usr.verity")
	vres, err := verity.FormatFile(usrPath, hashPath, vp)
	if err != nil {
		return fmt.Errorf("verity: %w", err)
	}
	rootHash := hex.EncodeToString(vres.RootHash)
	sig, err := verity.SignRootHash(vres.RootHash, db.Key, db.Cert)
	if err != nil {
		return err
	}
	sigJSON, err := verity.NewSignatureJSON(vres.RootHash, sig, db.Cert).MarshalPadded(sigPartitionBytes)
	if err != nil {
		return err
	}

	// IPE policy.
	b.step("ipe: policy")
	var policy []byte
	if p := cfg.Spec.IPE.Policy; p != "" {
		if policy, err = os.ReadFile(cfg.Path(p)); err != nil {
			return fmt.Errorf("ipe: %w", err)
		}
	} else {
		gopts := ipe.GenerateOptions{Name: policyName(cfg.Metadata.Name), Version: cfg.Spec.IPE.PolicyVersion, AllowRootHashes: cfg.Spec.IPE.AllowRootHashes}
		if err := gopts.Validate(); err != nil {
			return fmt.Errorf("ipe: %w", err)
		}
		policy = ipe.Generate(gopts)
	}
	parsed, err := ipe.Parse(policy)
	if err != nil {
		return fmt.Errorf("ipe: %s: %w", orDefault(cfg.Spec.IPE.Policy, "generated policy"), err)
	}
	signedPolicy, err := ipe.Sign(policy, db.Key, db.Cert)
	if err != nil {
		return err
	}

	// Initramfs.
	b.step("initrd: modules and osguard-init")
	initBin, err := staticBinary(o.InitBinary, "osguard-init")
	if err != nil {
		return err
	}
	var sePolicy []byte
	if cfg.Spec.SELinux.Mode != "off" {
		if sePolicy, err = os.ReadFile(cfg.Path(cfg.Spec.SELinux.Policy)); err != nil {
			return fmt.Errorf("selinux: %w", err)
		}
	}
	var initramfs bytes.Buffer
	if err := initrd.Build(initrd.Options{
		Kernel: kernel, Modules: cfg.Spec.Kernel.Extra, InitPath: initBin,
		Policy: signedPolicy, SELinuxPolicy: sePolicy,
		Config: bootconfig.Config{IPE: cfg.Spec.IPE.Mode, SELinux: cfg.Spec.SELinux.Mode, VerityOnCorruption: "restart", Init: cfg.Spec.Rootfs.Init},
		MTime:  epoch,
	}, &initramfs); err != nil {
		return fmt.Errorf("initrd: %w", err)
	}

	// UKI.
	b.step("uki: assembling and signing")
	cmdline := append([]string{}, cfg.Spec.Cmdline...)
	cmdline = append(cmdline, "usrhash="+rootHash)
	if cfg.Spec.SELinux.Mode != "off" {
		// SELinux and AppArmor cannot both be major LSMs: name the list.
		cmdline = append(cmdline, "lsm=lockdown,capability,landlock,yama,selinux,bpf,ipe,ima,evm", "security=selinux")
	}
	cmdlineStr := strings.Join(cmdline, " ")
	ukiBytes, err := uki.Build(uki.Options{
		Stub: stub, Linux: kernel.Vmlinuz, Initrds: [][]byte{initramfs.Bytes()},
		Cmdline: cmdlineStr, OSRelease: osRelease, Uname: kernel.Version,
	})
	if err != nil {
		return fmt.Errorf("uki: %w", err)
	}
	signedUKI, err := secureboot.SignPE(ukiBytes, db.Key, db.Cert)
	if err != nil {
		return fmt.Errorf("uki: sign: %w", err)
	}
	pred, err := pcr.PredictUKI(signedUKI)
	if err != nil {
		return fmt.Errorf("pcr: %w", err)
	}
	authDigest, err := secureboot.PEDigest(signedUKI)
	if err != nil {
		return err
	}
	pcr4, pcr7, err := pcr.PredictFirmware(signedUKI, keys)
	if err != nil {
		return err
	}

	// Measurements.
	m := &b.res.Measurements
	m.Image, m.Version, m.Kernel, m.SELinux = cfg.Metadata.Name, cfg.Metadata.Version, kernel.Version, cfg.Spec.SELinux.Mode
	m.Usr.RootHash, m.Usr.HashAlgorithm = rootHash, vres.Params.HashAlgorithm
	m.Usr.Salt, m.Usr.DataBlocks = hex.EncodeToString(vres.Params.Salt), vres.Params.DataBlocks
	m.Usr.DataBlockSize, m.Usr.HashBlockSize = vres.Params.DataBlockSize, vres.Params.HashBlockSize
	usrUUID, verityUUID := dpsUUIDs(vres.RootHash)
	m.Usr.PartUUID, m.Usr.VerityUUID = usrUUID.String(), verityUUID.String()
	m.PCR11.SHA256, m.PCR11.Phases, m.PCR11.Sections = hex.EncodeToString(pred.PCR11), pred.Phases, pred.Measurements
	m.PCR4.UKIAuthenticodeSHA256 = hex.EncodeToString(authDigest)
	m.PCR4.FirmwarePrediction, m.PCR7 = *pcr4, *pcr7
	ukiSum := sha256.Sum256(signedUKI)
	m.UKI.SHA256, m.UKI.Cmdline, m.UKI.Signer = hex.EncodeToString(ukiSum[:]), cmdlineStr, db.Cert.Subject.String()
	polSum, sigSum := sha256.Sum256(policy), sha256.Sum256(signedPolicy)
	m.IPE.PolicyName, m.IPE.PolicyVersion, m.IPE.Mode = parsed.Name, parsed.Version.String(), cfg.Spec.IPE.Mode
	m.IPE.PolicySHA256, m.IPE.SignedPolicySHA256 = hex.EncodeToString(polSum[:]), hex.EncodeToString(sigSum[:])
	measurements, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	measurements = append(measurements, '\n')

	// Disk.
	b.step("disk: GPT, ESP, usr A/B, var")
	if err := b.writeDisk(signedUKI, measurements, usrPath, usrSize, hashPath, vres, sigJSON, seed); err != nil {
		return fmt.Errorf("disk: %w", err)
	}

	// OVMF VARS with the keys enrolled.
	b.step("ovmf: VARS with PK, KEK and db")
	template, err := os.ReadFile(ovmfVarsTemplate)
	if err != nil {
		return fmt.Errorf("ovmf VARS template (Debian package ovmf): %w", err)
	}
	var vars bytes.Buffer
	if err := secureboot.WriteVarstore(template, keys, &vars); err != nil {
		return fmt.Errorf("ovmf VARS: %w", err)
	}

	// SBOMs.
	b.step("sbom: SPDX 2.3 and CycloneDX 1.5")
	img := sbom.Image{
		Name: cfg.Metadata.Name, Version: cfg.Metadata.Version, RootHash: rootHash,
		Created: time.Unix(epoch, 0), ToolVersion: o.ToolVersion, Files: files, Packages: pkgs,
	}
	var spdxBuf, cdxBuf bytes.Buffer
	if err := sbom.WriteSPDX(&spdxBuf, img); err != nil {
		return err
	}
	if err := sbom.WriteCycloneDX(&cdxBuf, img); err != nil {
		return err
	}

	// Everything is made: write the small outputs, then move all into place.
	for name, data := range map[string][]byte{
		UKIFile: signedUKI, PolicyFile: policy, SignedPolicyFile: signedPolicy,
		MeasurementsFile: measurements, SPDXFile: spdxBuf.Bytes(), CycloneDXFile: cdxBuf.Bytes(),
		VarsFile: vars.Bytes(),
	} {
		if err := os.WriteFile(filepath.Join(b.stage, name), data, 0o644); err != nil {
			return err
		}
	}
	b.step("writing outputs to %s", o.OutDir)
	if stagedKeys != "" {
		if err := os.Rename(stagedKeys, keysDir); err != nil {
			return fmt.Errorf("keys: %w", err)
		}
	}
	for _, name := range []string{DiskFile, UKIFile, PolicyFile, SignedPolicyFile, MeasurementsFile, SPDXFile, CycloneDXFile, VarsFile} {
		if err := os.Rename(filepath.Join(b.stage, name), filepath.Join(o.OutDir, name)); err != nil {
			return err
		}
	}
	return nil
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

func (b *builder) writeDisk(signedUKI, measurements []byte, usrPath string, usrSize int64, hashPath string, vres *verity.Result, sigJSON []byte, seed [32]byte) error {
	lay := b.cfg.Spec.Layout
	espSize, _ := ParseSize(lay.ESPSize)
	varSize, _ := ParseSize(lay.VarSize)
	usrPart := roundMiB(usrSize + usrSize/4)
	if lay.UsrSize != "auto" {
		usrPart, _ = ParseSize(lay.UsrSize)
		if usrPart < usrSize {
			return fmt.Errorf("layout.usrSize %s is smaller than the /usr image (%d bytes)", lay.UsrSize, usrSize)
		}
	}
	hashPart := roundMiB(vres.HashDeviceSize + vres.HashDeviceSize/4 + (64 << 10))
	sigPart := int64(1 << 20)

	esp, err := disk.ESP(disk.FATOptions{Size: espSize, Label: "ESP", VolumeID: uint32(seed[0])<<24 | uint32(seed[1])<<16 | uint32(seed[2])<<8 | uint32(seed[3])},
		disk.File{Path: "/EFI/BOOT/BOOTX64.EFI", Data: signedUKI},
		disk.File{Path: ESPMeasurementsPath, Data: measurements})
	if err != nil {
		return fmt.Errorf("ESP: %w", err)
	}
	usrF, err := os.Open(usrPath)
	if err != nil {
		return err
	}
	defer usrF.Close()
	hashF, err := os.Open(hashPath)
	if err != nil {
		return err
	}
	defer hashF.Close()
	usrUUID, verityUUID := dpsUUIDs(vres.RootHash)
	parts := []disk.Partition{
		{TypeGUID: disk.TypeESP, UUID: derivedGUID(seed, "esp"), Name: "ESP", Size: int64(len(esp)), Content: bytes.NewReader(esp), ContentSize: int64(len(esp))},
		{TypeGUID: disk.TypeUsrX86_64, UUID: usrUUID, Name: "usr-A", Size: usrPart, Content: usrF, ContentSize: usrSize},
		{TypeGUID: disk.TypeUsrX86_64Verity, UUID: verityUUID, Name: "usr-A-verity", Size: hashPart, Content: hashF, ContentSize: vres.HashDeviceSize},
		{TypeGUID: disk.TypeUsrX86_64VeritySig, UUID: derivedGUID(seed, "usr-A-verity-sig"), Name: "usr-A-verity-sig", Size: sigPart, Content: bytes.NewReader(sigJSON), ContentSize: int64(len(sigJSON))},
	}
	if lay.Slots == 2 {
		parts = append(parts,
			disk.Partition{TypeGUID: disk.TypeUsrX86_64, UUID: derivedGUID(seed, "usr-B"), Name: "usr-B", Size: usrPart},
			disk.Partition{TypeGUID: disk.TypeUsrX86_64Verity, UUID: derivedGUID(seed, "usr-B-verity"), Name: "usr-B-verity", Size: hashPart},
			disk.Partition{TypeGUID: disk.TypeUsrX86_64VeritySig, UUID: derivedGUID(seed, "usr-B-verity-sig"), Name: "usr-B-verity-sig", Size: sigPart},
		)
	}
	if varSize > 0 {
		varUUID := derivedGUID(seed, "var")
		varImg := filepath.Join(b.stage, "var.ext4")
		if err := mkfsExt4(varImg, varSize, varUUID, b.o.Epoch); err != nil {
			return fmt.Errorf("var: %w", err)
		}
		vf, err := os.Open(varImg)
		if err != nil {
			return err
		}
		defer vf.Close()
		parts = append(parts, disk.Partition{TypeGUID: disk.TypeVar, UUID: varUUID, Name: "var", Size: varSize, Content: vf, ContentSize: varSize})
	}
	_, err = writeFile(filepath.Join(b.stage, DiskFile), func(w io.WriterAt) (int64, error) {
		if _, err := disk.Build(w, disk.Layout{DiskGUID: derivedGUID(seed, "disk"), Partitions: parts}); err != nil {
			return 0, err
		}
		return -1, nil // disk.Build wrote up to the backup GPT: keep the size
	})
	return err
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

// writeFile creates path, lets fill write it through an io.WriterAt and
// truncates it to the size fill reports (unless that is negative).
func writeFile(path string, fill func(io.WriterAt) (int64, error)) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	n, err := fill(f)
	if err == nil && n >= 0 {
		err = f.Truncate(n)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// hashFiles digests every regular file of the /usr tree for the SBOM and
// returns a manifest of the whole tree (paths, modes, owners, targets and
// digests) from which the build derives its UUIDs and salts.
func hashFiles(usr *erofs.Tree) ([]sbom.File, []byte, error) {
	var files []sbom.File
	var manifest bytes.Buffer
	err := usr.Walk(func(p string, ino *erofs.Inode) error {
		fmt.Fprintf(&manifest, "%s %o %d %d %s", p, ino.Mode, ino.UID, ino.GID, ino.Target)
		if ino.Mode&erofs.S_IFMT == erofs.S_IFREG {
			f := sbom.File{Path: "/usr" + p, Size: ino.Size}
			if ino.Size > 0 {
				rc, err := ino.Open()
				if err != nil {
					return fmt.Errorf("%s: %w", p, err)
				}
				h1, h256 := sha1.New(), sha256.New()
				n, err := io.Copy(io.MultiWriter(h1, h256), rc)
				rc.Close()
				if err != nil {
					return fmt.Errorf("%s: %w", p, err)
				}
				if n != ino.Size {
					return fmt.Errorf("%s: read %d bytes, want %d", p, n, ino.Size)
				}
				copy(f.SHA1[:], h1.Sum(nil))
				copy(f.SHA256[:], h256.Sum(nil))
			} else {
				f.SHA1, f.SHA256 = sha1.Sum(nil), sha256.Sum256(nil)
			}
			files = append(files, f)
			fmt.Fprintf(&manifest, " %x", f.SHA256)
		}
		keys := make([]string, 0, len(ino.Xattrs))
		for k := range ino.Xattrs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&manifest, " %s=%x", k, ino.Xattrs[k])
		}
		manifest.WriteByte('\n')
		return nil
	})
	return files, manifest.Bytes(), err
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
