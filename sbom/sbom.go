// Package sbom writes the software bill of materials of an osguard image in
// two formats: SPDX 2.3 JSON (github.com/spdx/tools-golang) and CycloneDX 1.5
// JSON (github.com/CycloneDX/cyclonedx-go). Both list every regular file of
// /usr with its digests, and the Debian packages of the rootfs when it has a
// dpkg status file.
//
// The output is reproducible: files and packages are sorted, the creation
// time is the build's timestamp, and the document namespace and serial
// number are derived from the image's /usr root hash.
package sbom

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// File is one regular file of the image.
type File struct {
	Path   string // absolute path on the node, e.g. /usr/bin/busybox
	Size   int64
	SHA1   [20]byte // SPDX 2.3 requires SHA1 for every file
	SHA256 [32]byte
}

// Package is a Debian binary package installed in the rootfs.
type Package struct {
	Name, Version, Architecture, Source, Homepage, Maintainer string
}

// Image describes what the SBOM documents.
type Image struct {
	Name        string // image name, e.g. osguard-default
	Version     string // image version
	RootHash    string // /usr dm-verity root hash, hex
	Created     time.Time
	ToolVersion string
	Files       []File
	Packages    []Package
}

func (im *Image) sorted() {
	sort.Slice(im.Files, func(i, j int) bool { return im.Files[i].Path < im.Files[j].Path })
	sort.Slice(im.Packages, func(i, j int) bool {
		a, b := im.Packages[i], im.Packages[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.Architecture < b.Architecture
	})
}

// uuidFrom derives a version-5-shaped UUID string from the given parts.
func uuidFrom(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	x := hex.EncodeToString(h[:16])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

// ParseDpkgStatus reads a dpkg status file (/var/lib/dpkg/status) and
// returns the installed packages.
func ParseDpkgStatus(r io.Reader) ([]Package, error) {
	var pkgs []Package
	var cur Package
	var status string
	flush := func() {
		if cur.Name != "" && strings.HasSuffix(status, " installed") {
			pkgs = append(pkgs, cur)
		}
		cur, status = Package{}, ""
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	line := 0
	for sc.Scan() {
		line++
		t := sc.Text()
		if t == "" {
			flush()
			continue
		}
		if t[0] == ' ' || t[0] == '\t' {
			continue // continuation of a multi-line field
		}
		k, v, ok := strings.Cut(t, ":")
		if !ok {
			return nil, fmt.Errorf("sbom: dpkg status line %d: no field name in %q", line, t)
		}
		v = strings.TrimSpace(v)
		switch k {
		case "Package":
			cur.Name = v
		case "Version":
			cur.Version = v
		case "Architecture":
			cur.Architecture = v
		case "Source":
			// "Source: busybox (1:1.35.0-4)": the name, without the version.
			if f := strings.Fields(v); len(f) > 0 {
				cur.Source = f[0]
			}
		case "Homepage":
			cur.Homepage = v
		case "Maintainer":
			cur.Maintainer = v
		case "Status":
			status = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("sbom: read dpkg status: %w", err)
	}
	flush()
	return pkgs, nil
}

// purl returns the package URL of a Debian package.
func (p Package) purl() string {
	s := "pkg:deb/debian/" + p.Name + "@" + strings.ReplaceAll(p.Version, ":", "%3A")
	if p.Architecture != "" {
		s += "?arch=" + p.Architecture
	}
	return s
}
