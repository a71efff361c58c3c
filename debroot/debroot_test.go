package debroot

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type entry struct {
	name, body, link string
	typ              byte
	mode             int64
}

func tarGz(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Linkname: e.link, Mode: mode, Size: int64(len(e.body))}
		if typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

// makeDeb writes a .deb as dpkg-deb lays it out: debian-binary,
// control.tar.gz, data.tar.gz.
func makeDeb(t *testing.T, dir, name, version, postinst string, data []entry) string {
	t.Helper()
	ctl := []entry{{name: "./control", body: fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: amd64\nMaintainer: Test <t@example.org>\nDescription: test\n", name, version)}}
	if postinst != "" {
		ctl = append(ctl, entry{name: "./postinst", body: postinst, mode: 0o755})
	}
	var deb bytes.Buffer
	deb.WriteString("!<arch>\n")
	member := func(n string, b []byte) {
		fmt.Fprintf(&deb, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", n, 0, 0, 0, "100644", len(b))
		deb.Write(b)
		if len(b)%2 == 1 {
			deb.WriteByte('\n')
		}
	}
	member("debian-binary", []byte("2.0\n"))
	member("control.tar.gz", tarGz(t, ctl))
	member("data.tar.gz", tarGz(t, data))
	p := filepath.Join(dir, name+"_"+version+"_amd64.deb")
	if err := os.WriteFile(p, deb.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func readTar(t *testing.T, b []byte) map[string]*tar.Header {
	t.Helper()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		h.PAXRecords = map[string]string{"body": string(body)}
		out[strings.TrimSuffix(h.Name, "/")] = h
	}
}

func fixtureDebs(t *testing.T) []string {
	dir := t.TempDir()
	return []string{
		makeDeb(t, dir, "base-passwd", "3.6.7", "", []entry{
			{name: "./usr/share/base-passwd/passwd.master", body: "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"},
			{name: "./usr/share/base-passwd/group.master", body: "root:x:0:\nshadow:x:42:\n"},
		}),
		makeDeb(t, dir, "base-files", "13.8", "", []entry{
			{name: "./bin", typ: tar.TypeSymlink, link: "usr/bin"},
			{name: "./usr/", typ: tar.TypeDir, mode: 0o755},
			{name: "./usr/bin/", typ: tar.TypeDir, mode: 0o755},
		}),
		makeDeb(t, dir, "mawk", "1.3.4", "#!/bin/sh\nupdate-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \\\n  --slave /usr/share/man/man1/awk.1.gz awk.1.gz /usr/share/man/man1/mawk.1.gz\n", []entry{
			{name: "./usr/bin/mawk", body: "mawk", mode: 0o755},
			{name: "./bin/legacy", body: "legacy", mode: 0o755},
			{name: "./bin/legacy-link", typ: tar.TypeLink, link: "./bin/legacy"},
		}),
		makeDeb(t, dir, "gawk", "5.2", "#!/bin/sh\nupdate-alternatives --install /usr/bin/awk awk /usr/bin/gawk 10\n", []entry{
			{name: "./usr/bin/gawk", body: "gawk", mode: 0o755},
		}),
		makeDeb(t, dir, "ca-certificates", "2025", "", []entry{
			{name: "./usr/share/ca-certificates/mozilla/B.crt", body: "-----B-----"},
			{name: "./usr/share/ca-certificates/mozilla/A.crt", body: "-----A-----\n"},
		}),
		makeDeb(t, dir, "svc", "1.0", "", []entry{
			{name: "./usr/lib/systemd/system/svc.service", body: "[Unit]\nDescription=x\n[Service]\nExecStart=/usr/bin/svc\n[Install]\nWantedBy=multi-user.target\nRequiredBy=other.target\n"},
		}),
	}
}

func TestWrite(t *testing.T) {
	debs := fixtureDebs(t)
	var out bytes.Buffer
	res, err := Write(&out, Options{Debs: debs, Enable: []string{"svc.service"}, Epoch: 86400 * 100,
		Files: map[string][]byte{"etc/extra.conf": []byte("x=1\n")}, Links: map[string]string{"usr/lib/osguard/runtime/runc": "/usr/bin/crun"}})
	if err != nil {
		t.Fatal(err)
	}
	got := readTar(t, out.Bytes())
	body := func(p string) string {
		if h := got[p]; h != nil {
			return h.PAXRecords["body"]
		}
		return "<missing>"
	}
	link := func(p string) string {
		if h := got[p]; h != nil && h.Typeflag == tar.TypeSymlink {
			return h.Linkname
		}
		return "<no link>"
	}
	for _, tc := range []struct{ what, got, want string }{
		{"passwd", body("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"},
		{"shadow", body("etc/shadow"), "root:*:100:0:99999:7:::\ndaemon:*:100:0:99999:7:::\n"},
		{"gshadow", body("etc/gshadow"), "root:*::\nshadow:*::\n"},
		{"awk link", link("usr/bin/awk"), "/etc/alternatives/awk"},
		{"awk alternative (highest priority)", link("etc/alternatives/awk"), "/usr/bin/gawk"},
		{"merged /usr", body("usr/bin/legacy"), "legacy"},
		{"ca bundle", body("etc/ssl/certs/ca-certificates.crt"), "-----A-----\n-----B-----\n"},
		{"enabled (WantedBy)", link("etc/systemd/system/multi-user.target.wants/svc.service"), "/usr/lib/systemd/system/svc.service"},
		{"enabled (RequiredBy)", link("etc/systemd/system/other.target.requires/svc.service"), "/usr/lib/systemd/system/svc.service"},
		{"extra file", body("etc/extra.conf"), "x=1\n"},
		{"extra link", link("usr/lib/osguard/runtime/runc"), "/usr/bin/crun"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %q, want %q", tc.what, tc.got, tc.want)
		}
	}
	if h := got["usr/bin/legacy-link"]; h == nil || h.Typeflag != tar.TypeLink || h.Linkname != "usr/bin/legacy" {
		t.Errorf("hard link not moved under /usr: %+v", h)
	}
	if h := got["bin"]; h != nil {
		t.Errorf("the top-level /bin link reached the root: %+v", h)
	}
	if !strings.Contains(body("var/lib/dpkg/status"), "Package: mawk\nStatus: install ok installed\nVersion: 1.3.4") {
		t.Errorf("dpkg status:\n%s", body("var/lib/dpkg/status"))
	}
	if len(res.Packages) != len(debs) || res.Alternatives["awk"] != "/usr/bin/gawk" {
		t.Errorf("result: %d packages, alternatives %v", len(res.Packages), res.Alternatives)
	}

	var again bytes.Buffer
	if _, err := Write(&again, Options{Debs: debs, Enable: []string{"svc.service"}, Epoch: 86400 * 100,
		Files: map[string][]byte{"etc/extra.conf": []byte("x=1\n")}, Links: map[string]string{"usr/lib/osguard/runtime/runc": "/usr/bin/crun"}}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), again.Bytes()) {
		t.Error("two writes of the same packages differ")
	}
}

func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	good := fixtureDebs(t)
	notDeb := filepath.Join(dir, "junk_1_amd64.deb")
	os.WriteFile(notDeb, []byte("not an ar archive"), 0o644)
	full, _ := os.ReadFile(good[2])
	noInstall := makeDeb(t, dir, "static", "1", "", []entry{{name: "./usr/lib/systemd/system/static.service", body: "[Service]\nExecStart=/x\n"}})
	truncated := filepath.Join(dir, "mawk-truncated.deb")
	os.WriteFile(truncated, full[:len(full)-40], 0o644)
	for _, tc := range []struct {
		name   string
		o      Options
		substr string
	}{
		{"not a deb", Options{Debs: []string{notDeb}}, "junk_1_amd64.deb: deb: not a Debian package"},
		{"truncated", Options{Debs: []string{truncated}}, "mawk-truncated.deb"},
		{"missing unit", Options{Debs: good, Enable: []string{"nope.service"}}, "unit nope.service to enable"},
		{"unit without [Install]", Options{Debs: []string{noInstall}, Enable: []string{"static.service"}}, "static.service has no [Install]"},
		{"missing file", Options{Debs: []string{filepath.Join(dir, "absent.deb")}}, "absent.deb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Write(io.Discard, tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.substr) {
				t.Errorf("err = %v, want it to name %q", err, tc.substr)
			}
		})
	}
}

func FuzzParseControl(f *testing.F) {
	f.Add([]byte("Package: a\nVersion: 1\nDescription: x\n more\n"))
	f.Add([]byte("Package: \nVersion:\n"))
	f.Add([]byte(":\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseControl(b)
		if err == nil && (p.Name == "" || p.Version == "") {
			t.Fatalf("accepted a control file without name or version: %+v", p)
		}
	})
}

func FuzzParseAlternatives(f *testing.F) {
	f.Add([]byte("update-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \\\n --slave a b c\n"))
	f.Add([]byte("update-alternatives --quiet --install /usr/bin/x x /usr/bin/y 99999999999999999999\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, a := range parseAlternatives(b) {
			if !strings.HasPrefix(a.link, "/") || !strings.HasPrefix(a.path, "/") {
				t.Fatalf("relative alternative %+v", a)
			}
		}
	})
}
