package sbom

import (
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
)

// WriteCycloneDX writes the SBOM as a CycloneDX 1.5 JSON document. The
// image is the metadata component; files and packages are its components.
func WriteCycloneDX(w io.Writer, im Image) error {
	im.sorted()
	bom := cdx.NewBOM()
	bom.SerialNumber = "urn:uuid:" + uuidFrom("cyclonedx", im.Name, im.RootHash)
	bom.Version = 1
	bom.Metadata = &cdx.Metadata{
		Timestamp: im.Created.UTC().Format(time.RFC3339),
		Tools: &cdx.ToolsChoice{Components: &[]cdx.Component{{
			Type: cdx.ComponentTypeApplication, Name: "osguard", Version: im.ToolVersion,
		}}},
		Component: &cdx.Component{
			BOMRef:     "image",
			Type:       cdx.ComponentTypeOS,
			Name:       im.Name,
			Version:    im.Version,
			Properties: &[]cdx.Property{{Name: "osguard:usr:roothash", Value: im.RootHash}},
		},
	}
	comps := make([]cdx.Component, 0, len(im.Files)+len(im.Packages))
	refs := make([]string, 0, cap(comps))
	for i, f := range im.Files {
		ref := "file-" + strconv.Itoa(i)
		comps = append(comps, cdx.Component{
			BOMRef: ref,
			Type:   cdx.ComponentTypeFile,
			Name:   f.Path,
			Hashes: &[]cdx.Hash{
				{Algorithm: cdx.HashAlgoSHA1, Value: hex.EncodeToString(f.SHA1[:])},
				{Algorithm: cdx.HashAlgoSHA256, Value: hex.EncodeToString(f.SHA256[:])},
			},
			Properties: &[]cdx.Property{{Name: "osguard:file:size", Value: strconv.FormatInt(f.Size, 10)}},
		})
		refs = append(refs, ref)
	}
	for i, p := range im.Packages {
		ref := "pkg-" + strconv.Itoa(i) + "-" + p.Name
		c := cdx.Component{
			BOMRef:     ref,
			Type:       cdx.ComponentTypeLibrary,
			Name:       p.Name,
			Version:    p.Version,
			PackageURL: p.purl(),
		}
		if p.Maintainer != "" {
			c.Publisher = p.Maintainer
		}
		comps = append(comps, c)
		refs = append(refs, ref)
	}
	bom.Components = &comps
	bom.Dependencies = &[]cdx.Dependency{{Ref: "image", Dependencies: &refs}}
	enc := cdx.NewBOMEncoder(w, cdx.BOMFileFormatJSON)
	enc.SetPretty(true)
	if err := enc.EncodeVersion(bom, cdx.SpecVersion1_5); err != nil {
		return fmt.Errorf("sbom: write CycloneDX: %w", err)
	}
	return nil
}
