package image

import "testing"

// FuzzParseConfig: any input gives a config or an error, never a panic, and
// an accepted config passes its own validation again.
func FuzzParseConfig(f *testing.F) {
	f.Add(DefaultYAML())
	f.Add([]byte("apiVersion: osguard.dev/v1alpha1\nkind: Image\nspec:\n  layout: {espSize: 64M, usrSize: 1Gi, slots: 1, varSize: \"0\"}\n"))
	f.Add([]byte("spec:\n  selinux: {mode: permissive, policy: p, fileContexts: f}\n  ipe: {allowRootHashes: [\"sha256:00\"]}\n"))
	f.Add([]byte("kind: Image\n---\nkind: Image\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data, "")
		if err != nil {
			return
		}
		if err := c.validate(nil); err != nil {
			t.Fatalf("accepted config fails validation: %v", err)
		}
	})
}
