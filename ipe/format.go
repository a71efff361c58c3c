package ipe

import "strings"

// Format returns the canonical text of the policy: the header, the global
// DEFAULT, then for each op in the kernel's order its DEFAULT and its rules
// in evaluation order; single spaces, LF line ends, lowercase hex, no
// comments. Parse(p.Format()) is the same policy (apart from line numbers).
func (p *Policy) Format() []byte {
	var b strings.Builder
	b.WriteString("policy_name=" + p.Name + " policy_version=" + p.Version.String() + "\n")
	if p.Default != nil {
		b.WriteString("DEFAULT action=" + p.Default.Action.String() + "\n")
	}
	for _, op := range Ops() {
		if d := p.OpDefaults[op]; d != nil {
			b.WriteString("DEFAULT op=" + op.String() + " action=" + d.Action.String() + "\n")
		}
		for _, r := range p.RulesFor(op) {
			b.WriteString(r.String() + "\n")
		}
	}
	return []byte(b.String())
}
