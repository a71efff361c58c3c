// Package selinux reads SELinux file_contexts specifications and looks up
// the label for a path the way libselinux's selabel_lookup(3) does with the
// "file" backend, so that an image can be labelled at build time without
// SELinux on the build host.
//
// The behaviour follows libselinux 3.4 (Debian 12), src/label_file.c and
// label_file.h:
//
//   - FILE, then FILE.homedirs and FILE.local (when present) are read, in
//     that order; FILE.subs_dist and FILE.subs hold path aliases.
//   - Each line is "REGEX [TYPE] CONTEXT"; TYPE is one of -- -d -l -c -b -p -s;
//     CONTEXT "<<none>>" means "do not label".
//   - Specs whose regex has no meta characters (. ^ $ ? * + | [ ( { outside a
//     backslash escape) are moved behind all others, each group keeping file
//     order. A lookup scans from the last spec to the first and the first
//     spec whose type and regex match wins.
//   - The key has duplicate slashes removed, then the first matching .subs
//     alias (later lines first) and after that the first matching .subs_dist
//     alias are applied.
//   - Regexes are anchored at both ends and matched with "." matching
//     newlines, as libselinux compiles them for PCRE2 (PCRE2_DOTALL).
//   - Like libselinux's "stems", lookups only try specs whose literal
//     prefix is a prefix of the key. A regex that is a literal followed by
//     nothing, "(/.*)?" or ".*" (seven in ten of refpolicy's) is matched by
//     comparing strings, and the regex engine only runs on keys that hold
//     the literals every match of the regex holds. None of this changes a
//     result; it makes a lookup of a Debian /usr path in refpolicy about
//     1.3 µs instead of 21 µs, and loading the file 3 times faster.
//
// matchpathcon(8) additionally resolves symlinks of existing paths on the
// host with realpath(3) before the lookup; this package does not, since the
// paths it labels live in an image, not on the host.
//
// Compiled file_contexts.bin files are not read; the text files they are
// compiled from carry the same specs. The precedence is that of libselinux
// 3.4 (Debian 12); later releases reorganised how specs are stored and
// were not checked.
//
// # Security
//
// The file_contexts files are trusted configuration, but malformed lines
// give an error naming the file and line, never a panic. Go's RE2 engine
// runs in linear time; PCRE-only constructs (back references, look-around)
// are rejected with an error, and refpolicy uses none.
package selinux
