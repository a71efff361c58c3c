package ipe

import (
	"bytes"
	"fmt"
	"strings"
	"syscall"
)

// ParseError says why the kernel would refuse a policy. Line is 1-based;
// CR LF counts as one line end, a lone CR or LF as one each.
type ParseError struct {
	Line   int
	Reason string
	// Errno is what write(2) to new_policy fails with for this policy.
	Errno syscall.Errno
}

func (e *ParseError) Error() string { return fmt.Sprintf("ipe: line %d: %s", e.Line, e.Reason) }

// nameMax is NAME_MAX: the policy name becomes a securityfs directory, and
// simple_lookup refuses longer names with ENAMETOOLONG.
const nameMax = 255

// kernelSpace reports isspace() of the kernel's lib/ctype.c, which (unlike
// C's "C" locale) counts 0xA0 as space. Only used for trailing space.
func kernelSpace(c byte) bool {
	return c == ' ' || (c >= '\t' && c <= '\r') || c == 0xA0
}

type parser struct {
	p    *Policy
	line int
}

func (ps *parser) fail(errno syscall.Errno, format string, args ...any) error {
	return &ParseError{Line: ps.line, Reason: fmt.Sprintf(format, args...), Errno: errno}
}

// Parse parses a policy text with the acceptance of Linux 6.12. On error it
// returns a *ParseError.
func Parse(text []byte) (*Policy, error) {
	ps := &parser{line: 1}
	if len(text) == 0 {
		return nil, ps.fail(syscall.EBADMSG, "empty policy")
	}
	// The kernel copies the text into a C string: a NUL ends it.
	if i := bytes.IndexByte(text, 0); i >= 0 {
		text = text[:i]
	}
	ps.p = &Policy{OpDefaults: map[Op]*Default{}}
	header := false
	lastLine := 1
	for start := 0; start <= len(text); {
		end := bytes.IndexAny(text[start:], "\n\r")
		var seg []byte
		next := len(text) + 1
		if end < 0 {
			seg = text[start:]
		} else {
			seg = text[start : start+end]
			next = start + end + 1
			// CR LF is one line end for humans; the kernel sees an empty
			// line between them and skips it.
			if text[start+end] == '\r' && next < len(text) && text[next] == '\n' {
				next++
			}
		}
		if i := bytes.IndexByte(seg, '#'); i >= 0 {
			seg = seg[:i]
		}
		for len(seg) > 0 && kernelSpace(seg[len(seg)-1]) {
			seg = seg[:len(seg)-1]
		}
		if len(seg) > 0 {
			lastLine = ps.line
			toks := tokens(seg)
			var err error
			if !header {
				err = ps.header(toks)
				header = true
			} else {
				err = ps.rule(toks)
			}
			if err != nil {
				return nil, err
			}
		}
		if end >= 0 {
			ps.line++
		}
		start = next
	}
	ps.line = lastLine
	if !header {
		return nil, ps.fail(syscall.EBADMSG, "no policy header: the first line must be \"policy_name=NAME policy_version=MAJOR.MINOR.REVISION\"")
	}
	if ps.p.Default == nil {
		var missing []string
		for _, op := range Ops() {
			if ps.p.OpDefaults[op] == nil {
				missing = append(missing, op.String())
			}
		}
		if len(missing) > 0 {
			ps.line = ps.p.HeaderLine
			return nil, ps.fail(syscall.EBADMSG, "no global \"DEFAULT action=...\" and no DEFAULT for op=%s", strings.Join(missing, ", op="))
		}
	}
	// The policy becomes the securityfs directory policies/NAME.
	ps.line = ps.p.HeaderLine
	switch n := ps.p.Name; {
	case n == "." || n == "..":
		return nil, ps.fail(syscall.EACCES, "policy_name %q cannot be a securityfs directory name", n)
	case strings.Contains(n, "/"):
		return nil, ps.fail(syscall.EACCES, "policy_name %q contains '/', which a securityfs directory name cannot", n)
	case len(n) > nameMax:
		return nil, ps.fail(syscall.ENAMETOOLONG, "policy_name is %d bytes long, the limit is %d", len(n), nameMax)
	}
	return ps.p, nil
}

// tokens splits a line at spaces and tabs, as strsep(" \t") does, dropping
// the empty tokens the kernel skips.
func tokens(line []byte) []string {
	return strings.FieldsFunc(string(line), func(r rune) bool { return r == ' ' || r == '\t' })
}

// matchArg is lib/parser.c match_token for a "prefix%s" pattern: the prefix
// and at least one more byte.
func matchArg(tok, prefix string) (string, bool) {
	if len(tok) > len(prefix) && strings.HasPrefix(tok, prefix) {
		return tok[len(prefix):], true
	}
	return "", false
}

func (ps *parser) header(toks []string) error {
	ps.p.HeaderLine = ps.line
	const want = "the header must be \"policy_name=NAME policy_version=MAJOR.MINOR.REVISION\""
	for i, t := range toks {
		switch i {
		case 0:
			name, ok := matchArg(t, "policy_name=")
			if !ok {
				return ps.fail(syscall.EBADMSG, "%s; first token is %q", want, t)
			}
			ps.p.Name = name
		case 1:
			v, ok := matchArg(t, "policy_version=")
			if !ok {
				return ps.fail(syscall.EBADMSG, "%s; second token is %q", want, t)
			}
			ver, err := ps.version(v)
			if err != nil {
				return err
			}
			ps.p.Version = ver
		default:
			return ps.fail(syscall.EBADMSG, "%s; extra token %q", want, t)
		}
	}
	if len(toks) < 2 {
		return ps.fail(syscall.EBADMSG, "%s; policy_version is missing", want)
	}
	return nil
}

func (ps *parser) version(s string) (Version, error) {
	var parts [3]uint16
	n := 0
	for _, tok := range strings.Split(s, ".") {
		if n >= 3 {
			return Version{}, ps.fail(syscall.EBADMSG, "policy_version %q has more than three parts", s)
		}
		v, errno := kstrtou16(tok)
		switch errno {
		case syscall.ERANGE:
			return Version{}, ps.fail(errno, "policy_version %q: part %q is larger than 65535", s, tok)
		case syscall.EINVAL:
			return Version{}, ps.fail(errno, "policy_version %q: part %q is not a decimal number", s, tok)
		}
		parts[n] = v
		n++
	}
	if n != 3 {
		return Version{}, ps.fail(syscall.EBADMSG, "policy_version %q must have three parts, MAJOR.MINOR.REVISION", s)
	}
	return Version{parts[0], parts[1], parts[2]}, nil
}

// kstrtou16 mirrors the kernel's kstrtou16(s, 10): an optional '+', one or
// more decimal digits, nothing after them; ERANGE beats EINVAL when the
// digits before a bad byte already overflow.
func kstrtou16(s string) (uint16, syscall.Errno) {
	s = strings.TrimPrefix(s, "+")
	var v uint64
	overflow := false
	i := 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		d := uint64(s[i] - '0')
		if v > (^uint64(0)-d)/10 {
			overflow = true
		}
		v = v*10 + d
	}
	switch {
	case overflow:
		return 0, syscall.ERANGE
	case i == 0, i != len(s):
		return 0, syscall.EINVAL
	case v > 0xffff:
		return 0, syscall.ERANGE
	}
	return uint16(v), 0
}

var actionNames = map[string]Action{"action=ALLOW": ActionAllow, "action=DENY": ActionDeny}

func (ps *parser) rule(toks []string) error {
	isDefault, opSet := false, false
	var r Rule
	r.Line = ps.line
	for i, t := range toks[:len(toks)-1] {
		switch {
		case i == 0 && t == "DEFAULT":
			isDefault = true
		case !opSet:
			name, ok := strings.CutPrefix(t, "op=")
			op, err := ParseOp(name)
			if !ok || err != nil {
				if i == 0 {
					return ps.fail(syscall.EBADMSG, "a rule starts with DEFAULT or op=OP (one of %s), not %q", strings.Join(opNames[:], ", "), t)
				}
				return ps.fail(syscall.EBADMSG, "expected op=OP (one of %s) after DEFAULT, got %q", strings.Join(opNames[:], ", "), t)
			}
			r.Op, opSet = op, true
		default:
			prop, err := ps.property(t)
			if err != nil {
				return err
			}
			r.Props = append(r.Props, prop)
		}
	}
	last := toks[len(toks)-1]
	action, ok := actionNames[last]
	if !ok {
		return ps.fail(syscall.EBADMSG, "the last token must be action=ALLOW or action=DENY, not %q", last)
	}
	r.Action = action
	switch {
	case isDefault && len(r.Props) > 0:
		return ps.fail(syscall.EBADMSG, "a DEFAULT rule takes no properties (%s)", r.Props[0])
	case isDefault && !opSet:
		if d := ps.p.Default; d != nil {
			return ps.fail(syscall.EBADMSG, "second global DEFAULT; the first is on line %d", d.Line)
		}
		ps.p.Default = &Default{Action: action, Line: ps.line}
	case isDefault:
		if d := ps.p.OpDefaults[r.Op]; d != nil {
			return ps.fail(syscall.EBADMSG, "second DEFAULT for op=%s; the first is on line %d", r.Op, d.Line)
		}
		ps.p.OpDefaults[r.Op] = &Default{Action: action, Line: ps.line}
	case !opSet:
		return ps.fail(syscall.EBADMSG, "rule %q has no op=OP", strings.Join(toks, " "))
	default:
		ps.p.Rules = append(ps.p.Rules, r)
	}
	return nil
}

var simpleProps = map[string]PropKind{
	"boot_verified=FALSE":      PropBootVerifiedFalse,
	"boot_verified=TRUE":       PropBootVerifiedTrue,
	"dmverity_signature=FALSE": PropDMVeritySignatureFalse,
	"dmverity_signature=TRUE":  PropDMVeritySignatureTrue,
	"fsverity_signature=FALSE": PropFSVeritySignatureFalse,
	"fsverity_signature=TRUE":  PropFSVeritySignatureTrue,
}

func (ps *parser) property(t string) (Property, error) {
	if k, ok := simpleProps[t]; ok {
		return Property{Kind: k}, nil
	}
	kind, arg := PropDMVerityRootHash, ""
	ok := false
	if arg, ok = matchArg(t, "dmverity_roothash="); !ok {
		kind = PropFSVerityDigest
		arg, ok = matchArg(t, "fsverity_digest=")
	}
	if !ok {
		return Property{}, ps.fail(syscall.EBADMSG, "unknown property %q (want boot_verified=, dmverity_roothash=, dmverity_signature=, fsverity_digest= or fsverity_signature=, with TRUE/FALSE or ALG:HEX, before the action)", t)
	}
	d, errno, reason := parseDigest(arg)
	if errno != 0 {
		return Property{}, ps.fail(errno, "%s: %s", t, reason)
	}
	return Property{Kind: kind, Digest: d}, nil
}

// parseDigest mirrors ipe_digest_parse: ALG is everything before the first
// ':', HEX the rest; the kernel decodes (len+1)/2 bytes, so an odd length
// fails on the terminating NUL.
func parseDigest(s string) (Digest, syscall.Errno, string) {
	alg, h, ok := strings.Cut(s, ":")
	if !ok {
		return Digest{}, syscall.EBADMSG, "a digest must be ALG:HEX, e.g. sha256:<64 hex digits>"
	}
	if len(h)%2 != 0 {
		return Digest{}, syscall.EINVAL, fmt.Sprintf("odd number of hex digits (%d)", len(h))
	}
	v := make([]byte, len(h)/2)
	for i := range v {
		hi, ok1 := hexVal(h[2*i])
		lo, ok2 := hexVal(h[2*i+1])
		if !ok1 || !ok2 {
			return Digest{}, syscall.EINVAL, fmt.Sprintf("%q is not hex", h)
		}
		v[i] = hi<<4 | lo
	}
	return Digest{Alg: alg, Value: v}, 0, ""
}

func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// ParseDigest parses ALG:HEX as a policy property value would be parsed.
func ParseDigest(s string) (Digest, error) {
	d, errno, reason := parseDigest(s)
	if errno != 0 {
		return Digest{}, fmt.Errorf("ipe: digest %q: %s", s, reason)
	}
	return d, nil
}
