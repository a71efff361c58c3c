// Package ipe reads, writes, evaluates, generates and signs policies for the
// Linux Integrity Policy Enforcement LSM (IPE) as found in Linux 6.12.
//
// The parser accepts exactly what the 6.12 kernel accepts when a policy is
// written to /sys/kernel/security/ipe/new_policy, and rejects the rest with
// the errno the kernel returns (EBADMSG, EINVAL, ERANGE, or EACCES and
// ENAMETOOLONG for names securityfs cannot hold). The rules follow
// Documentation/admin-guide/LSM/ipe.rst and security/ipe/policy_parser.c,
// digest.c and policy.c of Linux 6.12; they were reimplemented from reading
// those files, and the tests check every verdict against the kernel itself
// under QEMU:
//
//   - the text ends at the first NUL byte; an empty text is rejected;
//   - lines end at every LF or CR; everything from '#' on is a comment;
//     trailing white space (isspace of the kernel's ctype, which includes
//     VT, FF and the byte 0xA0) is removed; empty lines are skipped;
//   - tokens are separated by spaces and tabs only; tokens are case-sensitive;
//   - the first line is the header "policy_name=NAME policy_version=A.B.C",
//     in that order, where A, B and C are u16 (kstrtou16: decimal digits with
//     an optional leading '+');
//   - every other line is a rule: an optional leading DEFAULT, then op=OP,
//     then properties, and the action last; a DEFAULT rule has no
//     properties, and there is at most one global DEFAULT and one DEFAULT per
//     op; without a global DEFAULT every op needs its own;
//   - digests are ALG:HEX where ALG is any string (the kernel does not check
//     it; it only has to equal the algorithm of the file's digest to match)
//     and HEX is an even number of hex digits of either case.
//
// Evaluation follows security/ipe/eval.c: the first rule of the op whose
// properties all hold decides, then the op's DEFAULT, then the global one.
// Decision.Rule is the text the kernel's audit record prints as rule=
// (which quotes the digest algorithm and writes the hex in uppercase).
//
// Versions: the kernel refuses to activate a policy whose version is lower
// than the active one's (EINVAL), and refuses an update through
// policies/NAME/update unless the version is strictly higher (ESTALE);
// CanActivate and CanUpdate say the same. A second policy with a loaded
// policy's name is refused with EEXIST, which no single-file check can see.
//
// The tests (kernel_test.go) boot the Debian trixie 6.12 kernel under OVMF
// with a test db certificate and compare, in one boot, the kernel's verdict
// and errno for every policy of testdata/corpus with Parse, the kernel's
// exec decisions and audited rules with Evaluate, and the version rules.
//
// Signing produces what new_policy accepts: an attached PKCS#7 SignedData
// (DER, sha256, no authenticated attributes), made by internal/p7.
//
// # Security
//
// Parse is meant for hostile input: it never panics (fuzzed) and allocates
// no more than a small multiple of the input.
package ipe
