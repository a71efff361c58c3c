// Package pgtest starts a throwaway PostgreSQL cluster on 127.0.0.1 for a
// test: Debian's postgresql package (initdb, pg_ctl), run as the user
// postgres when the test runs as root, since PostgreSQL refuses to run as
// root. The cluster lives in a temporary directory and is stopped and
// removed when the test ends.
package pgtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/osguard/osguard/internal/testutil"
)

// binDir finds Debian's PostgreSQL server binaries, newest version first.
func binDir() string {
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Sort(sort.Reverse(sort.StringSlice(m)))
	if len(m) == 0 {
		return ""
	}
	return filepath.Dir(m[0])
}

// Start starts a cluster and returns its DSN (database postgres, user
// osguard, trust authentication on 127.0.0.1 only).
func Start(t testing.TB) string {
	t.Helper()
	bin := binDir()
	if bin == "" {
		testutil.Missing(t, "PostgreSQL server (Debian package postgresql)")
	}
	dir, err := os.MkdirTemp("", "osguard-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var asUser []string
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			testutil.Missing(t, "user postgres (Debian package postgresql): %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		asUser = []string{"runuser", "-u", "postgres", "--"}
	}
	run := func(name string, args ...string) {
		t.Helper()
		argv := append(append(append([]string{}, asUser...), filepath.Join(bin, name)), args...)
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
	}
	data := filepath.Join(dir, "data")
	run("initdb", "-D", data, "-U", "osguard", "-A", "trust", "--no-sync", "-E", "UTF8")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	opts := fmt.Sprintf("-h 127.0.0.1 -p %d -k %s -c max_connections=200 -c shared_buffers=128MB", port, dir)
	run("pg_ctl", "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "start")
	t.Cleanup(func() {
		argv := append(append(append([]string{}, asUser...), filepath.Join(bin, "pg_ctl")), "-D", data, "-m", "immediate", "-w", "stop")
		exec.Command(argv[0], argv[1:]...).Run()
	})
	return fmt.Sprintf("postgres://osguard@127.0.0.1:%d/postgres?sslmode=disable", port)
}
