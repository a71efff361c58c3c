package sbom

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	spdxjson "github.com/spdx/tools-golang/json"
	"github.com/spdx/tools-golang/spdx/v2/common"
	spdx "github.com/spdx/tools-golang/spdx/v2/v2_3"
)

// spdxID makes an SPDX element id from free text: letters, digits, '.' and '-'.
func spdxID(prefix string, n int, name string) common.ElementID {
	var b strings.Builder
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	return common.ElementID(prefix + "-" + strconv.Itoa(n) + "-" + b.String())
}

// WriteSPDX writes the SBOM as an SPDX 2.3 JSON document.
func WriteSPDX(w io.Writer, im Image) error {
	im.sorted()
	imgID := common.ElementID("Package-image")
	doc := &spdx.Document{
		SPDXVersion:       "SPDX-2.3",
		DataLicense:       "CC0-1.0",
		SPDXIdentifier:    "DOCUMENT",
		DocumentName:      im.Name,
		DocumentNamespace: "https://osguard.dev/spdx/" + im.Name + "-" + uuidFrom("spdx", im.Name, im.RootHash),
		CreationInfo: &spdx.CreationInfo{
			Creators: []common.Creator{{CreatorType: "Tool", Creator: "osguard-" + im.ToolVersion}},
			Created:  im.Created.UTC().Format(time.RFC3339),
		},
	}
	image := &spdx.Package{
		PackageName:               im.Name,
		PackageSPDXIdentifier:     imgID,
		PackageVersion:            im.Version,
		PackageDownloadLocation:   "NOASSERTION",
		FilesAnalyzed:             true,
		IsFilesAnalyzedTagPresent: true,
		PrimaryPackagePurpose:     "OPERATING_SYSTEM",
		PackageComment:            "/usr dm-verity root hash " + im.RootHash,
	}
	doc.Packages = append(doc.Packages, image)
	doc.Relationships = append(doc.Relationships, &spdx.Relationship{
		RefA: common.MakeDocElementID("", "DOCUMENT"), RefB: common.MakeDocElementID("", string(imgID)),
		Relationship: "DESCRIBES",
	})
	var verif []string
	for i, f := range im.Files {
		id := spdxID("File", i, f.Path)
		doc.Files = append(doc.Files, &spdx.File{
			FileName:           "." + f.Path,
			FileSPDXIdentifier: id,
			Checksums: []common.Checksum{
				{Algorithm: common.SHA1, Value: hex.EncodeToString(f.SHA1[:])},
				{Algorithm: common.SHA256, Value: hex.EncodeToString(f.SHA256[:])},
			},
			LicenseConcluded:   "NOASSERTION",
			LicenseInfoInFiles: []string{"NOASSERTION"},
			FileCopyrightText:  "NOASSERTION",
		})
		verif = append(verif, hex.EncodeToString(f.SHA1[:]))
		doc.Relationships = append(doc.Relationships, &spdx.Relationship{
			RefA: common.MakeDocElementID("", string(imgID)), RefB: common.MakeDocElementID("", string(id)),
			Relationship: "CONTAINS",
		})
	}
	image.PackageVerificationCode = &common.PackageVerificationCode{Value: verificationCode(verif)}
	for i, p := range im.Packages {
		id := spdxID("Package", i, p.Name)
		sp := &spdx.Package{
			PackageName:               p.Name,
			PackageSPDXIdentifier:     id,
			PackageVersion:            p.Version,
			PackageDownloadLocation:   "NOASSERTION",
			FilesAnalyzed:             false,
			IsFilesAnalyzedTagPresent: true,
			PackageHomePage:           p.Homepage,
			PackageExternalReferences: []*spdx.PackageExternalReference{{
				Category: "PACKAGE-MANAGER", RefType: "purl", Locator: p.purl(),
			}},
		}
		if p.Source != "" {
			sp.PackageSourceInfo = "built from Debian source package " + p.Source
		}
		if p.Maintainer != "" {
			sp.PackageSupplier = &common.Supplier{SupplierType: "Person", Supplier: p.Maintainer}
		}
		doc.Packages = append(doc.Packages, sp)
		doc.Relationships = append(doc.Relationships, &spdx.Relationship{
			RefA: common.MakeDocElementID("", string(imgID)), RefB: common.MakeDocElementID("", string(id)),
			Relationship: "CONTAINS",
		})
	}
	if err := spdxjson.Write(doc, w, spdxjson.Indent(" ")); err != nil {
		return fmt.Errorf("sbom: write SPDX: %w", err)
	}
	return nil
}

// verificationCode is SPDX's package verification code: the SHA1 of the
// sorted, concatenated lowercase SHA1 digests of the package's files.
func verificationCode(sha1s []string) string {
	sorted := append([]string(nil), sha1s...)
	sort.Strings(sorted)
	h := sha1.Sum([]byte(strings.Join(sorted, "")))
	return hex.EncodeToString(h[:])
}
