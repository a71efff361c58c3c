package selinux

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"regexp/syntax"
	"slices"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"
)

// None is the context string that marks a spec as "leave unlabelled".
const None = "<<none>>"

// Type is a file-type qualifier of a spec, as the S_IFMT bits of st_mode.
// Zero means the spec applies to every type.
type Type uint32

// File-type qualifiers; the values are the Linux S_IFMT bits.
const (
	TypeAny     Type = 0
	TypeFifo    Type = 0o010000
	TypeChar    Type = 0o020000
	TypeDir     Type = 0o040000
	TypeBlock   Type = 0o060000
	TypeRegular Type = 0o100000
	TypeSymlink Type = 0o120000
	TypeSocket  Type = 0o140000
)

var typeFlags = map[string]Type{
	"--": TypeRegular, "-d": TypeDir, "-c": TypeChar, "-b": TypeBlock,
	"-p": TypeFifo, "-l": TypeSymlink, "-s": TypeSocket,
}

// TypeOf maps a Go file mode to the spec type it matches. fs.ModeIrregular
// stands for "type unknown" (libselinux's mode 0) and matches specs of
// every type.
func TypeOf(mode fs.FileMode) Type {
	switch {
	case mode&fs.ModeIrregular != 0:
		return TypeAny
	case mode.IsDir():
		return TypeDir
	case mode&fs.ModeSymlink != 0:
		return TypeSymlink
	case mode&fs.ModeNamedPipe != 0:
		return TypeFifo
	case mode&fs.ModeSocket != 0:
		return TypeSocket
	case mode&fs.ModeDevice != 0 && mode&fs.ModeCharDevice != 0:
		return TypeChar
	case mode&fs.ModeDevice != 0:
		return TypeBlock
	}
	return TypeRegular
}

// Spec is one line of a file_contexts file.
type Spec struct {
	Regex   string // as written, without anchors
	Type    Type
	Context string // a context or None
	File    string // where it came from, for messages
	Line    int

	re      *regexp.Regexp // nil until first used when loaded lazily; never set for simple specs
	once    sync.Once
	reErr   error
	hasMeta bool
	lit     string // literal prefix every match starts with
	// simple, unless notSimple, says that the regex is lit followed by
	// nothing, "(/.*)?" or ".*", which matches compares as strings: seven
	// in ten of refpolicy's specs, and no regex to compile or run for them.
	simple simpleForm
	// needs are strings that every match contains (see requiredLiterals):
	// a key that lacks one is refused without running the regex.
	needs []string
}

// simpleForm is the shape of a regex that is a literal plus a fixed tail.
type simpleForm uint8

const (
	notSimple    simpleForm = iota
	simpleExact             // LIT
	simpleTree              // LIT(/.*)?: LIT and everything below it
	simplePrefix            // LIT.*: everything that starts with LIT
)

type alias struct{ src, dst string }

// Contexts is a loaded set of file_contexts specs plus path aliases.
// It is safe for concurrent lookups.
type Contexts struct {
	specs    []*Spec  // sorted: regex specs first, then exact ones
	subs     []alias  // FILE.subs, later lines first
	distSubs []alias  // FILE.subs_dist, later lines first
	Files    []string // the files read, in order

	// Lookups only try the specs that can match the key: byLit["/usr/lib/"]
	// lists, as ascending indices into specs, the specs whose literal
	// prefix is exactly "/usr/lib/", and litLens holds the lengths such
	// prefixes have, ascending. A lookup takes the lists of the key's
	// prefixes of those lengths and merges them, latest spec first. This
	// plays the part of libselinux's stem arrays and changes no result,
	// since a spec can only match keys that start with its literal prefix;
	// each spec is in one list, so memory stays linear in the specs.
	byLit   map[string][]int
	litLens []int
}

// LoadFileContexts reads path and, when they exist, path.homedirs and
// path.local, plus the alias files path.subs_dist and path.subs, as
// selabel_open(3) does for SELABEL_OPT_PATH. Every regex is compiled, so a
// bad one is an error here.
func LoadFileContexts(path string) (*Contexts, error) {
	return load(path, false)
}

// LoadFileContextsLazy is LoadFileContexts for files checked before (the
// copy a build put in an initramfs): each regex is compiled the first
// time a lookup gets to it. Compiling all of refpolicy's 5,700 takes
// seconds on a slow machine, and labelling a few hundred files reaches
// few of them. A regex that fails to compile then matches nothing, and
// Err reports it.
func LoadFileContextsLazy(path string) (*Contexts, error) {
	return load(path, true)
}

func load(path string, lazy bool) (*Contexts, error) {
	c := &Contexts{}
	var all []*Spec
	for i, suffix := range []string{"", ".homedirs", ".local"} {
		f, err := os.Open(path + suffix)
		if err != nil {
			if i > 0 && errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("selinux: %w", err)
		}
		specs, err := parseSpecs(f, path+suffix, lazy)
		f.Close()
		if err != nil {
			return nil, err
		}
		all = append(all, specs...)
		c.Files = append(c.Files, path+suffix)
	}
	var err error
	if c.distSubs, err = loadSubs(path + ".subs_dist"); err != nil {
		return nil, err
	}
	if c.subs, err = loadSubs(path + ".subs"); err != nil {
		return nil, err
	}
	c.setSpecs(all)
	return c, nil
}

// Err returns the first regex of a lazily loaded Contexts that failed to
// compile in a lookup so far.
func (c *Contexts) Err() error {
	for _, s := range c.specs {
		if s.reErr != nil {
			return fmt.Errorf("selinux: %s:%d: %w", s.File, s.Line, s.reErr)
		}
	}
	return nil
}

// New builds Contexts from already parsed specs and no aliases; later specs
// take precedence within each group as in LoadFileContexts.
func New(specs []*Spec) *Contexts {
	c := &Contexts{}
	c.setSpecs(specs)
	return c
}

// setSpecs moves exact (meta-free) specs behind the regex ones, keeping file
// order inside each group (label_file.h sort_specs).
func (c *Contexts) setSpecs(all []*Spec) {
	c.specs = make([]*Spec, 0, len(all))
	for _, s := range all {
		if s.hasMeta {
			c.specs = append(c.specs, s)
		}
	}
	for _, s := range all {
		if !s.hasMeta {
			c.specs = append(c.specs, s)
		}
	}
	c.byLit = map[string][]int{}
	c.litLens = nil
	for i, s := range c.specs {
		if _, ok := c.byLit[s.lit]; !ok {
			c.litLens = append(c.litLens, len(s.lit))
		}
		c.byLit[s.lit] = append(c.byLit[s.lit], i)
	}
	sort.Ints(c.litLens)
	c.litLens = slices.Compact(c.litLens)
}

// Specs returns the specs in lookup order (the last one is tried first).
func (c *Contexts) Specs() []*Spec { return c.specs }

// ParseSpecs reads file_contexts lines from r; name is used in errors.
func ParseSpecs(r io.Reader, name string) ([]*Spec, error) {
	return parseSpecs(r, name, false)
}

func parseSpecs(r io.Reader, name string, lazy bool) ([]*Spec, error) {
	var specs []*Spec
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		s := &Spec{Regex: fields[0], File: name, Line: line}
		switch len(fields) {
		case 2:
			s.Context = fields[1]
		case 3:
			t, ok := typeFlags[fields[1]]
			if !ok {
				return nil, fmt.Errorf("selinux: %s:%d: invalid file type %q", name, line, fields[1])
			}
			s.Type, s.Context = t, fields[2]
		default:
			return nil, fmt.Errorf("selinux: %s:%d: want 2 or 3 fields, got %d", name, line, len(fields))
		}
		s.hasMeta = hasMetaChars(s.Regex)
		s.lit = literalPrefix(s.Regex)
		if lit, form := simpleRegex(s.Regex); form != notSimple {
			s.lit, s.simple = lit, form
		}
		if !lazy {
			if err := s.compile(); err != nil {
				return nil, fmt.Errorf("selinux: %s:%d: %w", name, line, err)
			}
		}
		specs = append(specs, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("selinux: read %s: %w", name, err)
	}
	return specs, nil
}

// compile compiles the regex of a spec that needs one; a simple spec's
// regex is valid by construction (see simpleRegex).
func (s *Spec) compile() error {
	if s.simple != notSimple {
		return nil
	}
	s.once.Do(func() {
		// PCRE2_DOTALL makes "." match newlines; PCRE's "$" also matches
		// before a final newline, which "\n?$" reproduces under RE2.
		expr := `(?s)^(?:` + s.Regex + `)\n?$`
		re, err := regexp.Compile(expr)
		if err != nil {
			s.reErr = fmt.Errorf("regex %q: %w", s.Regex, err)
			return
		}
		s.re, s.needs = re, requiredLiterals(expr)
	})
	return s.reErr
}

// requiredLiterals returns the literal strings of two bytes or more that
// every match of expr, a regex that compiles, must contain: the literals
// that its top-level concatenation is made of, looking into groups and
// into "x+" (which matches x at least once). In refpolicy most of the
// specs that reach the regex engine are like "/usr/(.*/)?lib64(/.*)?",
// which needs "lib64": most keys lack it, and a search for it is much
// cheaper than the regex.
func requiredLiterals(expr string) []string {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil
	}
	var out []string
	var walk func(*syntax.Regexp)
	walk = func(re *syntax.Regexp) {
		switch re.Op {
		case syntax.OpLiteral:
			if re.Flags&syntax.FoldCase == 0 && len(re.Rune) >= 2 {
				out = append(out, string(re.Rune))
			}
		case syntax.OpConcat:
			for _, sub := range re.Sub {
				walk(sub)
			}
		case syntax.OpCapture, syntax.OpPlus:
			walk(re.Sub[0])
		}
	}
	walk(re)
	return out
}

// matches reports whether the spec's regex matches key, compiling it first
// when it was loaded lazily. A simple spec is matched as the regex
// (?s)^(?:R)\n?$ would match it: "." matches a newline, and a key may end
// in one newline more than the regex says.
func (s *Spec) matches(key string) bool {
	switch s.simple {
	case simpleExact:
		rest, ok := strings.CutPrefix(key, s.lit)
		return ok && (rest == "" || rest == "\n")
	case simpleTree:
		rest, ok := strings.CutPrefix(key, s.lit)
		return ok && (rest == "" || rest == "\n" || rest[0] == '/')
	case simplePrefix:
		return strings.HasPrefix(key, s.lit)
	}
	if s.compile() != nil {
		return false
	}
	for _, n := range s.needs {
		if !strings.Contains(key, n) {
			return false
		}
	}
	return s.re.MatchString(key)
}

// simpleRegex splits re into a literal and one of the tails of
// simpleForm. The literal may only hold printable ASCII other than the
// regex syntax characters, and punctuation escaped with a backslash (which
// Go's regexp, like PCRE, reads as the character itself), so that the
// regex is always valid and the literal is what it matches; anything else
// is notSimple and goes to the regex engine.
func simpleRegex(re string) (string, simpleForm) {
	var b strings.Builder
	i := 0
	for ; i < len(re); i++ {
		c := re[i]
		if c == '\\' {
			if i+1 == len(re) || !isASCIIPunct(re[i+1]) {
				return "", notSimple
			}
			i++
			b.WriteByte(re[i])
			continue
		}
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`.^$?*+|[](){}`, c) >= 0 {
			break
		}
		b.WriteByte(c)
	}
	switch re[i:] {
	case "":
		return b.String(), simpleExact
	case "(/.*)?":
		return b.String(), simpleTree
	case ".*":
		return b.String(), simplePrefix
	}
	return "", notSimple
}

func isASCIIPunct(c byte) bool {
	return c > ' ' && c < 0x7f && !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9')
}

// literalPrefix returns a prefix every string the regex matches starts with:
// its leading literal characters (backslash-escaped punctuation included),
// less one made optional or repeatable by a quantifier after it. A regex
// with an alternation outside any group gets none. The prefix may be
// shorter than the longest one, which only makes lookups try more specs.
func literalPrefix(re string) string {
	depth, inClass := 0, false
	for i := 0; i < len(re); i++ {
		switch c := re[i]; {
		case c == '\\':
			i++
		case inClass:
			if c == ']' {
				inClass = false
			}
		case c == '[':
			inClass = true
		case c == '(':
			depth++
		case c == ')':
			depth--
		case c == '|' && depth == 0:
			return ""
		}
	}
	var b strings.Builder
	for i := 0; i < len(re); {
		c := re[i]
		var lit string
		next := i + 1
		switch {
		case c == '\\':
			if i+1 >= len(re) {
				return b.String()
			}
			n := re[i+1]
			if n < utf8.RuneSelf && (n >= 'a' && n <= 'z' || n >= 'A' && n <= 'Z' || n >= '0' && n <= '9') {
				return b.String() // a class (\d, \w) or back reference
			}
			lit, next = re[i+1:i+2], i+2
			if n >= utf8.RuneSelf {
				_, size := utf8.DecodeRuneInString(re[i+1:])
				lit, next = re[i+1:i+1+size], i+1+size
			}
		case strings.IndexByte(".^$[()|?*+{}", c) >= 0:
			return b.String()
		default:
			_, size := utf8.DecodeRuneInString(re[i:])
			lit, next = re[i:i+size], i+size
		}
		if next < len(re) && strings.IndexByte("?*+{", re[next]) >= 0 {
			return b.String()
		}
		b.WriteString(lit)
		i = next
	}
	return b.String()
}

// hasMetaChars mirrors spec_hasMetaChars: a backslash hides the next byte.
func hasMetaChars(re string) bool {
	for i := 0; i < len(re); i++ {
		switch re[i] {
		case '.', '^', '$', '?', '*', '+', '|', '[', '(', '{':
			return true
		case '\\':
			i++
		}
	}
	return false
}

func loadSubs(path string) ([]alias, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("selinux: %w", err)
	}
	defer f.Close()
	var list []alias
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		// selabel_subs_init prepends, so later lines are tried first.
		list = append([]alias{{fields[0], fields[1]}}, list...)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("selinux: read %s: %w", path, err)
	}
	return list, nil
}

func applySubs(list []alias, key string) (string, bool) {
	for _, a := range list {
		if !strings.HasPrefix(key, a.src) {
			continue
		}
		rest := key[len(a.src):]
		if rest != "" && rest[0] != '/' {
			continue
		}
		if rest != "" && a.dst == "/" {
			rest = rest[1:]
		}
		return a.dst + rest, true
	}
	return "", false
}

// Canonical returns the key a lookup of path really matches: duplicate
// slashes removed and aliases applied.
func (c *Contexts) Canonical(path string) string {
	for strings.Contains(path, "//") {
		path = strings.ReplaceAll(path, "//", "/")
	}
	if k, ok := applySubs(c.subs, path); ok {
		if k2, ok := applySubs(c.distSubs, k); ok {
			k = k2
		}
		return k
	} else if k, ok := applySubs(c.distSubs, path); ok {
		return k
	}
	return path
}

// Match returns the spec selabel_lookup picks for path and type, or nil.
// A spec with context None is returned as is.
func (c *Contexts) Match(path string, t Type) *Spec {
	key := c.Canonical(path)
	var stack [16][]int
	lists := stack[:0]
	for _, n := range c.litLens {
		if n > len(key) {
			break
		}
		if l, ok := c.byLit[key[:n]]; ok {
			lists = append(lists, l)
		}
	}
	// Walk the lists from their ends as one merged list, highest index
	// (latest spec) first.
	for {
		best := -1
		for j, l := range lists {
			if len(l) > 0 && (best < 0 || l[len(l)-1] > lists[best][len(lists[best])-1]) {
				best = j
			}
		}
		if best < 0 {
			return nil
		}
		l := lists[best]
		s := c.specs[l[len(l)-1]]
		lists[best] = l[:len(l)-1]
		if t != TypeAny && s.Type != TypeAny && s.Type != t {
			continue
		}
		if s.matches(key) {
			return s
		}
	}
}

// Lookup returns the context for an absolute path of the given type, and
// false when no spec matches or the matching spec says <<none>>.
func (c *Contexts) Lookup(path string, mode fs.FileMode) (string, bool) {
	s := c.Match(path, TypeOf(mode))
	if s == nil || s.Context == None {
		return "", false
	}
	return s.Context, true
}
