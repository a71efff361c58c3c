package bootinit

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSetConfigMode(t *testing.T) {
	for _, tc := range []struct {
		name, in, mode, want, written string
	}{
		{"enforce", "# c\nSELINUX=permissive\nSELINUXTYPE=default\n", "enforcing", "# c\nSELINUX=enforcing\nSELINUXTYPE=default\n", "enforcing"},
		{"off is disabled", "SELINUX=enforcing\nSELINUXTYPE=default\n", "off", "SELINUX=disabled\nSELINUXTYPE=default\n", "disabled"},
		{"no SELINUX line", "SELINUXTYPE=default\n", "permissive", "SELINUX=permissive\nSELINUXTYPE=default\n", "permissive"},
		{"no file", "", "enforcing", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "config")
			if tc.in != "" {
				os.WriteFile(p, []byte(tc.in), 0o644)
			}
			written, err := setConfigMode(p, tc.mode)
			if err != nil || written != tc.written {
				t.Fatalf("setConfigMode = %q, %v; want %q", written, err, tc.written)
			}
			got, _ := os.ReadFile(p)
			if string(got) != tc.want {
				t.Errorf("config = %q, want %q", got, tc.want)
			}
		})
	}
}
