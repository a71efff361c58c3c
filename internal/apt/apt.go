// Package apt resolves and downloads Debian packages through Debian's own apt,
// run against the project's private apt state (scripts/fetch-debian keeps it
// in .cache/debian/SUITE/apt): the host's sources and its dpkg database are
// never read or written.
//
// apt is used rather than a resolver of our own because it is the judge of
// what a Debian suite is: it checks the Release file's signature against the
// archive keyring, the Packages indices against the Release hashes, and each
// downloaded .deb against the index, and its solver is the one every Debian
// user relies on. An empty dpkg status (Dir::State::status=/dev/null) makes it
// resolve the whole closure, as for a new system.
package apt

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// State is a private apt state directory for one suite, as scripts/fetch-debian
// lays it out: parts/SUITE.sources (mirror and keyring), lists/ (the signed
// indices, refreshed by 'make deps') and cache/.
type State struct {
	Dir   string // .cache/debian/SUITE/apt
	Suite string
}

// Package is one resolved binary package.
type Package struct {
	Name, Version, Arch string
}

// String is name=version, apt's way of naming an exact version.
func (p Package) String() string { return p.Name + "=" + p.Version }

// FileName is the name apt gives the downloaded .deb (an epoch's colon is
// escaped as %3a).
func (p Package) FileName() string {
	return p.Name + "_" + strings.ReplaceAll(p.Version, ":", "%3a") + "_" + p.Arch + ".deb"
}

// Check reports whether the state holds package indices.
func (s *State) Check() error {
	lists, _ := filepath.Glob(filepath.Join(s.Dir, "lists", "*_Packages*"))
	if len(lists) == 0 {
		return fmt.Errorf("apt: no %s package lists in %s (run 'make deps', which runs scripts/fetch-debian)", s.Suite, s.Dir)
	}
	return nil
}

func (s *State) options() []string {
	return []string{
		"-o", "Dir::Etc::SourceList=/dev/null",
		"-o", "Dir::Etc::SourceParts=" + filepath.Join(s.Dir, "parts"),
		"-o", "Dir::State::Lists=" + filepath.Join(s.Dir, "lists"),
		"-o", "Dir::State::status=/dev/null",
		"-o", "Dir::Cache=" + filepath.Join(s.Dir, "cache"),
		"-o", "Dir::Etc::Preferences=/dev/null",
		"-o", "Dir::Etc::PreferencesParts=/dev/null",
		"-o", "APT::Sandbox::User=root",
		"-o", "Debug::NoLocking=1",
		"-o", "APT::Architecture=amd64",
		"-o", "APT::Architectures=amd64",
	}
}

func (s *State) run(dir string, args ...string) ([]byte, error) {
	cmd := exec.Command("apt-get", append(s.options(), args...)...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// apt's messages must be in English for the errors below to be parsed.
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.Output()
	if err != nil {
		return out, &Error{Args: args, Stderr: stderr.String(), Err: err}
	}
	return out, nil
}

// Error is a failed apt-get run.
type Error struct {
	Args   []string
	Stderr string
	Err    error
}

func (e *Error) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	var lines []string
	for _, l := range strings.Split(msg, "\n") {
		if strings.HasPrefix(l, "E: ") || strings.HasPrefix(l, "Err:") || strings.Contains(l, "Hash Sum mismatch") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	if len(lines) > 0 {
		msg = strings.Join(lines, "; ")
	}
	if msg == "" {
		msg = e.Err.Error()
	}
	return "apt-get " + e.Args[0] + ": " + msg
}

func (e *Error) Unwrap() error { return e.Err }

var (
	instLine   = regexp.MustCompile(`^Inst (\S+) \((\S+) .*\[(\S+)\]\)`)
	notFound   = regexp.MustCompile(`Unable to locate package (\S+)|Package '?([^' ]+)'? has no installation candidate|Version '([^']+)' for '([^']+)' was not found`)
	unmetDepRE = regexp.MustCompile(`(?m)^ (\S+) : Depends: (.*)$`)
)

// Resolve returns the closure of the named packages plus every Essential
// package of the suite (what dpkg and a Debian system assume present), as
// apt's solver picks it without Recommends, sorted by name.
func (s *State) Resolve(names []string) ([]Package, error) {
	return s.resolve(names, true)
}

// ResolveDeps returns the closure of the named packages alone, without the
// Essential set: what a build host needs to run the named programs.
func (s *State) ResolveDeps(names []string) ([]Package, error) {
	return s.resolve(names, false)
}

func (s *State) resolve(names []string, essential bool) ([]Package, error) {
	if err := s.Check(); err != nil {
		return nil, err
	}
	for _, n := range names {
		if !validName(n) {
			return nil, fmt.Errorf("apt: %q is not a Debian package name", n)
		}
	}
	args := []string{"install", "--simulate", "--no-install-recommends", "-q"}
	if essential {
		args = append(args, "?essential")
	}
	args = append(args, names...)
	out, err := s.run("", args...)
	if err != nil {
		var ae *Error
		if errors.As(err, &ae) {
			if m := notFound.FindStringSubmatch(ae.Stderr); m != nil {
				for _, g := range m[1:] {
					if g != "" {
						return nil, fmt.Errorf("apt: package %s is not in Debian %s", g, s.Suite)
					}
				}
			}
			if m := unmetDepRE.FindStringSubmatch(ae.Stderr); m != nil {
				return nil, fmt.Errorf("apt: package %s cannot be installed in Debian %s: it depends on %s", m[1], s.Suite, m[2])
			}
		}
		return nil, err
	}
	var pkgs []Package
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := instLine.FindStringSubmatch(sc.Text()); m != nil {
			pkgs = append(pkgs, Package{Name: m[1], Version: m[2], Arch: m[3]})
		}
	}
	if len(pkgs) == 0 {
		return nil, fmt.Errorf("apt: resolving %s gave no packages", strings.Join(names, " "))
	}
	sort.Slice(pkgs, func(i, j int) bool { return pkgs[i].Name < pkgs[j].Name })
	return pkgs, nil
}

// validName is Debian policy 5.6.7: lowercase letters, digits, + - . and at
// least two characters, starting with an alphanumeric.
func validName(n string) bool {
	return regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`).MatchString(n)
}

// Download makes sure dir holds the .deb of every package and returns their
// paths in the order of pkgs. Packages already there are kept; the others are
// downloaded by apt, which checks each against the signed index, into a
// temporary directory and moved in only when the whole download succeeded,
// so that a failure leaves no partial file in dir.
func (s *State) Download(pkgs []Package, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("apt: %w", err)
	}
	paths := make([]string, len(pkgs))
	var missing []Package
	for i, p := range pkgs {
		paths[i] = filepath.Join(dir, p.FileName())
		if _, err := os.Stat(paths[i]); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return paths, nil
	}
	tmp, err := os.MkdirTemp(dir, ".download-")
	if err != nil {
		return nil, fmt.Errorf("apt: %w", err)
	}
	defer os.RemoveAll(tmp)
	args := []string{"download", "-q"}
	for _, p := range missing {
		args = append(args, p.String())
	}
	if _, err := s.run(tmp, args...); err != nil {
		return nil, fmt.Errorf("apt: downloading %d packages: %w", len(missing), err)
	}
	for _, p := range missing {
		if _, err := os.Stat(filepath.Join(tmp, p.FileName())); err != nil {
			return nil, fmt.Errorf("apt: package %s %s: apt reported success but left no %s", p.Name, p.Version, p.FileName())
		}
	}
	for _, p := range missing {
		if err := os.Rename(filepath.Join(tmp, p.FileName()), filepath.Join(dir, p.FileName())); err != nil {
			return nil, fmt.Errorf("apt: %w", err)
		}
	}
	return paths, nil
}
