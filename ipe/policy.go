package ipe

import (
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
)

// Op is an IPE operation, the first token of a rule (op=EXECUTE).
// The order is the kernel's enum ipe_op_type.
type Op int

// Operations of Linux 6.12.
const (
	OpExecute Op = iota
	OpFirmware
	OpKmodule
	OpKexecImage
	OpKexecInitramfs
	OpPolicy
	OpX509Cert
	numOps
)

var opNames = [numOps]string{"EXECUTE", "FIRMWARE", "KMODULE", "KEXEC_IMAGE", "KEXEC_INITRAMFS", "POLICY", "X509_CERT"}

// Ops lists every operation in the kernel's order.
func Ops() []Op {
	ops := make([]Op, numOps)
	for i := range ops {
		ops[i] = Op(i)
	}
	return ops
}

func (o Op) String() string {
	if o >= 0 && o < numOps {
		return opNames[o]
	}
	return fmt.Sprintf("Op(%d)", int(o))
}

// ParseOp returns the op named s (the text after "op=", case-sensitive).
func ParseOp(s string) (Op, error) {
	for i, n := range opNames {
		if n == s {
			return Op(i), nil
		}
	}
	return 0, fmt.Errorf("ipe: unknown operation %q (want one of %s)", s, strings.Join(opNames[:], ", "))
}

// Action is the decision a rule or default makes.
type Action int

// Actions. ActionNone is the zero value, "no action set".
const (
	ActionNone Action = iota
	ActionAllow
	ActionDeny
)

func (a Action) String() string {
	switch a {
	case ActionAllow:
		return "ALLOW"
	case ActionDeny:
		return "DENY"
	}
	return "NONE"
}

// PropKind is the type of a rule property.
type PropKind int

// Properties of Linux 6.12, in the order of the kernel's property_tokens.
const (
	PropBootVerifiedFalse PropKind = iota
	PropBootVerifiedTrue
	PropDMVerityRootHash
	PropDMVeritySignatureFalse
	PropDMVeritySignatureTrue
	PropFSVerityDigest
	PropFSVeritySignatureFalse
	PropFSVeritySignatureTrue
)

// Digest is a hash as IPE writes it: ALG:HEX.
type Digest struct {
	Alg   string
	Value []byte
}

// String returns ALG:HEX with lowercase hex, the canonical form.
func (d Digest) String() string { return d.Alg + ":" + hex.EncodeToString(d.Value) }

// Equal reports whether the kernel's ipe_digest_eval would match d and e:
// same algorithm name (case-sensitive) and the same bytes.
func (d Digest) Equal(e Digest) bool {
	return d.Alg == e.Alg && string(d.Value) == string(e.Value)
}

// Property is one condition of a rule.
type Property struct {
	Kind PropKind
	// Digest is set for PropDMVerityRootHash and PropFSVerityDigest.
	Digest Digest
}

// String returns the property's canonical text, e.g. "boot_verified=TRUE".
func (p Property) String() string {
	switch p.Kind {
	case PropBootVerifiedFalse:
		return "boot_verified=FALSE"
	case PropBootVerifiedTrue:
		return "boot_verified=TRUE"
	case PropDMVerityRootHash:
		return "dmverity_roothash=" + p.Digest.String()
	case PropDMVeritySignatureFalse:
		return "dmverity_signature=FALSE"
	case PropDMVeritySignatureTrue:
		return "dmverity_signature=TRUE"
	case PropFSVerityDigest:
		return "fsverity_digest=" + p.Digest.String()
	case PropFSVeritySignatureFalse:
		return "fsverity_signature=FALSE"
	case PropFSVeritySignatureTrue:
		return "fsverity_signature=TRUE"
	}
	return fmt.Sprintf("PropKind(%d)", int(p.Kind))
}

// Rule is a non-default rule: "op=OP PROPS... action=ACTION".
type Rule struct {
	Op     Op
	Props  []Property
	Action Action
	// Line is the 1-based line of the rule in the parsed text (0 if built in code).
	Line int
}

// String returns the rule's canonical text.
func (r Rule) String() string {
	var b strings.Builder
	b.WriteString("op=" + r.Op.String())
	for _, p := range r.Props {
		b.WriteString(" " + p.String())
	}
	b.WriteString(" action=" + r.Action.String())
	return b.String()
}

// Default is a DEFAULT rule, global or for one op.
type Default struct {
	Action Action
	Line   int
}

// Version is the policy_version triple; each part is a u16 as in the kernel.
type Version struct{ Major, Minor, Rev uint16 }

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Rev) }

// Uint64 packs the version as the kernel's ver_to_u64 does, for ordering.
func (v Version) Uint64() uint64 {
	return uint64(v.Major)<<32 | uint64(v.Minor)<<16 | uint64(v.Rev)
}

// Policy is a parsed IPE policy.
type Policy struct {
	Name       string
	Version    Version
	HeaderLine int
	// Default is the global DEFAULT; nil when the policy has none.
	Default *Default
	// OpDefaults holds the per-op DEFAULT rules.
	OpDefaults map[Op]*Default
	// Rules in text order. Only the relative order of rules of one op matters.
	Rules []Rule
}

// RulesFor returns the rules of op in evaluation order.
func (p *Policy) RulesFor(op Op) []Rule {
	var out []Rule
	for _, r := range p.Rules {
		if r.Op == op {
			out = append(out, r)
		}
	}
	return out
}

// sortedOps returns the ops with a DEFAULT, in kernel order.
func (p *Policy) sortedOps() []Op {
	ops := make([]Op, 0, len(p.OpDefaults))
	for op := range p.OpDefaults {
		ops = append(ops, op)
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i] < ops[j] })
	return ops
}
