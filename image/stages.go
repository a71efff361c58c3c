package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/gob"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/osguard/osguard/disk"
	"github.com/osguard/osguard/erofs"
	"github.com/osguard/osguard/initrd"
	"github.com/osguard/osguard/initrd/bootconfig"
	"github.com/osguard/osguard/internal/artifacts"
	"github.com/osguard/osguard/internal/blobcache"
	"github.com/osguard/osguard/ipe"
	"github.com/osguard/osguard/pcr"
	"github.com/osguard/osguard/sbom"
	"github.com/osguard/osguard/secureboot"
	"github.com/osguard/osguard/selinux"
	"github.com/osguard/osguard/uki"
	"github.com/osguard/osguard/verity"
)

// The stages of the build pipeline, in the order run calls them. Each
// returns a typed result and reads nothing but its arguments, the config
// and the build options.

// buildKeys is the outcome of the keys stage.
type buildKeys struct {
	*secureboot.Hierarchy
	// Dir is where the keys live after the build; Staged, when not empty,
	// is where a new set waits in the staging directory to move to Dir.
	Dir, Staged string
}

func (k *buildKeys) db() secureboot.KeyPair { return k.DB }

// keys loads the PK, KEK and db hierarchy, or creates one in the staging
// directory when neither the options nor the config name one.
func (b *builder) keys() (*buildKeys, error) {
	cfg, o := b.cfg, b.o
	k := &buildKeys{Dir: o.KeysDir}
	if k.Dir == "" {
		k.Dir = cfg.Path(cfg.Spec.Keys)
	}
	if k.Dir == "" {
		k.Dir = filepath.Join(o.OutDir, "keys")
		if _, err := os.Stat(k.Dir); errors.Is(err, os.ErrNotExist) {
			b.step("keys: creating PK, KEK and db in %s", k.Dir)
			k.Staged = filepath.Join(b.stage, "keys")
			if err := secureboot.GenerateKeys(k.Staged, secureboot.KeygenOptions{
				SubjectPrefix: cfg.Metadata.Name, Time: time.Unix(o.Epoch, 0).UTC(),
			}); err != nil {
				return nil, err
			}
		}
	}
	b.res.KeysDir, b.res.KeysCreated = k.Dir, k.Staged != ""
	loadFrom := k.Dir
	if k.Staged != "" {
		loadFrom = k.Staged
	}
	h, err := secureboot.LoadHierarchy(loadFrom)
	if err != nil {
		if _, serr := os.Stat(loadFrom); serr != nil {
			return nil, fmt.Errorf("keys: %s does not exist; create it with 'osguard keys init %s', or leave keys unset to have the build create %s", loadFrom, loadFrom, filepath.Join(o.OutDir, "keys"))
		}
		return nil, fmt.Errorf("keys: %w", err)
	}
	k.Hierarchy = h
	return k, nil
}

// buildKernel is the kernel with its modules, and the systemd-stub.
type buildKernel struct {
	*initrd.Kernel
	Stub []byte
}

// kernel reads the kernel (a .deb, a vmlinuz with modules, or the fetched
// trixie kernel) and the UKI stub.
func (b *builder) kernel() (*buildKernel, error) {
	cfg := b.cfg
	b.step("kernel: reading")
	var kernel *initrd.Kernel
	var err error
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
		return nil, fmt.Errorf("kernel: %w", err)
	}
	if c := b.blobCache("initrd/modules", 512); c != nil {
		kernel.Cache = c
	}
	stubPath := cfg.Path(cfg.Spec.Kernel.Stub)
	if stubPath == "" {
		a, err := b.artifacts()
		if err != nil {
			return nil, err
		}
		stubPath = a.SystemdStub
	}
	stub, err := os.ReadFile(stubPath)
	if err != nil {
		return nil, fmt.Errorf("stub: %w", err)
	}
	return &buildKernel{Kernel: kernel, Stub: stub}, nil
}

// osRelease is the image's /usr/lib/os-release (built-in userland) and the
// UKI's .osrel section.
func (b *builder) osRelease() string {
	md := b.cfg.Metadata
	return fmt.Sprintf("ID=osguard\nNAME=osguard\nPRETTY_NAME=\"osguard %s %s\"\nVERSION_ID=%s\nIMAGE_ID=%s\nIMAGE_VERSION=%s\n",
		md.Name, md.Version, md.Version, md.Name, md.Version)
}

// rootTree is what the rootfs stage hands to the rest of the build: the whole
// root tree (only /usr and /etc reach the node) and the dpkg packages it
// holds, for the SBOMs.
type rootTree struct {
	Root     *erofs.Tree
	Packages []sbom.Package
	// source, when set, is the file the tree reads its contents from.
	source io.Closer
	// digests, when set, knows the SBOM digests of the source's files.
	digests *digestCache
}

// Close releases the tree and its source.
func (r *rootTree) Close() error {
	err := r.Root.Close()
	if r.source != nil {
		if cerr := r.source.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// rootfs makes the root tree from the config: the built-in busybox
// userland, or a directory, tar or OCI layout, plus /usr/bin/osguard when
// the config asks for it. This is the seam for other rootfs sources.
func (b *builder) rootfs(osRelease string) (*rootTree, error) {
	cfg, o := b.cfg, b.o
	mtime := o.Epoch
	if cfg.Spec.Rootfs.Debian == nil {
		b.step("rootfs: reading %s", orDefault(cfg.Spec.Rootfs.Path, "the built-in busybox userland"))
	}
	osguardBin := ""
	if *cfg.Spec.Rootfs.AddOsguard {
		var err error
		if osguardBin, err = staticBinary(o.OsguardBinary, "osguard"); err != nil {
			return nil, err
		}
	}
	var root *erofs.Tree
	var source io.Closer
	var digests *digestCache
	if cfg.Spec.Rootfs.Debian != nil {
		var err error
		if root, source, digests, err = b.debianRootfs(); err != nil {
			return nil, fmt.Errorf("rootfs: %w", err)
		}
		if osguardBin != "" {
			if err := addFile(root, "/usr/bin/osguard", osguardBin, mtime); err != nil {
				root.Close()
				source.Close()
				return nil, err
			}
		}
	} else if cfg.Spec.Rootfs.Path == "" {
		a, err := b.artifacts()
		if err != nil {
			return nil, err
		}
		if root, err = defaultUserland(a.Busybox, osguardBin, osRelease, mtime, cfg.Spec.DebugConsole); err != nil {
			return nil, fmt.Errorf("rootfs: %w", err)
		}
	} else {
		var err error
		if root, err = readRootfs(cfg.Path(cfg.Spec.Rootfs.Path), b.stage); err != nil {
			return nil, fmt.Errorf("rootfs: %w", err)
		}
		if osguardBin != "" {
			if err := addFile(root, "/usr/bin/osguard", osguardBin, mtime); err != nil {
				root.Close()
				return nil, err
			}
		}
	}
	rt := &rootTree{Root: root, source: source, digests: digests}
	if err := addAttestation(root, cfg.Spec.Attestation, mtime); err != nil {
		rt.Close()
		return nil, err
	}
	pkgs, err := dpkgPackages(root)
	if err != nil {
		rt.Close()
		return nil, err
	}
	rt.Packages = pkgs
	return rt, nil
}

// addFile puts the host file src into the tree at p.
func addFile(root *erofs.Tree, p, src string, mtime int64) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	return root.Add(p, &erofs.Inode{Mode: erofs.S_IFREG | 0o755, Mtime: mtime, Size: st.Size(), Open: erofs.FileOpener(src)})
}

// dpkgPackages reads dpkg's package list from the tree, if it has one.
func dpkgPackages(root *erofs.Tree) ([]sbom.Package, error) {
	ino := root.Get("/var/lib/dpkg/status")
	if ino == nil || ino.Open == nil {
		return nil, nil
	}
	rc, err := ino.Open()
	if err != nil {
		return nil, fmt.Errorf("sbom: dpkg status: %w", err)
	}
	defer rc.Close()
	return sbom.ParseDpkgStatus(rc)
}

// usrImage is /usr as a signed dm-verity volume: the EROFS image in usr
// slot A of disk.raw, its hash device in memory.
type usrImage struct {
	Offset   int64 // of the EROFS image (slot A) in disk.raw
	Size     int64
	Hash     []byte // the dm-verity hash device
	Verity   *verity.Result
	RootHash string // hex
	SigJSON  []byte // the DPS signature partition's content, NUL padded
	// Seed derives from everything that decides the image's bytes; UUIDs,
	// salts and the FAT volume ID come from it.
	Seed  [32]byte
	Files []sbom.File // every regular file of /usr, hashed
}

// usrManifest is what the build learns by hashing the files of /usr: the
// SBOM's file list and the seed.
type usrManifest struct {
	Files []sbom.File
	// Seed derives from everything that decides the usr image's bytes;
	// UUIDs, salts and the FAT volume ID come from it.
	Seed [32]byte
}

// manifest digests the files of /usr (taking what the rootfs's digest cache
// knows) and derives the seed. It runs beside the usr stage, which needs
// the seed only for the superblock it writes last.
func (b *builder) manifest(usr *erofs.Tree, digests *digestCache) (*usrManifest, error) {
	files, manifest, err := hashFiles(usr, digests)
	if err != nil {
		return nil, fmt.Errorf("sbom: %w", err)
	}
	return &usrManifest{Files: files, Seed: b.usrSeed(manifest)}, nil
}

// usr writes /usr as EROFS (with SELinux labels) straight into usr slot A
// of img, its dm-verity tree, and the root hash's signature by db. man is
// the manifest stage, running meanwhile; labels loads the labels of
// SELinux's file contexts, none when SELinux is off.
func (b *builder) usr(usr *erofs.Tree, man *background[*usrManifest], labels *background[*selinux.Contexts], img *os.File, db secureboot.KeyPair) (*usrImage, error) {
	cfg, epoch := b.cfg, b.o.Epoch
	espSize, err := ParseSize(cfg.Spec.Layout.ESPSize)
	if err != nil {
		return nil, fmt.Errorf("layout: %w", err)
	}
	u := &usrImage{Offset: disk.Start(espSize)} // slot A follows the ESP

	b.step("usr: writing the EROFS image; sbom: hashing the files of /usr")
	// The manifest stage digests the files meanwhile; the writer asks for
	// the UUID, which derives from the seed, only once all data is out.
	var labeler erofs.Labeler
	if c, err := labels.wait(); err != nil {
		return nil, err
	} else if c != nil {
		labeler = c
	}
	u.Size, err = usr.WriteImage(img, erofs.Options{
		At: u.Offset, BuildTime: epoch, Label: "usr", Labeler: labeler, MountPoint: "/usr", ClampMtime: true,
		UUIDFrom: func() ([16]byte, error) {
			m, err := man.wait()
			if err != nil {
				return [16]byte{}, err
			}
			u.Files, u.Seed = m.Files, m.Seed
			return verity.DeriveUUID(append([]byte("erofs-usr"), u.Seed[:]...)), nil
		},
	})
	if err != nil {
		return nil, fmt.Errorf("usr: %w", err)
	}
	b.res.Files, b.res.UsrSize = len(u.Files), u.Size

	b.step("usr: dm-verity hash tree")
	// The seed derives from the content (paths, modes, owners and file
	// digests), so the salt needs no second read of the image. It does not
	// cover every byte (mtimes, hard links), so it names the image's
	// salt and UUIDs and must never be a cache key for its bytes.
	seed := u.Seed
	vp := verity.DefaultParams()
	vp.Salt = verity.DeriveSalt(append([]byte("verity-salt"), seed[:]...))
	vp.UUID = verity.DeriveUUID(append([]byte("verity-uuid"), seed[:]...))
	vp.DataBlocks = uint64(u.Size) / uint64(vp.DataBlockSize)
	lay, err := verity.Layout(vp)
	if err != nil {
		return nil, fmt.Errorf("verity: %w", err)
	}
	u.Hash = make([]byte, lay.HashDeviceSize)
	if u.Verity, err = verity.Format(io.NewSectionReader(img, u.Offset, u.Size), memFile(u.Hash), vp); err != nil {
		return nil, fmt.Errorf("verity: %w", err)
	}
	u.RootHash = hex.EncodeToString(u.Verity.RootHash)
	sig, err := verity.SignRootHash(u.Verity.RootHash, db.Key, db.Cert)
	if err != nil {
		return nil, err
	}
	if u.SigJSON, err = verity.NewSignatureJSON(u.Verity.RootHash, sig, db.Cert).MarshalPadded(sigPartitionBytes); err != nil {
		return nil, err
	}
	return u, nil
}

// usrSeed derives the seed from everything that decides the bytes of the
// usr image: the config's part and the manifest of /usr.
func (b *builder) usrSeed(manifest []byte) [32]byte {
	cfg := b.cfg
	seedIn := fmt.Sprintf("%s\x00%s\x00%d\x00%s\x00", cfg.Metadata.Name, cfg.Metadata.Version, b.o.Epoch, cfg.Spec.SELinux.Mode)
	if b.se != nil {
		seedIn += fmt.Sprintf("%x\x00", sha256.Sum256(b.se.FileContexts))
		if len(b.se.SubsDist) > 0 {
			seedIn += fmt.Sprintf("subs\x00%x\x00", sha256.Sum256(b.se.SubsDist))
		}
	}
	return sha256.Sum256(append([]byte(seedIn), manifest...))
}

// bootFiles are what the initramfs stages make: the IPE policy and the
// initramfs that carries it.
type bootFiles struct {
	Policy    *buildPolicy
	Initramfs []byte
}

// boot makes the IPE policy and the initramfs; neither depends on /usr.
func (b *builder) boot(kern *buildKernel, db secureboot.KeyPair) (*bootFiles, error) {
	pol, err := b.policy(db)
	if err != nil {
		return nil, err
	}
	initramfs, err := b.initrd(kern, pol)
	if err != nil {
		return nil, err
	}
	return &bootFiles{Policy: pol, Initramfs: initramfs}, nil
}

// buildPolicy is the IPE policy, as text and signed by db.
type buildPolicy struct {
	Text, Signed []byte
	Parsed       *ipe.Policy
}

// policy generates (or reads) the IPE policy and signs it.
func (b *builder) policy(db secureboot.KeyPair) (*buildPolicy, error) {
	cfg := b.cfg
	b.step("ipe: policy")
	p := &buildPolicy{}
	var err error
	if f := cfg.Spec.IPE.Policy; f != "" {
		if p.Text, err = os.ReadFile(cfg.Path(f)); err != nil {
			return nil, fmt.Errorf("ipe: %w", err)
		}
	} else {
		gopts := ipe.GenerateOptions{Name: policyName(cfg.Metadata.Name), Version: cfg.IPEPolicyVersion(), AllowRootHashes: cfg.Spec.IPE.AllowRootHashes}
		if err := gopts.Validate(); err != nil {
			return nil, fmt.Errorf("ipe: %w", err)
		}
		p.Text = ipe.Generate(gopts)
	}
	if p.Parsed, err = ipe.Parse(p.Text); err != nil {
		return nil, fmt.Errorf("ipe: %s: %w", orDefault(cfg.Spec.IPE.Policy, "generated policy"), err)
	}
	if p.Signed, err = ipe.Sign(p.Text, db.Key, db.Cert); err != nil {
		return nil, err
	}
	return p, nil
}

// initrd builds the initramfs: osguard-init, the module closure, the signed
// IPE policy, the SELinux policy and the boot config.
func (b *builder) initrd(kern *buildKernel, pol *buildPolicy) ([]byte, error) {
	cfg := b.cfg
	b.step("initrd: modules and osguard-init")
	initBin, err := staticBinary(b.o.InitBinary, "osguard-init")
	if err != nil {
		return nil, err
	}
	var sePolicy []byte
	var add []initrd.File
	if se := b.se; se != nil {
		// osguard-init loads the policy, then labels the tmpfs root, /run
		// and /dev from the file contexts before it hands over.
		sePolicy = se.Policy
		add = append(add, initrd.File{Dst: bootconfig.SELinuxFileContextsPath, Data: se.FileContexts})
		if len(se.SubsDist) > 0 {
			add = append(add, initrd.File{Dst: bootconfig.SELinuxFileContextsPath + ".subs_dist", Data: se.SubsDist})
		}
	}
	ipePolicy := pol.Signed
	if cfg.Spec.Flavour == FlavourStandard {
		ipePolicy = nil // the standard flavour loads no IPE policy
	}
	opts := initrd.Options{
		Kernel: kern.Kernel, Modules: cfg.Spec.Kernel.Extra, InitPath: initBin,
		Policy: ipePolicy, SELinuxPolicy: sePolicy, Add: add,
		Config: bootconfig.Config{IPE: cfg.Spec.IPE.Mode, SELinux: cfg.Spec.SELinux.Mode, VerityOnCorruption: "restart", Init: cfg.Spec.Rootfs.Init},
		MTime:  b.o.Epoch,
	}
	if c := b.blobCache("initrd/archives", 16); c != nil {
		opts.Cache = c
	}
	var initramfs bytes.Buffer
	if err := initrd.Build(opts, &initramfs); err != nil {
		return nil, fmt.Errorf("initrd: %w", err)
	}
	return initramfs.Bytes(), nil
}

// buildUKI is the signed UKI and what the firmware and the stub will
// measure from it.
type buildUKI struct {
	Signed     []byte
	Cmdline    string
	PCR        *pcr.Prediction
	AuthDigest []byte // Authenticode sha256 (PCR 4)
}

// uki assembles the UKI on systemd-stub, signs it with db and predicts its
// measurements.
func (b *builder) uki(kern *buildKernel, initramfs []byte, osRelease string, usr *usrImage, db secureboot.KeyPair) (*buildUKI, error) {
	cfg := b.cfg
	b.step("uki: assembling and signing")
	cmdline := append([]string{}, cfg.Spec.Cmdline...)
	cmdline = append(cmdline, "usrhash="+usr.RootHash)
	switch {
	case cfg.Spec.Flavour == FlavourStandard:
		// The conventional container host: AppArmor, and no IPE at all.
		cmdline = append(cmdline, "lsm=lockdown,capability,landlock,yama,apparmor,bpf,ima,evm", "security=apparmor")
	case cfg.Spec.SELinux.Mode != "off":
		// SELinux and AppArmor cannot both be major LSMs: name the list.
		cmdline = append(cmdline, "lsm=lockdown,capability,landlock,yama,selinux,bpf,ipe,ima,evm", "security=selinux")
	}
	u := &buildUKI{Cmdline: strings.Join(cmdline, " ")}
	ukiBytes, err := uki.Build(uki.Options{
		Stub: kern.Stub, Linux: kern.Vmlinuz, Initrds: [][]byte{initramfs},
		Cmdline: u.Cmdline, OSRelease: osRelease, Uname: kern.Version, Spare: secureboot.CertTableRoom,
	})
	if err != nil {
		return nil, fmt.Errorf("uki: %w", err)
	}
	if u.Signed, err = secureboot.SignPEInPlace(ukiBytes, db.Key, db.Cert); err != nil {
		return nil, fmt.Errorf("uki: sign: %w", err)
	}
	if u.PCR, err = pcr.PredictUKI(u.Signed); err != nil {
		return nil, fmt.Errorf("pcr: %w", err)
	}
	if u.AuthDigest, err = secureboot.PEDigest(u.Signed); err != nil {
		return nil, err
	}
	return u, nil
}

// measurements fills the result's Measurements and returns measurements.json.
func (b *builder) measurements(kern *buildKernel, usr *usrImage, pol *buildPolicy, u *buildUKI, keys *buildKeys) ([]byte, error) {
	cfg := b.cfg
	db := keys.db()
	pcr4, pcr7, err := pcr.PredictFirmware(u.Signed, keys.Hierarchy)
	if err != nil {
		return nil, err
	}
	m := &b.res.Measurements
	vres := usr.Verity
	m.Image, m.Version, m.Kernel, m.SELinux = cfg.Metadata.Name, cfg.Metadata.Version, kern.Version, cfg.Spec.SELinux.Mode
	m.Profile, m.Flavour, m.DebugConsole = orDefault(cfg.Profile, "custom"), cfg.Spec.Flavour, cfg.Spec.DebugConsole
	m.Usr.RootHash, m.Usr.HashAlgorithm = usr.RootHash, vres.Params.HashAlgorithm
	m.Usr.Salt, m.Usr.DataBlocks = hex.EncodeToString(vres.Params.Salt), vres.Params.DataBlocks
	m.Usr.DataBlockSize, m.Usr.HashBlockSize = vres.Params.DataBlockSize, vres.Params.HashBlockSize
	usrUUID, verityUUID := dpsUUIDs(vres.RootHash)
	m.Usr.PartUUID, m.Usr.VerityUUID = usrUUID.String(), verityUUID.String()
	m.PCR11.SHA256, m.PCR11.Phases, m.PCR11.Sections = hex.EncodeToString(u.PCR.PCR11), u.PCR.Phases, u.PCR.Measurements
	m.PCR4.UKIAuthenticodeSHA256 = hex.EncodeToString(u.AuthDigest)
	m.PCR4.FirmwarePrediction, m.PCR7 = *pcr4, *pcr7
	ukiSum := sha256.Sum256(u.Signed)
	m.UKI.SHA256, m.UKI.Cmdline, m.UKI.Signer = hex.EncodeToString(ukiSum[:]), u.Cmdline, db.Cert.Subject.String()
	polSum, sigSum := sha256.Sum256(pol.Text), sha256.Sum256(pol.Signed)
	m.IPE.PolicyName, m.IPE.PolicyVersion, m.IPE.Mode = pol.Parsed.Name, pol.Parsed.Version.String(), cfg.Spec.IPE.Mode
	if cfg.Spec.Flavour == FlavourStandard {
		m.IPE.Mode = IPEOff // no policy is loaded
	}
	m.IPE.PolicySHA256, m.IPE.SignedPolicySHA256 = hex.EncodeToString(polSum[:]), hex.EncodeToString(sigSum[:])
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// disk writes the rest of disk.raw in the staging directory around usr
// slot A: GPT, the ESP with the UKI and measurements.json, the verity
// partitions, an empty slot B, var.
func (b *builder) disk(img *os.File, signedUKI, measurements []byte, usr *usrImage, varFS *os.File) error {
	b.step("disk: GPT, ESP, usr A/B, var")
	if err := b.writeDisk(img, signedUKI, measurements, usr, varFS); err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	return nil
}

// ovmfVars returns an OVMF VARS file with PK, KEK and db enrolled.
func (b *builder) ovmfVars(keys *buildKeys) ([]byte, error) {
	if keys.Hierarchy.Containers != nil {
		b.step("ovmf: VARS with PK, KEK and db (the db and containers certificates)")
	} else {
		b.step("ovmf: VARS with PK, KEK and db")
	}
	template, err := os.ReadFile(ovmfVarsTemplate)
	if err != nil {
		return nil, fmt.Errorf("ovmf VARS template (Debian package ovmf): %w", err)
	}
	var vars bytes.Buffer
	if err := secureboot.WriteVarstore(template, keys.Hierarchy, &vars); err != nil {
		return nil, fmt.Errorf("ovmf VARS: %w", err)
	}
	return vars.Bytes(), nil
}

// sbomFiles are the SPDX 2.3 and CycloneDX 1.5 documents.
type sbomFiles struct{ SPDX, CycloneDX []byte }

// sboms returns the SPDX 2.3 and CycloneDX 1.5 documents, from the cache
// when an earlier build wrote them for the same image with the same code:
// 10 MB of JSON take a quarter of a second of CPU to write.
func (b *builder) sboms(rfs *rootTree, usr *usrImage) (*sbomFiles, error) {
	cfg := b.cfg
	b.step("sbom: SPDX 2.3 and CycloneDX 1.5")
	img := sbom.Image{
		Name: cfg.Metadata.Name, Version: cfg.Metadata.Version, RootHash: usr.RootHash,
		Created: time.Unix(b.o.Epoch, 0), ToolVersion: b.o.ToolVersion, Files: usr.Files, Packages: rfs.Packages,
	}
	cache, key := b.blobCache("sbom", 8), sbomKey(img)
	if cache != nil && key != "" {
		spdxDoc, ok1 := cache.Get(key + "-spdx.json")
		cdxDoc, ok2 := cache.Get(key + "-cdx.json")
		if ok1 && ok2 {
			return &sbomFiles{SPDX: spdxDoc, CycloneDX: cdxDoc}, nil
		}
	}
	var spdxBuf, cdxBuf bytes.Buffer
	if err := sbom.WriteSPDX(&spdxBuf, img); err != nil {
		return nil, fmt.Errorf("sbom: %w", err)
	}
	if err := sbom.WriteCycloneDX(&cdxBuf, img); err != nil {
		return nil, fmt.Errorf("sbom: %w", err)
	}
	if cache != nil && key != "" {
		// A cache that cannot be written only costs the next build time.
		_ = cache.Put(key+"-spdx.json", spdxBuf.Bytes())
		_ = cache.Put(key+"-cdx.json", cdxBuf.Bytes())
	}
	return &sbomFiles{SPDX: spdxBuf.Bytes(), CycloneDX: cdxBuf.Bytes()}, nil
}

// sbomKey names the SBOMs of img by a digest of every field of img (gob
// encodes them all, in order) and of the code that writes them
// (blobcache.CodeID); "" when the code cannot be named.
func sbomKey(img sbom.Image) string {
	code, err := blobcache.CodeID()
	if err != nil {
		return ""
	}
	h := sha256.New()
	fmt.Fprintf(h, "sbom\x00%s\x00", code)
	if err := gob.NewEncoder(h).Encode(img); err != nil {
		return ""
	}
	return "sbom-" + hex.EncodeToString(h.Sum(nil))
}

// outputs writes the small outputs to the staging directory, then moves
// them, the disk and new keys into place.
func (b *builder) outputs(keys *buildKeys, small map[string][]byte) error {
	for name, data := range small {
		if err := os.WriteFile(filepath.Join(b.stage, name), data, 0o644); err != nil {
			return err
		}
	}
	b.step("writing outputs to %s", b.o.OutDir)
	if keys.Staged != "" {
		if err := os.Rename(keys.Staged, keys.Dir); err != nil {
			return fmt.Errorf("keys: %w", err)
		}
	}
	for _, name := range []string{DiskFile, UKIFile, PolicyFile, SignedPolicyFile, MeasurementsFile, SPDXFile, CycloneDXFile, VarsFile} {
		if err := os.Rename(filepath.Join(b.stage, name), filepath.Join(b.o.OutDir, name)); err != nil {
			return err
		}
	}
	return nil
}
