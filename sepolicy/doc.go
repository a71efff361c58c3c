// Package sepolicy builds a binary SELinux policy and its file_contexts from
// a Debian reference policy package (selinux-policy-default) plus osguard's
// own CIL modules, with Debian's SELinux compiler.
//
// On a Debian system the package's postinst runs semodule(8), which hands
// every module of /usr/share/selinux/NAME to libsemanage; libsemanage turns
// each .pp module into CIL with /usr/libexec/selinux/hll/pp, compiles all of
// them with libsepol's CIL compiler, splits the file contexts into
// file_contexts and homedir_template, and writes policy.NN into
// /etc/selinux/NAME/policy. An osguard node runs no maintainer scripts and
// has no writable policy store, so the build does the same work itself,
// reproducibly and without root:
//
//   - the tools are the suite's own: hll/pp (policycoreutils) and secilc
//     (secilc), with the libraries they link, unpacked from their .debs and
//     run through the suite's dynamic loader (ld-linux-x86-64.so.2
//     --library-path), so the compiler is the one the policy was made for
//     and nothing is installed on the build host;
//   - the modules are those the package lists in .modules, less the ones its
//     postinst disables by default (Disabled), plus osguard's modules;
//   - secilc -m (libsemanage allows redeclarations the same way) compiles
//     them for policy version 33, the highest Linux 6.12 loads;
//   - the file contexts whose lines name HOME_DIR, HOME_ROOT, USER or ROLE
//     go to the home directory template, as libsemanage's semanage_split_fc
//     does; osguard nodes have no user home directories, so genhomedircon is
//     not run and the few paths the node needs (/root) come from osguard's
//     module.
//
// secilc and hll/pp write the same bytes for the same input, so the same
// packages and modules give the same policy; Build runs in a private work
// directory and leaves nothing behind.
//
// osguard's module is CIL rather than refpolicy's .te/.if/.fc macro language
// because CIL is what the compiler reads: a .te module needs refpolicy's
// development headers, m4 and checkmodule to become the same CIL.
package sepolicy
