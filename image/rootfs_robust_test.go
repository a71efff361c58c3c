package image

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A whiteout names an entry of its own directory: ".wh..." (which named the
// parent, so that "usr/bin/.wh..." deleted all of /usr) is refused.
func TestOCIWhiteoutOfParentRefused(t *testing.T) {
	for _, wh := range []string{"usr/bin/.wh...", "usr/bin/.wh..", "usr/bin/.wh."} {
		layout := t.TempDir()
		base := makeTar(t, false, []tarEntry{
			{name: "usr/bin/tool", body: "v1", mode: 0o755},
		})
		top := makeTar(t, false, []tarEntry{{name: wh, mode: 0o644}})
		man := map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
			"layers": []map[string]any{
				{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": writeBlob(t, layout, base), "size": len(base)},
				{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": writeBlob(t, layout, top), "size": len(top)},
			}}
		mb, _ := json.Marshal(man)
		idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []map[string]any{{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": writeBlob(t, layout, mb), "size": len(mb)}}})
		os.WriteFile(filepath.Join(layout, "index.json"), idx, 0o644)
		os.WriteFile(filepath.Join(layout, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
		root, err := readRootfs(layout, t.TempDir())
		if err == nil {
			root.Close()
			t.Errorf("%s: accepted", wh)
		} else if !strings.Contains(err.Error(), "whiteout") {
			t.Errorf("%s: %v", wh, err)
		}
	}
}

// index.json is bounded like the other JSON files of the layout.
func TestOCIIndexTooLarge(t *testing.T) {
	layout := t.TempDir()
	os.WriteFile(filepath.Join(layout, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	big := `{"manifests":[],"x":"` + strings.Repeat("a", maxOCIJSON) + `"}`
	os.WriteFile(filepath.Join(layout, "index.json"), []byte(big), 0o644)
	if _, err := readRootfs(layout, t.TempDir()); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v", err)
	}
}
