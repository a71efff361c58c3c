package bootinit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/verity"
)

// TestVerityTableFromVeritysetup builds the table from a superblock that
// veritysetup wrote and checks each field against `veritysetup dump`.
func TestVerityTableFromVeritysetup(t *testing.T) {
	vs := testutil.NeedTool(t, "veritysetup")[0]
	dir := t.TempDir()
	data, hash := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
	os.WriteFile(data, make([]byte, 1<<20), 0o644)
	salt := strings.Repeat("5a", 32)
	out, err := exec.Command(vs, "format", "--salt="+salt, data, hash).CombinedOutput()
	if err != nil {
		t.Fatalf("veritysetup format: %v\n%s", err, out)
	}
	root := regexp.MustCompile(`Root hash:\s+([0-9a-f]+)`).FindSubmatch(out)
	f, err := os.Open(hash)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sb, err := verity.ReadSuperblock(f, 0)
	if err != nil {
		t.Fatal(err)
	}
	var rh []byte
	fmt.Sscanf(string(root[1]), "%x", &rh)
	for _, c := range []struct{ mode, opts string }{
		{"eio", "2 root_hash_sig_key_desc k"},
		{"restart", "3 root_hash_sig_key_desc k restart_on_corruption"},
		{"panic", "3 root_hash_sig_key_desc k panic_on_corruption"},
	} {
		tgt, err := VerityTable(sb, "254:1", "254:2", rh, "k", c.mode)
		if err != nil {
			t.Fatal(err)
		}
		// 1 MiB of 4 KiB blocks: 256 data blocks, 2048 sectors; the tree
		// starts after the superblock's hash block.
		want := fmt.Sprintf("0 2048 verity 1 254:1 254:2 4096 4096 256 1 sha256 %s %s %s", root[1], salt, c.opts)
		if tgt.String() != want {
			t.Errorf("%s:\n got %s\nwant %s", c.mode, tgt, want)
		}
	}
}

// A hostile superblock's block count must not wrap the table's length.
func TestVerityTableOverflow(t *testing.T) {
	sb := &verity.Superblock{Version: 1, HashType: 1, Algorithm: "sha256", DataBlockSize: 4096, HashBlockSize: 4096,
		DataBlocks: 1<<52 + 1}
	if tgt, err := VerityTable(sb, "254:1", "254:2", make([]byte, 32), "k", "eio"); err == nil {
		t.Fatalf("accepted %d blocks: %s", sb.DataBlocks, tgt)
	}
}
