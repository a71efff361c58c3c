package ipe

// Facts describe the file an operation is about, as the kernel sees it.
type Facts struct {
	// BootVerified: the file is on the initramfs (the superblock the kernel
	// unpacked at boot).
	BootVerified bool
	// DMVerityRootHash is the root hash of the dm-verity device the file
	// is on (Alg is the verity hash name, e.g. "sha256"); nil when the file
	// is not on dm-verity.
	DMVerityRootHash *Digest
	// DMVeritySignature: the dm-verity device's root hash signature was
	// verified by the kernel.
	DMVeritySignature bool
	// FSVerityDigest is the file's fs-verity digest; nil without fs-verity.
	FSVerityDigest *Digest
	// FSVeritySignature: the file has a verified fs-verity builtin signature.
	FSVeritySignature bool
}

// Decision is the outcome of an evaluation.
type Decision struct {
	Allow bool
	// Line of the rule or DEFAULT that decided.
	Line int
	// Rule is the canonical text of that rule, as the kernel's audit
	// record prints it ("DEFAULT op=EXECUTE action=DENY").
	Rule string
}

// Holds reports whether the property is true for the facts, as
// evaluate_property in security/ipe/eval.c decides it.
func (pr Property) Holds(f Facts) bool {
	switch pr.Kind {
	case PropBootVerifiedFalse:
		return !f.BootVerified
	case PropBootVerifiedTrue:
		return f.BootVerified
	case PropDMVerityRootHash:
		return f.DMVerityRootHash != nil && pr.Digest.Equal(*f.DMVerityRootHash)
	case PropDMVeritySignatureFalse:
		return !f.DMVeritySignature
	case PropDMVeritySignatureTrue:
		return f.DMVeritySignature
	case PropFSVerityDigest:
		return f.FSVerityDigest != nil && pr.Digest.Equal(*f.FSVerityDigest)
	case PropFSVeritySignatureFalse:
		return !f.FSVeritySignature
	case PropFSVeritySignatureTrue:
		return f.FSVeritySignature
	}
	return false
}

// Evaluate decides op for a file with the given facts: the first rule of op
// whose properties all hold (a rule without properties always matches),
// else the op's DEFAULT, else the global DEFAULT.
func (p *Policy) Evaluate(op Op, f Facts) Decision {
rules:
	for _, r := range p.Rules {
		if r.Op != op {
			continue
		}
		for _, pr := range r.Props {
			if !pr.Holds(f) {
				continue rules
			}
		}
		return Decision{Allow: r.Action == ActionAllow, Line: r.Line, Rule: r.String()}
	}
	if d := p.OpDefaults[op]; d != nil {
		return Decision{Allow: d.Action == ActionAllow, Line: d.Line, Rule: "DEFAULT op=" + op.String() + " action=" + d.Action.String()}
	}
	if d := p.Default; d != nil {
		return Decision{Allow: d.Action == ActionAllow, Line: d.Line, Rule: "DEFAULT action=" + d.Action.String()}
	}
	// A parsed policy always has a default; the kernel allows (with a
	// warning) when it finds none.
	return Decision{Allow: true}
}
