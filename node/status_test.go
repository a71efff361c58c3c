package node

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/osguard/osguard/image"
)

// fakeNode lays out the kernel files the checks read, for the cases that a
// VM test cannot produce cheaply (the attack suite covers the real kernel).
func fakeNode(t *testing.T, enforce, active, pcr string) (Options, string) {
	t.Helper()
	d := t.TempDir()
	must := func(p, v string) {
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	o := Options{Securityfs: filepath.Join(d, "security"), Selinuxfs: filepath.Join(d, "selinux"), TPM: filepath.Join(d, "tpm0")}
	must(filepath.Join(o.Securityfs, "ipe/enforce"), enforce+"\n")
	must(filepath.Join(o.Securityfs, "ipe/policies/osguard-default/active"), active+"\n")
	must(filepath.Join(o.Securityfs, "ipe/policies/osguard-default/version"), "1.0.0\n")
	if pcr != "" {
		must(filepath.Join(o.TPM, "pcr-sha256/11"), strings.ToUpper(pcr)+"\n")
	}
	var m image.Measurements
	m.IPE.PolicyName, m.IPE.PolicyVersion, m.IPE.Mode = "osguard-default", "1.0.0", "enforce"
	m.PCR11.SHA256 = strings.Repeat("ab", 32)
	m.SELinux = "off"
	b, _ := json.Marshal(m)
	mp := filepath.Join(d, "measurements.json")
	must(mp, string(b))
	o.Measurements = mp
	return o, d
}

func check(s *Status, name string) Check {
	for _, c := range s.Checks {
		if c.Name == name {
			return c
		}
	}
	return Check{Name: name, Detail: "missing"}
}

func TestChecks(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		enforce, active, pcr string
		ipeOK, pcrOK         bool
	}{
		{"intact", "1", "1", strings.Repeat("ab", 32), true, true},
		{"audit mode", "0", "1", strings.Repeat("ab", 32), false, true},
		{"no active policy", "1", "0", strings.Repeat("ab", 32), false, true},
		{"pcr differs", "1", "1", strings.Repeat("cd", 32), true, false},
		{"no tpm", "1", "1", "", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, _ := fakeNode(t, tc.enforce, tc.active, tc.pcr)
			s := &Status{}
			if err := s.loadMeasurements(o.Measurements); err != nil {
				t.Fatal(err)
			}
			add := func(name string, ok bool, format string, args ...any) {
				s.Checks = append(s.Checks, Check{Name: name, OK: ok})
			}
			s.checkIPE(o.Securityfs, add)
			s.checkSELinux(o.Selinuxfs, add)
			s.checkPCR11(o.TPM, add)
			if c := check(s, "ipe"); c.OK != tc.ipeOK {
				t.Errorf("ipe check ok=%v, want %v", c.OK, tc.ipeOK)
			}
			if c := check(s, "pcr11"); c.OK != tc.pcrOK {
				t.Errorf("pcr11 check ok=%v, want %v", c.OK, tc.pcrOK)
			}
			if c := check(s, "selinux"); !c.OK {
				t.Errorf("selinux off on a node without selinuxfs was judged broken")
			}
			if s.OK() != (tc.ipeOK && tc.pcrOK) {
				t.Errorf("OK() = %v", s.OK())
			}
		})
	}
}

func TestBadMeasurements(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.json")
	os.WriteFile(p, []byte("{not json"), 0o644)
	s := Collect(Options{Measurements: p, Efivars: t.TempDir(), Securityfs: t.TempDir(), Selinuxfs: t.TempDir(), TPM: t.TempDir(), NoMount: true})
	if s.OK() {
		t.Fatal("a node with unreadable measurements was judged intact")
	}
	if c := check(s, "measurements"); c.OK || !strings.Contains(c.Detail, "m.json") {
		t.Errorf("measurements check = %+v", c)
	}
}

func TestDebugConsole(t *testing.T) {
	for _, tc := range []struct {
		name    string
		procs   map[string][3]string // pid -> comm, tty_nr, uid
		built   bool
		wantOK  bool
		wantHas string
	}{
		{name: "production", procs: map[string][3]string{"1": {"systemd", "0", "0"}, "40": {"agetty", "1088", "0"}}, wantOK: true},
		{name: "root sh on ttyS0", procs: map[string][3]string{"77": {"sh", "1088", "0"}}, wantOK: false, wantHas: "sh (pid 77) on ttyS0"},
		{name: "root bash on /dev/console", procs: map[string][3]string{"9": {"bash", "1281", "0"}}, wantOK: false, wantHas: "on console"},
		{name: "user shell on ttyS0", procs: map[string][3]string{"77": {"sh", "1088", "1000"}}, wantOK: true},
		{name: "root shell on a pty", procs: map[string][3]string{"77": {"sh", "34816", "0"}}, wantOK: true},
		{name: "built with a debug console", built: true, wantOK: false, wantHas: "built with a debug console"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, d := fakeNode(t, "1", "1", "")
			o.Proc = filepath.Join(d, "proc")
			for pid, p := range tc.procs {
				dir := filepath.Join(o.Proc, pid)
				os.MkdirAll(dir, 0o755)
				os.WriteFile(filepath.Join(dir, "stat"), []byte(pid+" ("+p[0]+") S 1 "+pid+" "+pid+" "+p[1]+" 0 0\n"), 0o644)
				os.WriteFile(filepath.Join(dir, "status"), []byte("Name:\t"+p[0]+"\nUid:\t"+p[2]+"\t"+p[2]+"\t"+p[2]+"\t"+p[2]+"\n"), 0o644)
			}
			if tc.built {
				var m image.Measurements
				b, _ := os.ReadFile(o.Measurements)
				json.Unmarshal(b, &m)
				m.DebugConsole = true
				b, _ = json.Marshal(m)
				os.WriteFile(o.Measurements, b, 0o644)
			}
			o.NoMount = true
			c := check(Collect(o), "debug-console")
			if c.OK != tc.wantOK || !strings.Contains(c.Detail, tc.wantHas) {
				t.Errorf("debug-console = %+v, want ok=%v with %q", c, tc.wantOK, tc.wantHas)
			}
		})
	}
}
